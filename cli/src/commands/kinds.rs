//! `taskctl kinds`

use clap::Args;
use taskplane_api::{Client, KindList};

use crate::error::CliError;
use crate::output::{self, Ui};

/// List the kinds taskd accepts: the built-in ones, run by taskd's workers, and the ones
/// declared with `taskd --kinds`, served by remote workers (`taskctl worker`, the Python
/// SDK); for each, whether it is on, whether it needs an admin token, and the live workers
/// serving it.
#[derive(Debug, Args)]
pub struct KindsArgs {}

pub async fn run(client: &Client, ui: &Ui, _args: KindsArgs) -> Result<(), CliError> {
    let list = client.kinds().await?;
    render(ui, &list)
}

fn render(ui: &Ui, list: &KindList) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_collection(list, &list.kinds);
    }
    let wide = ui.wide();
    let mut headers = vec!["KIND", "SERVED BY", "STATUS", "WORKERS"];
    if wide {
        headers.push("ABOUT");
    }
    let mut table = ui.table(&headers);
    for kind in &list.kinds {
        let served = if kind.builtin { "taskd" } else { "remote" };
        let status = match (kind.enabled, kind.admin) {
            (false, _) => "disabled",
            (true, true) => "admin only",
            (true, false) => "on",
        };
        let workers = if kind.workers.is_empty() {
            "none".to_owned()
        } else if wide {
            kind.workers.join(",")
        } else {
            kind.workers.len().to_string()
        };
        let mut row = vec![
            output::cell(&kind.name),
            output::cell(served),
            output::cell(status),
            output::cell(workers),
        ];
        if wide {
            row.push(output::cell(kind.about.as_deref().unwrap_or("")));
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}
