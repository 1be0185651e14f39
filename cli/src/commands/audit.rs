//! `taskctl audit`: who did what (operator actions), newest first.

use std::time::Duration;

use clap::Args;
use taskplane_api::{AuditList, AuditQuery, Client};

use crate::error::CliError;
use crate::output::{self, Ui};

/// Show the audit log: every operator action (cancel, retry, dead-letter retry and purge,
/// queue pause, resume and settings, schedule and workflow changes, submits of admin-only
/// kinds) with who made it, newest first. Needs an admin token.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries of the last DUR (e.g. 1h, 7d).
    #[arg(long, value_name = "DUR", value_parser = super::submit::parse_duration)]
    pub since: Option<Duration>,
    /// Only actions of this actor (a token's subject, or anonymous@ADDRESS).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (cancel, queue.pause) or family of actions (queue, dlq, schedule).
    #[arg(long)]
    pub action: Option<String>,
    /// How many at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

pub async fn run(client: &Client, ui: &Ui, args: AuditArgs) -> Result<(), CliError> {
    let since = match args.since {
        Some(age) => Some(
            chrono::Utc::now()
                - chrono::Duration::from_std(age)
                    .map_err(|_| CliError::Usage("--since: too long ago".into()))?,
        ),
        None => None,
    };
    let list = client
        .audit(&AuditQuery {
            since,
            actor: args.actor,
            action: args.action,
            limit: Some(args.limit),
            cursor: None,
        })
        .await?;
    render(ui, &list)
}

fn render(ui: &Ui, list: &AuditList) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_collection(list, &list.entries);
    }
    if list.entries.is_empty() {
        eprintln!("no audit entries");
        return Ok(());
    }
    let wide = ui.wide();
    let mut headers = vec!["AT", "ACTOR", "ACTION", "TARGET"];
    if wide {
        headers.push("DETAILS");
    }
    let mut table = ui.table(&headers);
    for entry in &list.entries {
        let mut row = vec![
            output::cell(entry.at.format("%Y-%m-%d %H:%M:%S").to_string()),
            output::cell(&entry.actor),
            output::cell(&entry.action),
            output::cell(&entry.target),
        ];
        if wide {
            row.push(output::cell(entry.details.to_string()));
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}
