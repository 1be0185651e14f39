//! `taskctl logs ID [-f]`

use std::time::Duration;

use clap::Args;
use taskplane_api::{Client, LogQuery, LogStream};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task id.
    #[arg(value_name = "ID", value_parser = super::parse_id)]
    pub id: Uuid,
    /// Keep printing new output until the task finishes.
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with its timestamp and stream.
    #[arg(long)]
    pub timestamps: bool,
}

pub async fn run(client: &Client, ui: &Ui, args: LogsArgs) -> Result<(), CliError> {
    let mut after = 0;
    let mut attempt_shown = 0;
    loop {
        let page = client
            .logs(
                args.id,
                &LogQuery {
                    after: Some(after),
                    limit: None,
                },
            )
            .await?;
        let empty = page.lines.is_empty();
        for line in &page.lines {
            if ui.json() {
                // One object per line, so a follower can stream it into jq.
                let text = serde_json::to_string(line)
                    .map_err(|e| CliError::Other(format!("cannot encode a log line: {e}")))?;
                ui.line(&text)?;
                continue;
            }
            if line.attempt != attempt_shown {
                if attempt_shown != 0 || line.attempt > 1 {
                    eprintln!("--- attempt {} ---", line.attempt);
                }
                attempt_shown = line.attempt;
            }
            let text = match (args.timestamps, line.stream) {
                (true, stream) => format!(
                    "{} {} {}",
                    line.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    stream.as_str(),
                    line.line
                ),
                (false, LogStream::System) => format!("[taskd] {}", line.line),
                (false, _) => line.line.clone(),
            };
            ui.line(&text)?;
        }
        after = page.next_after;
        if !args.follow {
            if empty || page.lines.len() < 1000 {
                break;
            }
            continue;
        }
        // The status was read before the page: terminal then an empty page means every
        // line is in.
        if empty && page.task_status.is_terminal() {
            break;
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
