//! `taskctl list`

use clap::Args;
use taskplane_api::{Client, ListQuery, TaskList, TaskStatus};

use crate::error::CliError;
use crate::output::{self, Ui};

/// The most the API returns in one page.
const PAGE: u32 = 1000;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this status.
    #[arg(long, value_parser = parse_status, add = clap_complete::ArgValueCandidates::new(crate::complete::statuses))]
    pub status: Option<TaskStatus>,
    /// Only tasks of this queue.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,
    /// Only tasks of this kind.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::kinds))]
    pub kind: Option<String>,
    /// Only tasks whose labels match, like kubectl's: `k=v`, `k!=v`, `k` (has the label) or
    /// `!k` (has not); comma-separated or repeated, all must match.
    #[arg(short = 'l', long, value_name = "SELECTOR", value_delimiter = ',')]
    pub selector: Vec<String>,
    /// How many tasks at most (pages are fetched as needed).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

fn parse_status(text: &str) -> Result<TaskStatus, String> {
    text.parse()
        .map_err(|e: taskplane_api::UnknownStatus| e.to_string())
}

pub async fn run(client: &Client, ui: &Ui, args: ListArgs) -> Result<(), CliError> {
    let mut query = ListQuery {
        status: args.status,
        queue: args.queue,
        kind: args.kind,
        limit: None,
        cursor: None,
        label: args
            .selector
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
    };
    let mut all = TaskList::default();
    loop {
        let want = args.limit - all.tasks.len() as u32;
        query.limit = Some(want.min(PAGE));
        let page = client.list(&query).await?;
        all.tasks.extend(page.tasks);
        all.next_cursor = page.next_cursor;
        match &all.next_cursor {
            Some(cursor) if (all.tasks.len() as u32) < args.limit => {
                query.cursor = Some(cursor.clone());
            }
            _ => break,
        }
    }
    if ui.json() {
        return ui.print_collection(&all, &all.tasks);
    }
    if all.tasks.is_empty() {
        eprintln!("no tasks");
        return Ok(());
    }
    let now = chrono::Utc::now();
    let mut headers = vec![
        "ID",
        "KIND",
        "QUEUE",
        "STATUS",
        "ATTEMPTS",
        "AGE",
        "DURATION",
        "LAST ERROR",
    ];
    if ui.wide() {
        headers.extend(["PRIORITY", "RUN AT", "WORKER", "LABELS"]);
    }
    let mut table = ui.table(&headers);
    for task in &all.tasks {
        let mut row = vec![
            output::cell(task.id),
            output::cell(&task.kind),
            output::cell(&task.queue),
            ui.status_cell(task.status),
            output::cell(format!("{}/{}", task.attempts, task.max_attempts)),
            output::cell(output::age(task.created_at, now)),
            output::cell(output::run_time(task, now)),
            output::cell(
                task.last_error
                    .as_deref()
                    .map(|e| output::excerpt(e, 60))
                    .unwrap_or_default(),
            ),
        ];
        if ui.wide() {
            row.extend([
                output::cell(task.priority),
                output::cell(
                    task.run_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                output::cell(task.worker.as_deref().unwrap_or("-")),
                output::cell(task.labels_text()),
            ]);
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}
