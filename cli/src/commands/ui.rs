//! `taskctl ui`: the web dashboard's address for the current context, opened in a browser
//! on request.

use clap::Args;
use serde_json::json;
use taskplane_api::Client;
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

/// Print the address of taskd's web dashboard (a task's or a workflow's page with an id),
/// or open it in a browser.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// A task whose page to show.
    #[arg(value_name = "TASK_ID", conflicts_with = "workflow")]
    pub task: Option<Uuid>,
    /// A workflow whose page (with its DAG) to show.
    #[arg(long, value_name = "ID")]
    pub workflow: Option<Uuid>,
    /// Open it with the desktop's browser (xdg-open, or open on macOS) as well.
    #[arg(long)]
    pub open: bool,
}

pub async fn run(client: &Client, ui: &Ui, args: UiArgs) -> Result<(), CliError> {
    if !client.serves_dashboard().await? {
        return Err(CliError::Other(format!(
            "taskd at {} serves no dashboard (it runs with --no-ui)",
            client.base_url()
        )));
    }
    let url = page_url(client.base_url(), &args);
    if args.open {
        open(&url)?;
    }
    if ui.json() {
        return ui.print_json(&json!({ "url": url }));
    }
    ui.line(&url)
}

/// The dashboard page `args` names, under `base` (the server's URL).
fn page_url(base: &str, args: &UiArgs) -> String {
    let base = base.trim_end_matches('/');
    match (args.task, args.workflow) {
        (Some(task), _) => format!("{base}/ui/tasks/{task}"),
        (None, Some(workflow)) => format!("{base}/ui/workflows/{workflow}"),
        (None, None) => format!("{base}/ui/"),
    }
}

/// Hands `url` to the desktop's opener, without waiting for the browser.
fn open(url: &str) -> Result<(), CliError> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| {
            CliError::Other(format!(
                "cannot run {opener} to open {url}: {e} (open the address yourself)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_under_the_servers_url() {
        let id = Uuid::nil();
        let args = |task, workflow| UiArgs {
            task,
            workflow,
            open: false,
        };
        assert_eq!(
            page_url("http://h:7070/", &args(None, None)),
            "http://h:7070/ui/"
        );
        assert_eq!(
            page_url("https://ops.example/taskd", &args(Some(id), None)),
            format!("https://ops.example/taskd/ui/tasks/{id}")
        );
        assert_eq!(
            page_url("http://h:7070", &args(None, Some(id))),
            format!("http://h:7070/ui/workflows/{id}")
        );
    }
}
