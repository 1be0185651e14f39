//! How results reach the terminal: the chosen format, colour, tables, progress bars and the
//! small formatting helpers that every command shares.
//!
//! Text that came from taskd (task data, names, messages) reaches people only through here,
//! with its control characters shown rather than obeyed ([`taskplane_api::text`]): every
//! [`Ui::line`], [`cell`], [`excerpt`], [`inline`] and [`error`]. Only the machine formats
//! (`-o json`, `-o jsonl`) and `taskctl logs --raw` write it exactly.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use indicatif::{MultiProgress, ProgressDrawTarget, TermLike};
use serde::Serialize;
use taskplane_api::text::{neutralize, neutralize_line};
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
        self.raw_line(&json_escaped(&text))
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
        self.raw_line(&json_escaped(&text))
    }

    /// One line (or a few) on stdout, for people: control characters are shown, not sent.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        self.raw_line(&neutralize(text))
    }

    /// One line on stdout exactly as given: for JSON, for escapes of our own (colour, a
    /// screen clear), and for `logs --raw`, which asked for the bytes.
    pub fn raw_line(&self, text: &str) -> Result<(), CliError> {
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
                let cell = self::cell(h);
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

    /// Prints a table whose cells were made with [`cell`] (so any escapes in it are the
    /// table's own colours).
    pub fn print_table(&self, table: &Table) -> Result<(), CliError> {
        // Every line starts with the first column's one-space padding; drop it so the
        // table starts at the margin like kubectl's.
        for line in table.lines() {
            let line = line.strip_prefix(' ').unwrap_or(&line);
            self.raw_line(line.trim_end())?;
        }
        Ok(())
    }

    /// A status, coloured by what it means.
    pub fn status_cell(&self, status: TaskStatus) -> Cell {
        let cell = cell(status.as_str());
        if !self.color {
            return cell;
        }
        cell.fg(status_color(status))
    }
}

/// A table cell showing `value` on one line, its control characters made visible. Every
/// cell is made here (clippy.toml forbids `Cell::new` elsewhere).
#[allow(clippy::disallowed_methods)]
pub fn cell(value: impl std::fmt::Display) -> Cell {
    Cell::new(neutralize_line(&value.to_string()))
}

/// A field from taskd inside a line of ours (a kind, a queue, a worker): on one line, its
/// control characters made visible.
pub fn inline(text: &str) -> Cow<'_, str> {
    neutralize_line(text)
}

/// A one-line error on stderr, `error: …`, whatever the message holds.
pub fn error(message: &str) {
    eprintln!("error: {}", neutralize_line(message));
}

/// A one-line note on stderr (progress of a stream, a reconnect), made safe like [`error`].
pub fn note(message: &str) {
    eprintln!("{}", neutralize_line(message));
}

/// `taskctl: interrupted` on stderr, on a line of its own: on a terminal, over the `^C` it
/// echoed (the cursor is at the start of a line: after our last line, or where the bars
/// were wiped).
pub fn interrupted() {
    let clear = if std::io::stderr().is_terminal() {
        "\r\x1b[2K"
    } else {
        ""
    };
    eprintln!("{clear}taskctl: interrupted");
}

static PROGRESS: OnceLock<MultiProgress> = OnceLock::new();

