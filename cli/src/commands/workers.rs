//! `taskctl workers [--watch]`

use std::time::Duration;

use clap::Args;
use taskplane_api::{Client, WorkerList};

use crate::error::CliError;
use crate::output::{self, Ui};

/// Show the live workers: host, pid (`remote` for a worker over the lease protocol), queues,
/// busy slots and heartbeat age (`-o wide`: the kinds each serves). A taskd worker that
/// misses three heartbeats (6 s) drops out, a remote one after a lease (30 s by default)
/// without a poll or a report.
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
    let wide = ui.wide();
    let mut headers = vec![
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "BUSY",
        "STARTED",
        "HEARTBEAT",
    ];
    if wide {
        headers.push("KINDS");
    }
    let mut table = ui.table(&headers);
    for worker in &list.workers {
        let mut row = vec![
            output::cell(&worker.id),
            output::cell(&worker.host),
            // A remote worker (the lease protocol) has no pid taskd knows.
            output::cell(if worker.remote {
                "remote".to_owned()
            } else {
                worker.pid.to_string()
            }),
            output::cell(worker.queues.join(",")),
            output::cell(format!("{}/{}", worker.busy, worker.concurrency)),
            output::cell(format!("{} ago", output::age(worker.started_at, now))),
            output::cell(format!("{} ago", output::age(worker.last_heartbeat, now))),
        ];
        if wide {
            row.push(output::cell(worker.kinds.join(",")));
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}
