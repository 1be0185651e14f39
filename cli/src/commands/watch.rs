//! `taskctl watch ID…`, and the waiting that `submit --wait` shares with it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use taskplane_api::{Client, EventQuery, Task, TaskEvent, TaskStatus};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Task ids.
    #[arg(required = true, value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub ids: Vec<Uuid>,
}

pub async fn run(client: &Client, ui: &Ui, args: WatchArgs) -> Result<(), CliError> {
    let tasks = follow(client, ui, &args.ids, true).await?;
    if matches!(
        ui.format,
        crate::cli::OutputFormat::Json | crate::cli::OutputFormat::Id
    ) {
        ui.print_json(&tasks)?;
    }
    outcome(&tasks)
}

/// How often the tasks are re-read in full while following events, in case an event was
/// missed (a reconnect, a server without events).
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// The most ids a filter on the event stream names; beyond that the client filters.
const MAX_FILTER_IDS: usize = 200;

/// Follows `ids` until every task is terminal; returns them in the order given. It follows
/// the event stream (no busy polling), reading a task in full only when it ends, and falls
/// back to polling if the server offers no events. On a terminal, a spinner per task on
/// stderr; otherwise (with `lines`) one line per change, or one event per line with jsonl.
pub async fn follow(
    client: &Client,
    ui: &Ui,
    ids: &[Uuid],
    lines: bool,
) -> Result<Vec<Task>, CliError> {
    let mut display = Display::new(ui, ids, lines);
    let wanted: HashSet<Uuid> = ids.iter().copied().collect();
    let query = EventQuery {
        tasks: (ids.len() <= MAX_FILTER_IDS).then(|| {
            ids.iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }),
        ..EventQuery::default()
    };
    // Subscribe before the first read, so no change falls between the two.
    let mut stream = client.events(&query, None).await.ok();
    let mut latest: HashMap<Uuid, Task> = HashMap::new();
    for &id in ids {
        let task = client.get(id).await?;
        display.update(&task)?;
        latest.insert(id, task);
    }
    let all_done = |latest: &HashMap<Uuid, Task>| {
        ids.iter()
            .all(|id| latest.get(id).is_some_and(|t| t.status.is_terminal()))
    };
    let mut spinner = tokio::time::interval(Duration::from_millis(100));
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.reset();
    while !all_done(&latest) {
        let next_event = async {
            match stream.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = next_event => match event {
                Some(Ok(event)) if wanted.contains(&event.task.id) && !event.kind.is_workflow() => {
                    display.event(&event)?;
                    let Some(task) = latest.get_mut(&event.task.id) else { continue };
                    if task.status.is_terminal() {
                        continue;
                    }
                    if event.task.status.is_terminal() {
                        // The full task carries the result and the error.
                        *task = client.get(event.task.id).await?;
                    } else {
                        task.status = event.task.status;
                        task.attempts = event.task.attempts;
                        task.worker = event.task.worker.clone();
                    }
                    display.update(task)?;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // Reconnect and resume; if that fails, polling takes over.
                    let last = stream.as_ref().and_then(|s| s.last_seq);
                    stream = client.events(&query, last).await.ok();
                    if stream.is_none() {
                        reconcile = tokio::time::interval(Duration::from_millis(250));
                    }
                }
            },
            _ = reconcile.tick() => {
                for &id in ids {
                    if latest.get(&id).is_some_and(|t| t.status.is_terminal()) {
                        continue;
                    }
                    let task = client.get(id).await?;
                    let changed = latest
                        .get(&id)
                        .is_none_or(|old| old.status != task.status || old.attempts != task.attempts);
                    if changed {
                        display.update(&task)?;
                    }
                    latest.insert(id, task);
                }
            }
            _ = spinner.tick() => display.tick(),
        }
    }
    display.finish();
    Ok(ids.iter().filter_map(|id| latest.remove(id)).collect())
}

