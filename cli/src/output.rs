//! How results reach the terminal: the chosen format, colour, tables and the small
//! formatting helpers that every command shares.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use serde::Serialize;
use taskplane_api::{Task, TaskStatus};

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::CliError;

/// The output settings of this invocation.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub format: OutputFormat,
    pub no_headers: bool,
    pub color: bool,
    /// Progress bars and spinners go to stderr, and only when it is a terminal.
    pub progress: bool,
}

impl Ui {
    pub fn from_args(global: &GlobalArgs) -> Ui {
        let stdout_tty = std::io::stdout().is_terminal();
        // Like kubectl: the same output whether or not stdout is a terminal, so
        // `taskctl logs ID | grep` and `taskctl list | awk` see what the user sees. Scripts
        // ask for -o json, jsonl or id.
        let format = global.output.unwrap_or(OutputFormat::Table);
        let color = stdout_tty && !global.no_color && std::env::var_os("NO_COLOR").is_none();
        Ui {
            format,
            no_headers: global.no_headers,
            color,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// True for the machine formats (`json`, `jsonl` and `id`).
    pub fn json(&self) -> bool {
        matches!(
            self.format,
            OutputFormat::Json | OutputFormat::Jsonl | OutputFormat::Id
        )
    }

    /// True for `-o wide`.
    pub fn wide(&self) -> bool {
        self.format == OutputFormat::Wide
    }

    /// One document on stdout: pretty with `json`, one compact line with `jsonl`, its ids
    /// with `id`.
    pub fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        if self.format == OutputFormat::Id {
            let value = serde_json::to_value(value)
                .map_err(|e| CliError::Other(format!("cannot encode the output: {e}")))?;
            for id in ids_of(&value) {
                self.line(&id)?;
            }
            return Ok(());
        }
        let text = if self.format == OutputFormat::Jsonl {
            serde_json::to_string(value)
        } else {
            serde_json::to_string_pretty(value)
        }
        .map_err(|e| CliError::Other(format!("cannot encode the output: {e}")))?;
        self.line(&text)
    }

    /// A collection: the whole `document` with `json`, one compact line per item with `jsonl`.
    pub fn print_collection<D: Serialize + ?Sized, T: Serialize>(
        &self,
        document: &D,
        items: &[T],
    ) -> Result<(), CliError> {
        if self.format == OutputFormat::Json {
            return self.print_json(document);
        }
        if self.format == OutputFormat::Id {
            return self.print_json(items);
        }
        for item in items {
            self.json_line(item)?;
        }
        Ok(())
    }

    /// One compact JSON object on its own line (streams use this whatever the format).
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::Other(format!("cannot encode the output: {e}")))?;
        self.line(&text)
    }

    /// One line on stdout.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        Ok(())
    }

    /// A table in the house style: no borders, bold headers, like kubectl.
    pub fn table(&self, headers: &[&str]) -> Table {
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        if !headers.is_empty() && !self.no_headers {
            table.set_header(headers.iter().map(|h| {
                let cell = Cell::new(h);
                if self.color {
                    cell.add_attribute(Attribute::Bold)
                } else {
                    cell
                }
            }));
        }
        if self.color {
            table.enforce_styling();
        }
        table
    }

    pub fn print_table(&self, table: &Table) -> Result<(), CliError> {
        // Every line starts with the first column's one-space padding; drop it so the
        // table starts at the margin like kubectl's.
        for line in table.lines() {
            let line = line.strip_prefix(' ').unwrap_or(&line);
            self.line(line.trim_end())?;
        }
        Ok(())
    }

    /// A status, coloured by what it means.
    pub fn status_cell(&self, status: TaskStatus) -> Cell {
        let cell = Cell::new(status.as_str());
        if !self.color {
            return cell;
        }
        cell.fg(status_color(status))
    }
}

/// The ids in an output document: a task's `id`, an event's task, a queue's name, or those
/// of every element of an array or of a `tasks`/`queues`/`workers` list.
pub fn ids_of(value: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().flat_map(ids_of).collect(),
        Value::Object(map) => {
            for list in ["tasks", "queues", "workers"] {
                if let Some(Value::Array(items)) = map.get(list) {
                    return items.iter().flat_map(ids_of).collect();
                }
            }
            for key in ["id", "queue"] {
                if let Some(Value::String(id)) = map.get(key) {
                    return vec![id.clone()];
                }
            }
            match map.get("task") {
                Some(task) => ids_of(task),
                None => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

fn status_color(status: TaskStatus) -> Color {
    match status {
        TaskStatus::Succeeded => Color::Green,
        TaskStatus::Failed => Color::Red,
        TaskStatus::Cancelled => Color::DarkGrey,
        TaskStatus::Running => Color::Cyan,
        TaskStatus::Retrying => Color::Yellow,
        TaskStatus::Queued | TaskStatus::Scheduled => Color::Blue,
    }
}

/// `42s`, `5m`, `3h`, `2d`: how long ago, kubectl-style.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    if secs < 0 {
        return format!("in {}", short_secs(-secs));
    }
    short_secs(secs)
}

fn short_secs(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// How long a task ran (or has been running), `-` if it has not started.
pub fn run_time(task: &Task, now: DateTime<Utc>) -> String {
    let Some(started) = task.started_at else {
        return "-".to_owned();
    };
    let end = task.finished_at.unwrap_or(now);
    let ms = (end - started).num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        short_secs(ms / 1000)
    }
}

/// The first line of `text`, cut to `max` characters.
pub fn excerpt(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        first.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = Utc::now();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(119), "119s");
        assert_eq!(ago(600), "10m");
        assert_eq!(ago(3 * 3600), "3h");
        assert_eq!(ago(3 * 86400), "3d");
        assert_eq!(ago(-30), "in 30s");
    }

    #[test]
    fn ids_come_out_of_every_shape() {
        use serde_json::json;
        assert_eq!(ids_of(&json!({"id": "a", "kind": "noop"})), ["a"]);
        assert_eq!(ids_of(&json!([{"id": "a"}, {"id": "b"}])), ["a", "b"]);
        assert_eq!(
            ids_of(&json!({"tasks": [{"id": "a"}], "next_cursor": "x"})),
            ["a"]
        );
        assert_eq!(ids_of(&json!({"queues": [{"queue": "mail"}]})), ["mail"]);
        assert_eq!(ids_of(&json!({"seq": 1, "task": {"id": "t"}})), ["t"]);
        assert!(ids_of(&json!({"count": 3})).is_empty());
    }

    #[test]
    fn excerpts_cut_long_lines() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("first\nsecond", 10), "first");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcd…");
    }
}
