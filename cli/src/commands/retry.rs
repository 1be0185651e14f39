//! `taskctl retry ID…`

use clap::Args;
use taskplane_api::{Client, Task};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Ids of failed or cancelled tasks.
    #[arg(required = true, value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub ids: Vec<Uuid>,
}

pub async fn run(client: &Client, ui: &Ui, args: RetryArgs) -> Result<(), CliError> {
    super::for_each_id(ui, &args.ids, |id| client.retry(id), describe).await
}

fn describe(task: &Task) -> String {
    let attempts = task.max_attempts;
    let plural = if attempts == 1 { "" } else { "s" };
    format!(
        "{}: queued again (up to {attempts} attempt{plural})",
        task.id
    )
}
