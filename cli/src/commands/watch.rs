//! `taskctl watch ID…`, and the waiting that `submit --wait` shares with it.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskplane_api::{Client, Task, TaskStatus};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Task ids.
    #[arg(required = true, value_name = "ID", value_parser = super::parse_id)]
    pub ids: Vec<Uuid>,
}

pub async fn run(client: &Client, ui: &Ui, args: WatchArgs) -> Result<(), CliError> {
    let tasks = follow(client, ui, &args.ids, true).await?;
    if ui.json() {
        ui.print_json(&tasks)?;
    }
    outcome(&tasks)
}

/// Follows `ids` until every task is terminal; returns them in the order given. On a
/// terminal, a spinner per task on stderr; otherwise (with `lines`) one line per change.
pub async fn follow(
    client: &Client,
    ui: &Ui,
    ids: &[Uuid],
    lines: bool,
) -> Result<Vec<Task>, CliError> {
    let mut display = Display::new(ui, ids, lines);
    let mut latest: HashMap<Uuid, Task> = HashMap::new();
    let started = tokio::time::Instant::now();
    loop {
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
        if ids
            .iter()
            .all(|id| latest.get(id).is_some_and(|t| t.status.is_terminal()))
        {
            break;
        }
        display.tick();
        // Quick at first, so short tasks return promptly; gentler on the server after.
        let pause = if started.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(250)
        };
        tokio::time::sleep(pause).await;
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

/// One line describing where a task is.
pub fn summary(task: &Task) -> String {
    let now = chrono::Utc::now();
    let mut text = format!("{} {} {}", task.id, task.kind, task.status);
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

/// Spinners on a terminal, plain lines elsewhere, nothing for JSON output.
enum Display {
    Spinners {
        _multi: MultiProgress,
        bars: HashMap<Uuid, ProgressBar>,
    },
    Lines,
    Quiet,
}

impl Display {
    fn new(ui: &Ui, ids: &[Uuid], lines: bool) -> Display {
        if ui.progress {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bars = ids
                .iter()
                .map(|id| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_message(format!("{id} …"));
                    (*id, bar)
                })
                .collect();
            Display::Spinners {
                _multi: multi,
                bars,
            }
        } else if lines && !ui.json() {
            Display::Lines
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
            Display::Lines => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                println!("{now} {}", summary(task));
            }
            Display::Quiet => {}
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
