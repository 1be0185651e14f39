//! `taskctl events`: tails task state changes.

use std::time::Duration;

use clap::Args;
use taskplane_api::{Client, EventQuery, TaskEvent};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

/// Tail task events as they happen: created, queued, started, retrying, succeeded, failed,
/// cancelled.
///
/// Runs until interrupted (or until --count events); reconnects by itself and resumes where
/// it left off. --last N and --since DUR first replay recent events (taskd keeps the last ten
/// minutes). With -o json or -o jsonl, each event is one JSON object per line.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of tasks in this queue.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,
    /// Only events of tasks of this kind.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::kinds))]
    pub kind: Option<String>,
    /// Only events of this task. Repeatable.
    #[arg(long = "task", value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub tasks: Vec<Uuid>,
    /// Only events of the steps of this workflow.
    #[arg(long, value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::workflow_ids))]
    pub workflow: Option<Uuid>,
    /// First print the last N events that match (like `tail -n`), then follow.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub last: Option<u32>,
    /// First print the events of the last DUR (e.g. 30s, 5m), then follow.
    #[arg(long, value_name = "DUR", value_parser = super::submit::parse_duration)]
    pub since: Option<Duration>,
    /// Exit after printing N events, replayed ones included.
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
}

pub async fn run(client: &Client, ui: &Ui, args: EventsArgs) -> Result<(), CliError> {
    let query = EventQuery {
        queue: args.queue,
        kind: args.kind,
        tasks: (!args.tasks.is_empty()).then(|| {
            args.tasks
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }),
        workflow: args.workflow,
        since_secs: args.since.map(|since| since.as_secs_f64().ceil() as u64),
        last: args.last,
    };
    let mut seen = 0u64;
    let mut last_seq = None;
    let mut stream = client.events(&query, None).await?;
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                print(ui, &event)?;
                seen += 1;
                if args.count.is_some_and(|count| seen >= count) {
                    return Ok(());
                }
            }
            Some(Err(error)) => {
                output::note(&format!("event stream interrupted ({error}); reconnecting"));
            }
            None => {}
        }
        if stream.last_seq.is_some() {
            last_seq = stream.last_seq;
        }
        if stream.is_closed() {
            // Reconnect and resume after the last event printed, until taskd answers again.
            let mut delay = Duration::from_millis(250);
            stream = loop {
                match client.events(&query, last_seq).await {
                    Ok(stream) => break stream,
                    Err(error) => {
                        output::note(&format!(
                            "cannot reconnect ({error}); retrying in {delay:?}"
                        ));
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
        }
    }
}

fn print(ui: &Ui, event: &TaskEvent) -> Result<(), CliError> {
    if ui.format == crate::cli::OutputFormat::Id {
        return ui.line(&event.task.id.to_string());
    }
    if ui.json() {
        return ui.json_line(event);
    }
    if let (true, Some(workflow)) = (event.kind.is_workflow(), event.workflow) {
        return ui.line(&format!(
            "{}  {}  workflow {workflow}  (its last step {})",
            event
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event.kind.as_str(),
            event.task.id,
        ));
    }
    ui.line(&format!(
        "{}  {:<9}  {}  {}  {}  attempt {}/{}{}",
        event
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.kind.as_str(),
        event.task.id,
        output::inline(&event.task.kind),
        output::inline(&event.task.queue),
        event.task.attempts,
        event.task.max_attempts,
        match (&event.schedule, &event.task.worker) {
            (Some(schedule), _) => format!("  by schedule {}", output::inline(schedule)),
            (None, Some(worker)) => format!("  on {}", output::inline(worker)),
            (None, None) => String::new(),
        }
    ))
}
