//! `taskctl status ID`

use clap::Args;
use comfy_table::Cell;
use taskplane_api::{Client, Task};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The task id.
    #[arg(value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub id: Uuid,
}

pub async fn run(client: &Client, ui: &Ui, args: StatusArgs) -> Result<(), CliError> {
    let task = client.get(args.id).await?;
    if ui.json() {
        return ui.print_json(&task);
    }
    print_task(ui, &task)
}

/// The task as a two-column sheet, one field a row.
pub fn print_task(ui: &Ui, task: &Task) -> Result<(), CliError> {
    let now = chrono::Utc::now();
    let when = |at: Option<chrono::DateTime<chrono::Utc>>| match at {
        Some(at) => format!(
            "{} ({})",
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            output::relative(at, now)
        ),
        None => "-".to_owned(),
    };
    let json = |value: &serde_json::Value| serde_json::to_string(value).unwrap_or_default();
    let mut table = ui.table(&[]);
    let mut row = |name: &str, value: Cell| {
        table.add_row(vec![output::cell(format!("{name}:")), value]);
    };
    row("id", output::cell(task.id));
    row("kind", output::cell(&task.kind));
    row("queue", output::cell(&task.queue));
    row("status", ui.status_cell(task.status));
    if task.cancel_requested && !task.status.is_terminal() {
        row("", output::cell("cancel requested"));
    }
    row(
        "attempts",
        output::cell(format!("{}/{}", task.attempts, task.max_attempts)),
    );
    row("priority", output::cell(task.priority));
    row("timeout", output::cell(format!("{}s", task.timeout_secs)));
    row("created", output::cell(when(Some(task.created_at))));
    row("run at", output::cell(when(Some(task.run_at))));
    row("started", output::cell(when(task.started_at)));
    row("finished", output::cell(when(task.finished_at)));
    row("duration", output::cell(output::run_time(task, now)));
    row(
        "worker",
        output::cell(task.worker.as_deref().unwrap_or("-")),
    );
    if let Some(key) = &task.idempotency_key {
        row("idempotency key", output::cell(key));
    }
    if !task.labels.is_empty() {
        row("labels", output::cell(task.labels_text()));
    }
    row(
        "payload",
        output::cell(output::excerpt(&json(&task.payload), 200)),
    );
    if let Some(result) = &task.result {
        row("result", output::cell(output::excerpt(&json(result), 200)));
    }
    if let Some(error) = &task.last_error {
        row("last error", output::cell(output::excerpt(error, 200)));
    }
    ui.print_table(&table)
}