/// Exit 0 when every task succeeded, 3 when one failed, 4 when one was cancelled.
pub fn outcome(tasks: &[Task]) -> Result<(), CliError> {
    let failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    let cancelled: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Cancelled)
        .collect();
    let more = |n: usize| {
        if n > 1 {
            format!(" (and {} more)", n - 1)
        } else {
            String::new()
        }
    };
    if let Some(task) = failed.first() {
        return Err(CliError::TaskFailed(format!(
            "task {} failed after {} attempt{}: {}{}",
            task.id,
            task.attempts,
            if task.attempts == 1 { "" } else { "s" },
            task.last_error.as_deref().unwrap_or("no error recorded"),
            more(failed.len())
        )));
    }
    if let Some(task) = cancelled.first() {
        return Err(CliError::TaskCancelled(format!(
            "task {} was cancelled{}",
            task.id,
            more(cancelled.len())
        )));
    }
    Ok(())
}

/// One line describing where a task is (its text from taskd made safe to print).
pub fn summary(task: &Task) -> String {
    let now = chrono::Utc::now();
    let mut text = format!("{} {} {}", task.id, output::inline(&task.kind), task.status);
    match task.status {
        TaskStatus::Running | TaskStatus::Retrying => {
            text.push_str(&format!(
                " (attempt {}/{})",
                task.attempts, task.max_attempts
            ));
        }
        TaskStatus::Scheduled => {
            text.push_str(&format!(" (runs {})", output::age(task.run_at, now)));
        }
        s if s.is_terminal() => {
            text.push_str(&format!(" in {}", output::run_time(task, now)));
        }
        _ => {}
    }
    if matches!(task.status, TaskStatus::Retrying | TaskStatus::Failed)
        && let Some(error) = &task.last_error
    {
        text.push_str(&format!(": {}", output::excerpt(error, 80)));
    }
    text
}

/// Spinners on a terminal, plain lines elsewhere, events with jsonl, nothing for json.
enum Display {
    Spinners {
        bars: HashMap<Uuid, ProgressBar>,
    },
    Lines {
        shown: HashMap<Uuid, (TaskStatus, u32)>,
    },
    Events,
    Quiet,
}

impl Display {
    fn new(ui: &Ui, ids: &[Uuid], lines: bool) -> Display {
        if ui.progress {
            let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bars = ids
                .iter()
                .map(|id| {
                    let bar = output::progress().add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_message(format!("{id} …"));
                    (*id, bar)
                })
                .collect();
            Display::Spinners { bars }
        } else if lines && ui.format == crate::cli::OutputFormat::Jsonl {
            Display::Events
        } else if lines && !ui.json() {
            Display::Lines {
                shown: HashMap::new(),
            }
        } else {
            Display::Quiet
        }
    }

    fn update(&mut self, task: &Task) -> Result<(), CliError> {
        match self {
            Display::Spinners { bars, .. } => {
                if let Some(bar) = bars.get(&task.id) {
                    let mark = match task.status {
                        TaskStatus::Succeeded => "✔ ",
                        TaskStatus::Failed => "✘ ",
                        TaskStatus::Cancelled => "⊘ ",
                        _ => "",
                    };
                    bar.set_message(format!("{mark}{}", summary(task)));
                    if task.status.is_terminal() {
                        bar.finish();
                    }
                }
            }
            Display::Lines { shown } => {
                if shown.insert(task.id, (task.status, task.attempts))
                    != Some((task.status, task.attempts))
                {
                    let now =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    println!("{now} {}", summary(task));
                }
            }
            Display::Events | Display::Quiet => {}
        }
        Ok(())
    }

    /// An event as it arrives (only `-o jsonl` shows events themselves).
    fn event(&mut self, event: &TaskEvent) -> Result<(), CliError> {
        if let Display::Events = self {
            let text = serde_json::to_string(event)
                .map_err(|e| CliError::Other(format!("cannot encode an event: {e}")))?;
            println!("{text}");
        }
        Ok(())
    }

    fn tick(&self) {
        if let Display::Spinners { bars, .. } = self {
            for bar in bars.values() {
                bar.tick();
            }
        }
    }

    fn finish(&self) {
        if let Display::Spinners { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
        }
    }
}
