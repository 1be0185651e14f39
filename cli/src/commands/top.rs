//! `taskctl top`: the live dashboard (the `taskplane-tui` crate).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use taskplane_api::Client;

use crate::error::CliError;

/// A live dashboard of the server: totals, queues with depth sparklines, workers, and the
/// task table with details and live output. Press ? inside for the keys.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Disable cancel and retry.
    #[arg(long)]
    pub readonly: bool,
    /// How often to refresh when no event arrives (e.g. 1s, 5s).
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = super::submit::parse_duration)]
    pub refresh: Duration,
}

pub async fn run(client: &Client, color: bool, args: TopArgs) -> Result<(), CliError> {
    if !std::io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "taskctl top needs a terminal; for scripts use `taskctl list`, `queues` or `events`"
                .into(),
        ));
    }
    let options = taskplane_tui::Options {
        readonly: args.readonly,
        color,
        refresh: args.refresh,
    };
    taskplane_tui::run(client.clone(), options)
        .await
        .map_err(|e| CliError::Other(format!("the dashboard failed: {e}")))
}
