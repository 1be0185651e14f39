//! `taskctl dlq …`: the dead-letter set, i.e. the tasks that failed every attempt.

use clap::{Args, Subcommand};
use taskplane_api::{Client, DlqPurge, DlqRetry, ListQuery, TaskStatus};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List failed tasks with their last error, newest first.
    List(DlqListArgs),
    /// Put failed tasks back in their queue with a fresh set of attempts.
    Retry(DlqRetryArgs),
    /// Delete failed tasks (and their output) that finished long enough ago; workflow steps
    /// stay with their workflow (retry or cancel it instead).
    Purge(DlqPurgeArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Only tasks of this kind.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::kinds))]
    pub kind: Option<String>,
    /// Only tasks of this queue.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,
    /// How many at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all"]))]
pub struct DlqRetryArgs {
    /// These failed tasks.
    #[arg(value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub ids: Vec<Uuid>,
    /// Every failed task (narrowed by --kind and --queue).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// With --all: only tasks of this kind.
    #[arg(long, requires = "all")]
    pub kind: Option<String>,
    /// With --all: only tasks of this queue.
    #[arg(long, requires = "all", add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
pub struct DlqPurgeArgs {
    /// Only tasks that failed at least this long ago (e.g. 7d, 12h, 0s for all).
    #[arg(long, value_name = "DUR", value_parser = super::submit::parse_duration)]
    pub older_than: std::time::Duration,
    /// Only tasks of this kind.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::kinds))]
    pub kind: Option<String>,
    /// Only tasks of this queue.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,
}

pub async fn run(client: &Client, ui: &Ui, args: DlqArgs) -> Result<(), CliError> {
    match args.command {
        DlqCommand::List(args) => list(client, ui, args).await,
        DlqCommand::Retry(args) if args.all => {
            let result = client
                .dlq_retry(&DlqRetry {
                    kind: args.kind,
                    queue: args.queue,
                })
                .await?;
            if ui.json() {
                return ui.print_json(&result);
            }
            ui.line(&format!(
                "{} queued again",
                plural(result.count, "failed task")
            ))
        }
        DlqCommand::Retry(args) => {
            super::retry::run(client, ui, super::retry::RetryArgs { ids: args.ids }).await
        }
        DlqCommand::Purge(args) => {
            let result = client
                .dlq_purge(&DlqPurge {
                    older_than_secs: args.older_than.as_secs(),
                    kind: args.kind,
                    queue: args.queue,
                })
                .await?;
            if ui.json() {
                return ui.print_json(&result);
            }
            ui.line(&format!("{} deleted", plural(result.count, "failed task")))
        }
    }
}

async fn list(client: &Client, ui: &Ui, args: DlqListArgs) -> Result<(), CliError> {
    let page = client
        .list(&ListQuery {
            status: Some(TaskStatus::Failed),
            queue: args.queue,
            kind: args.kind,
            limit: Some(args.limit),
            ..ListQuery::default()
        })
        .await?;
    if ui.json() {
        return ui.print_collection(&page, &page.tasks);
    }
    if page.tasks.is_empty() {
        eprintln!("no failed tasks");
        return Ok(());
    }
    let now = chrono::Utc::now();
    let mut table = ui.table(&["ID", "KIND", "QUEUE", "ATTEMPTS", "FAILED", "LAST ERROR"]);
    for task in &page.tasks {
        table.add_row(vec![
            output::cell(task.id),
            output::cell(&task.kind),
            output::cell(&task.queue),
            output::cell(format!("{}/{}", task.attempts, task.max_attempts)),
            output::cell(
                task.finished_at
                    .map(|at| format!("{} ago", output::age(at, now)))
                    .unwrap_or_default(),
            ),
            output::cell(output::excerpt(
                task.last_error.as_deref().unwrap_or(""),
                80,
            )),
        ]);
    }
    ui.print_table(&table)
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
