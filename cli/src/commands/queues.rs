//! `taskctl queues [--watch]`

use std::time::Duration;

use clap::Args;
use taskplane_api::{Client, QueueList, TaskStatus};

use crate::error::CliError;
use crate::output::{self, Ui};

/// Show every queue: ready depth, counts by status, the age of the oldest ready task, and
/// what finished and failed in the last minute. With a RabbitMQ broker, also the broker's
/// message and consumer counts.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Refresh in place until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
}

pub async fn run(client: &Client, ui: &Ui, args: QueuesArgs) -> Result<(), CliError> {
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
