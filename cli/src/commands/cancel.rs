//! `taskctl cancel ID…`

use clap::Args;
use taskplane_api::{Client, Task, TaskStatus};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Task ids.
    #[arg(required = true, value_name = "ID", value_parser = super::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub ids: Vec<Uuid>,
}

pub async fn run(client: &Client, ui: &Ui, args: CancelArgs) -> Result<(), CliError> {
    super::for_each_id(ui, &args.ids, |id| client.cancel(id), describe).await
}

fn describe(task: &Task) -> String {
    if task.status == TaskStatus::Running {
        format!(
            "{}: cancel requested; its handler is being stopped",
            task.id
        )
    } else {
        format!("{}: cancelled", task.id)
    }
}
