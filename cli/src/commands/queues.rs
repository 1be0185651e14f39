//! `taskctl queues [--watch]`, `taskctl queues pause|resume|set QUEUE`

use std::time::Duration;

use clap::{Args, Subcommand};
use taskplane_api::{Client, QueueList, QueuePatch, QueueSettings, TaskStatus};

use crate::error::CliError;
use crate::output::{self, Ui};

/// Show every queue: ready depth, counts by status, the age of the oldest ready task, what
/// finished and failed in the last minute, and its controls (paused, running limit, rate).
/// With RabbitMQ or Redis, also the broker's message and consumer counts. The subcommands
/// pause, resume and limit a queue (an admin token's work).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QueuesArgs {
    #[command(subcommand)]
    pub command: Option<QueuesCommand>,
    /// Refresh in place until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Stop workers taking the queue's tasks, on every taskd within a second. Running tasks
    /// finish; submits are still accepted.
    Pause(QueueName),
    /// Let workers take the queue's tasks again.
    Resume(QueueName),
    /// Set the queue's running limit or rate, across every worker process.
    Set(QueueSetArgs),
}

#[derive(Debug, Args)]
pub struct QueueName {
    /// The queue (it need not have tasks yet).
    #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: String,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["max_running", "rate"]))]
pub struct QueueSetArgs {
    /// The queue (it need not have tasks yet).
    #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: String,
    /// At most N of its tasks run at once; `none` clears the limit.
    #[arg(long, value_name = "N|none", value_parser = parse_limit, allow_hyphen_values = true)]
    pub max_running: Option<Limit<i64>>,
    /// At most R of its tasks start per second (e.g. 5, 0.5); `none` clears the rate.
    #[arg(long, value_name = "R|none", value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Option<Limit<f64>>,
}

/// A limit to set, or `none` to clear it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit<T> {
    Set(T),
    Clear,
}

impl<T> Limit<T> {
    fn into_patch(self) -> Option<T> {
        match self {
            Limit::Set(value) => Some(value),
            Limit::Clear => None,
        }
    }
}

fn parse_limit(text: &str) -> Result<Limit<i64>, String> {
    if text == "none" {
        return Ok(Limit::Clear);
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(Limit::Set(n)),
        _ => Err(format!(
            "'{text}' is not a running limit: a whole number of at least 1, or none"
        )),
    }
}

fn parse_rate(text: &str) -> Result<Limit<f64>, String> {
    if text == "none" {
        return Ok(Limit::Clear);
    }
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Limit::Set(r)),
        _ => Err(format!(
            "'{text}' is not a rate: starts per second, more than 0 (e.g. 5 or 0.5), or none"
        )),
    }
}

pub async fn run(client: &Client, ui: &Ui, args: QueuesArgs) -> Result<(), CliError> {
    if let Some(command) = args.command {
        let settings = match command {
            QueuesCommand::Pause(name) => client.queue_action(&name.queue, "pause").await?,
            QueuesCommand::Resume(name) => client.queue_action(&name.queue, "resume").await?,
            QueuesCommand::Set(set) => {
                let patch = QueuePatch {
                    max_running: set.max_running.map(Limit::into_patch),
                    rate_per_sec: set.rate.map(Limit::into_patch),
                    paused: None,
                };
                client.patch_queue(&set.queue, &patch).await?
            }
        };
        return show_settings(ui, &settings);
    }
    super::refresh(
        ui,
        args.watch,
        Duration::from_secs(args.interval),
        || async {
            let list = client.queues().await?;
            render(ui, &list)
        },
    )
    .await
}

fn render(ui: &Ui, list: &QueueList) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_collection(list, &list.queues);
    }
    if list.queues.is_empty() {
        eprintln!("no queues yet: submit a task");
        return Ok(());
    }
    let with_broker = list.queues.iter().any(|q| q.broker.is_some());
    let mut headers = vec![
        "QUEUE",
        "STATE",
        "READY",
        "SCHEDULED",
        "RUNNING",
        "RETRYING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "OLDEST READY",
        "DONE/MIN",
        "FAILED/MIN",
    ];
    if with_broker {
        headers.extend(["MESSAGES", "CONSUMERS"]);
    }
    let mut table = ui.table(&headers);
    for queue in &list.queues {
        let count = |status: TaskStatus| queue.counts.get(&status).copied().unwrap_or(0);
        let mut row = vec![
            output::cell(&queue.queue),
            output::cell(state(queue.paused, queue.max_running, queue.rate_per_sec)),
            output::cell(queue.depth),
            output::cell(count(TaskStatus::Scheduled)),
            output::cell(count(TaskStatus::Running)),
            output::cell(count(TaskStatus::Retrying)),
            output::cell(count(TaskStatus::Succeeded)),
            output::cell(count(TaskStatus::Failed)),
            output::cell(count(TaskStatus::Cancelled)),
            output::cell(
                queue
                    .oldest_ready_secs
                    .map(|secs| format!("{secs:.1}s"))
                    .unwrap_or_else(|| "-".to_owned()),
            ),
            output::cell(queue.finished_last_minute),
            output::cell(queue.failed_last_minute),
        ];
        if with_broker {
            match &queue.broker {
                Some(broker) => {
                    row.push(output::cell(broker.messages));
                    row.push(output::cell(broker.consumers));
                }
                None => row.extend([output::cell("-"), output::cell("-")]),
            }
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}

/// A queue's controls in one cell: `paused`, `max 2`, `5/s`, or `-` for none.
fn state(paused: bool, max_running: Option<u32>, rate: Option<f64>) -> String {
    let text = taskplane_api::controls_text(paused, max_running, rate);
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn show_settings(ui: &Ui, settings: &QueueSettings) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_json(settings);
    }
    ui.line(&format!(
        "queue {}: {}",
        settings.queue,
        match state(settings.paused, settings.max_running, settings.rate_per_sec).as_str() {
            "-" => "no controls".to_owned(),
            other => other.to_owned(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_rates_parse_or_say_why_not() {
        assert_eq!(parse_limit("2"), Ok(Limit::Set(2)));
        assert_eq!(parse_limit("none"), Ok(Limit::Clear));
        assert!(
            parse_limit("-1")
                .expect_err("negative")
                .contains("at least 1")
        );
        assert!(parse_limit("0").is_err());
        assert_eq!(parse_rate("0.5"), Ok(Limit::Set(0.5)));
        assert!(parse_rate("0").expect_err("zero").contains("more than 0"));
        assert!(parse_rate("inf").is_err());
    }

    #[test]
    fn the_state_cell_names_every_control() {
        assert_eq!(state(false, None, None), "-");
        assert_eq!(state(true, Some(2), Some(5.0)), "paused, max 2, 5/s");
        assert_eq!(state(false, None, Some(0.25)), "0.25/s");
    }
}
