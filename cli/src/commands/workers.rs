//! `taskctl workers [--watch]`

use std::time::Duration;

use clap::Args;
use taskplane_api::{Client, WorkerList};

use crate::error::CliError;
use crate::output::{self, Ui};

/// Show the live worker processes: host, pid, queues, busy slots and heartbeat age. A worker
/// that misses three heartbeats (6 s) drops out.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Refresh in place until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
}

pub async fn run(client: &Client, ui: &Ui, args: WorkersArgs) -> Result<(), CliError> {
    super::refresh(
        ui,
        args.watch,
        Duration::from_secs(args.interval),
        || async {
            let list = client.workers().await?;
            render(ui, &list)
        },
    )
    .await
}

fn render(ui: &Ui, list: &WorkerList) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_collection(list, &list.workers);
    }
    if list.workers.is_empty() {
        eprintln!("no live workers");
        return Ok(());
    }
    let now = chrono::Utc::now();
    let mut table = ui.table(&[
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "BUSY",
        "STARTED",
        "HEARTBEAT",
    ]);
    for worker in &list.workers {
        table.add_row(vec![
            output::cell(&worker.id),
            output::cell(&worker.host),
            output::cell(worker.pid),
            output::cell(worker.queues.join(",")),
            output::cell(format!("{}/{}", worker.busy, worker.concurrency)),
            output::cell(format!("{} ago", output::age(worker.started_at, now))),
            output::cell(format!("{} ago", output::age(worker.last_heartbeat, now))),
        ]);
    }
    ui.print_table(&table)
}