/// Where every progress bar and spinner of this process draws (stderr, on a terminal), so
/// that an interrupt can take them all off the screen at once.
pub fn progress() -> &'static MultiProgress {
    PROGRESS.get_or_init(|| {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::term_like_with_hz(
                Box::new(Narrowed(console::Term::buffered_stderr())),
                20,
            )
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// The terminal, two columns narrower than it is. indicatif pads each bar's line to the
/// full width, leaving the cursor in the last column; the `^C` a terminal echoes on Ctrl-C
/// then wraps onto a line of its own, one below where wiping the bars starts, and stays.
/// Two columns short, the echo lands on the bar's line and goes with it.
#[derive(Debug)]
struct Narrowed(console::Term);

impl TermLike for Narrowed {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(2).max(1)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Wipes every bar and spinner off the screen for good (Ctrl-C): nothing draws afterwards,
/// not even the last state a bar draws when it is dropped unfinished.
pub fn abandon_progress() {
    if let Some(multi) = PROGRESS.get() {
        let _ = multi.clear();
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// JSON text with the characters a terminal would act on written as `\uXXXX` escapes: serde
/// escapes only C0 controls, and DEL, C1 (U+009B is a CSI) and the bidi controls would
/// reach a terminal raw. The value is the same; they only ever stand inside strings.
pub fn json_escaped(text: &str) -> Cow<'_, str> {
    // serde has escaped every C0 control inside strings: a C0 left (a newline of pretty
    // output) is the document's own whitespace.
    let raw = |c: char| c >= '\u{7f}' && taskplane_api::text::is_dangerous(c);
    if !text.chars().any(raw) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if raw(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The ids in an output document: a task's `id`, an event's task, a queue's or a schedule's
/// name, or those of every element of an array or of a `tasks`/`queues`/`workers`/`schedules`
/// list.
pub fn ids_of(value: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().flat_map(ids_of).collect(),
        Value::Object(map) => {
            // An item's own id first: a worker has an id and a `queues` list of names.
            if let Some(Value::String(id)) = map.get("id") {
                return vec![id.clone()];
            }
            for list in ["tasks", "queues", "workers", "schedules"] {
                if let Some(Value::Array(items)) = map.get(list) {
                    return items.iter().flat_map(ids_of).collect();
                }
            }
            for key in ["id", "queue", "name"] {
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
        TaskStatus::Waiting => Color::Magenta,
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

/// `5m ago` for a past instant, `in 3d` for a future one (a `run_at`).
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    if secs < 0 {
        format!("in {}", short_secs(-secs))
    } else {
        format!("{} ago", short_secs(secs))
    }
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
    span(task.started_at, task.finished_at, now)
}

/// The time from `started` to `finished` (or to now while unfinished), `-` without a start.
pub fn span(
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let Some(started) = started else {
        return "-".to_owned();
    };
    let end = finished.unwrap_or(now);
    let ms = (end - started).num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        short_secs(ms / 1000)
    }
}

/// The first line of `text`, its control characters made visible, cut to `max` characters.
pub fn excerpt(text: &str, max: usize) -> String {
    let first = neutralize_line(text.lines().next().unwrap_or(""));
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        first.into_owned()
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
        assert_eq!(
            relative(now - chrono::Duration::seconds(600), now),
            "10m ago"
        );
        assert_eq!(
            relative(now + chrono::Duration::days(1126), now),
            "in 1126d",
            "a future time is not 'ago'"
        );
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
        let hostile = json!({"line": "a\u{9b}2J\u{7f}\u{202e}b\u{1b}"});
        let text = serde_json::to_string_pretty(&hostile).expect("json");
        let escaped = json_escaped(&text);
        assert!(
            !escaped
                .chars()
                .any(|c| c != '\n' && taskplane_api::text::is_dangerous(c)),
            "{escaped}"
        );
        assert!(escaped.contains('\n'), "pretty output keeps its lines");
        let back: serde_json::Value = serde_json::from_str(&escaped).expect("still JSON");
        assert_eq!(back, hostile, "the same value");
        assert_eq!(
            ids_of(&json!({"workers": [{"id": "w1", "queues": ["default", "mail"]}]})),
            ["w1"],
            "a worker's queues are not its id"
        );
        assert!(ids_of(&json!({"count": 3})).is_empty());
    }

    #[test]
    fn excerpts_cut_long_lines() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("first\nsecond", 10), "first");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcd…");
        assert_eq!(excerpt("\x1b[2Jboom\nmore", 10), "^[[2Jboom");
    }

    #[test]
    fn cells_show_control_characters_on_one_line() {
        assert_eq!(cell("a\x1b]0;t\x07\nb").content(), "a^[]0;t^G^Jb");
        assert_eq!(cell(42).content(), "42");
        assert_eq!(inline("q\u{202e}"), "q<U+202E>");
    }
}
