//! `taskctl workflow run|status|list|watch|cancel|retry`

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;
use taskplane_api::{
    Client, EventQuery, TaskStatus, Workflow, WorkflowQuery, WorkflowSpec, WorkflowStatus,
};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::{self, Ui};

/// Workflows: steps (each a task) that run once the steps they need have succeeded, and may
/// take those steps' results into their payloads.
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    pub command: WorkflowCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start a workflow a YAML or JSON file describes.
    #[command(
        after_help = "The file names the workflow and its steps; a step runs once every step it\n\
        needs has succeeded. ${params.KEY} is filled from --set KEY=VALUE or the file's\n\
        params; ${steps.ID.result} (or ${steps.ID.result.field}) takes the result of a step\n\
        it needs when the step starts:\n\n  \
        name: deploy\n  \
        params: {target: \"web*\"}\n  \
        steps:\n    \
          - id: apply\n      \
            kind: salt\n      \
            payload: {action: apply, target: \"${params.target}\", state: web}\n    \
          - id: rollout\n      \
            kind: kubectl\n      \
            needs: [apply]\n      \
            payload: {action: rollout, selector: app=web}\n    \
          - id: notify\n      \
            kind: http\n      \
            needs: [rollout]\n      \
            payload: {url: \"https://hooks.example.com/deploy\", method: POST, body: \"done\"}\n\n\
        With --wait, the exit code tells how it ended: 0 succeeded, 3 a step failed, 4 cancelled."
    )]
    Run(RunArgs),
    /// Show a workflow: its steps as a tree in dependency order.
    #[command(visible_alias = "get")]
    Status(IdArg),
    /// List workflows, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Follow a workflow until it ends; exit 0 succeeded, 3 a step failed, 4 cancelled.
    Watch(IdArg),
    /// Cancel every unfinished step (running ones are asked to stop).
    Cancel(IdArg),
    /// Run the failed and cancelled steps again, and the steps that need them; the steps
    /// that succeeded keep their results.
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The YAML or JSON file; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,

    /// Fill ${params.KEY} in the file. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,

    /// Wait for the workflow to end; exit 0 if it succeeded, 3 if a step failed, 4 if
    /// cancelled.
    #[arg(short, long)]
    pub wait: bool,

    /// Print only the workflow id.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The workflow's id.
    #[arg(value_name = "ID", value_parser = parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::workflow_ids))]
    pub id: Uuid,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The workflow's id.
    #[arg(value_name = "ID", value_parser = parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::workflow_ids))]
    pub id: Uuid,

    /// Wait for the workflow to end, as `run --wait` does.
    #[arg(short, long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only workflows of this name.
    #[arg(long)]
    pub name: Option<String>,

    /// How many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

fn parse_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim()).map_err(|_| format!("'{text}' is not a workflow id (a UUID)"))
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

pub async fn run(client: &Client, ui: &Ui, args: WorkflowArgs) -> Result<(), CliError> {
    match args.command {
        WorkflowCommand::Run(args) => {
            let spec = read_file(&args.file, &args.set)?;
            let created = client.create_workflow(&spec).await?;
            if args.quiet {
                ui.line(&created.id.to_string())?;
            } else if ui.json() && !args.wait {
                return ui.print_json(&created);
            } else if !ui.json() {
                ui.line(&format!(
                    "workflow {} ({}) started: {} step{}",
                    created.id,
                    output::inline(&created.name),
                    created.steps.len(),
                    if created.steps.len() == 1 { "" } else { "s" }
                ))?;
            }
            if args.wait {
                return wait(client, ui, created.id, !args.quiet).await;
            }
            Ok(())
        }
        WorkflowCommand::Status(arg) => {
            let workflow = client.workflow(arg.id).await?;
            print_one(ui, &workflow)
        }
        WorkflowCommand::List(args) => {
            let page = client
                .workflows(&WorkflowQuery {
                    name: args.name,
                    limit: Some(args.limit),
                    cursor: None,
                })
                .await?;
            print_list(ui, &page)
        }
        WorkflowCommand::Watch(arg) => wait(client, ui, arg.id, true).await,
        WorkflowCommand::Cancel(arg) => {
            let done = client.workflow_action(arg.id, "cancel").await?;
            if ui.json() {
                return ui.print_json(&done);
            }
            ui.line(&format!(
                "workflow {}: {} step{} cancelled; it is {}",
                arg.id,
                done.changed,
                if done.changed == 1 { "" } else { "s" },
                done.workflow.status
            ))
        }
        WorkflowCommand::Retry(args) => {
            let done = client.workflow_action(args.id, "retry").await?;
            if ui.json() && !args.wait {
                return ui.print_json(&done);
            }
            if !ui.json() {
                ui.line(&format!(
                    "workflow {}: {} step{} to run again",
                    args.id,
                    done.changed,
                    if done.changed == 1 { "" } else { "s" }
                ))?;
            }
            if args.wait {
                return wait(client, ui, args.id, true).await;
            }
            Ok(())
        }
    }
}

/// Reads a workflow file, filling `${params.KEY}` from `set` over the file's `params`.
fn read_file(path: &str, set: &[(String, String)]) -> Result<WorkflowSpec, CliError> {
    let text = super::read_file_arg(path)?;
    let bad = |e: &dyn std::fmt::Display| {
        CliError::Usage(format!(
            "{path}: not a workflow ({e}); see taskctl workflow run --help"
        ))
    };
    // YAML is a superset of JSON: one parser reads both.
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(&e))?;
    let mut document: Value = serde_json::to_value(yaml).map_err(|e| bad(&e))?;
    let mut params: BTreeMap<String, Value> = match document
        .as_object_mut()
        .and_then(|fields| fields.remove("params"))
    {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(fields)) => fields.into_iter().collect(),
        Some(_) => return Err(bad(&"params: must be a map of names to values")),
    };
    for (key, value) in set {
        params.insert(key.clone(), Value::String(value.clone()));
    }
    let mut used = std::collections::BTreeSet::new();
    fill_params(&mut document, &params, &mut used)
        .map_err(|e| CliError::Usage(format!("{path}: {e}")))?;
    if let Some((key, _)) = set.iter().find(|(key, _)| !used.contains(key)) {
        return Err(CliError::Usage(format!(
            "--set {key}: {path} has no ${{params.{key}}}"
        )));
    }
    serde_json::from_value(document).map_err(|e| bad(&e))
}

const PARAM: &str = "${params.";

/// Replaces `${params.KEY}` in every string of `value`: a string that is one reference
/// becomes the parameter's value, one inside a longer string its text.
fn fill_params(
    value: &mut Value,
    params: &BTreeMap<String, Value>,
    used: &mut std::collections::BTreeSet<String>,
) -> Result<(), String> {
    match value {
        Value::String(text) if text.contains(PARAM) => {
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            let mut whole = None;
            let mut first = true;
            while let Some(start) = rest.find(PARAM) {
                out.push_str(&rest[..start]);
                let after = &rest[start + PARAM.len()..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("'{}' is not closed with '}}'", &rest[start..]))?;
                let key = &after[..end];
                let param = params.get(key).ok_or_else(|| {
                    format!(
                        "${{params.{key}}} is not set: give --set {key}=VALUE, or a default under params:"
                    )
                })?;
                used.insert(key.to_owned());
                if first && start == 0 && end + 1 == after.len() {
                    whole = Some(param.clone());
                }
                first = false;
                match param {
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *value = whole.unwrap_or(Value::String(out));
        }
        Value::Array(items) => {
            for item in items {
                fill_params(item, params, used)?;
            }
        }
        Value::Object(fields) => {
            for item in fields.values_mut() {
                fill_params(item, params, used)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn counts_text(workflow: &Workflow) -> String {
    let total: u32 = workflow.counts.values().sum();
    let parts: Vec<String> = TaskStatus::ALL
        .iter()
        .filter_map(|status| {
            workflow
                .counts
                .get(status.as_str())
                .map(|n| format!("{n} {status}"))
        })
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn print_one(ui: &Ui, workflow: &Workflow) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_json(workflow);
    }
    let now = Utc::now();
    let stamp = |at: Option<DateTime<Utc>>| {
        at.map_or_else(
            || "-".to_owned(),
            |at| format!("{} ({})", at.to_rfc3339(), output::relative(at, now)),
        )
    };
    ui.line(&format!("Workflow:  {}", workflow.id))?;
    ui.line(&format!("Name:      {}", workflow.name))?;
    ui.line(&format!("Status:    {}", workflow.status))?;
    ui.line(&format!("Created:   {}", stamp(Some(workflow.created_at))))?;
    ui.line(&format!("Finished:  {}", stamp(workflow.finished_at)))?;
    ui.line(&format!("Steps:     {}", counts_text(workflow)))?;
    ui.line("")?;
    let mut headers = vec!["STEP", "STATUS", "DURATION", "ATTEMPTS", "ERROR"];
    if ui.wide() {
        headers.extend(["KIND", "TASK", "NEEDS"]);
    }
    let mut table = ui.table(&headers);
    for (prefix, step) in workflow.tree() {
        let error = step
            .last_error
            .as_deref()
            .filter(|_| step.status != TaskStatus::Succeeded)
            .map_or_else(|| "-".to_owned(), |e| output::excerpt(e, 70));
        let mut row = vec![
            output::cell(format!("{prefix}{}", step.id)),
            ui.status_cell(step.status),
            output::cell(output::span(step.started_at, step.finished_at, now)),
            output::cell(format!("{}/{}", step.attempts, step.max_attempts)),
            output::cell(error),
        ];
        if ui.wide() {
            row.extend([
                output::cell(&step.kind),
                output::cell(step.task_id),
                output::cell(if step.needs.is_empty() {
                    "-".to_owned()
                } else {
                    step.needs.join(",")
                }),
            ]);
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}

fn print_list(ui: &Ui, page: &taskplane_api::WorkflowList) -> Result<(), CliError> {
    if ui.json() {
        return ui.print_collection(page, &page.workflows);
    }
    if page.workflows.is_empty() {
        eprintln!("no workflows yet: taskctl workflow run -f FILE");
        return Ok(());
    }
    let mut table = ui.table(&["ID", "NAME", "STATUS", "STEPS", "AGE", "DURATION"]);
    let now = Utc::now();
    for workflow in &page.workflows {
        let total: u32 = workflow.counts.values().sum();
        let succeeded = workflow.counts.get("succeeded").copied().unwrap_or(0);
        table.add_row(vec![
            output::cell(workflow.id),
            output::cell(&workflow.name),
            output::cell(workflow.status),
            output::cell(format!("{succeeded}/{total}")),
            output::cell(output::age(workflow.created_at, now)),
            output::cell(output::span(
                Some(workflow.created_at),
                workflow.finished_at,
                now,
            )),
        ]);
    }
    ui.print_table(&table)
}

/// How often the workflow is read in full while following its events, in case one was
/// missed; and how often it is polled when the server offers no event stream.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Follows workflow `id` until it ends, printing a line per step change (with `lines`,
/// for people; one event per line with jsonl), and answers how it ended by exit code.
pub async fn wait(client: &Client, ui: &Ui, id: Uuid, lines: bool) -> Result<(), CliError> {
    let query = EventQuery {
        workflow: Some(id),
        ..EventQuery::default()
    };
    // Subscribe before the first read, so no change falls between the two.
    let mut stream = client.events(&query, None).await.ok();
    let mut workflow = client.workflow(id).await?;
    let people = lines && !ui.json();
    let mut seen: HashMap<Uuid, (TaskStatus, u32)> = HashMap::new();
    report(ui, people, &workflow, &mut seen)?;
    let mut reconcile = tokio::time::interval(if stream.is_some() {
        RECONCILE_EVERY
    } else {
        POLL_EVERY
    });
    reconcile.reset();
    while !workflow.status.is_terminal() {
        let next_event = async {
            match stream.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = next_event => match event {
                Some(Ok(event)) => {
                    // Steps change in bursts: take every event already here, then read the
                    // workflow once.
                    let mut event = Some(event);
                    while let Some(next) = event {
                        if ui.format == crate::cli::OutputFormat::Jsonl {
                            ui.json_line(&next)?;
                        }
                        event = match stream.as_mut() {
                            Some(stream) => {
                                match tokio::time::timeout(Duration::ZERO, stream.next()).await {
                                    Ok(Some(Ok(next))) => Some(next),
                                    _ => None,
                                }
                            }
                            None => None,
                        };
                    }
                    workflow = client.workflow(id).await?;
                    report(ui, people, &workflow, &mut seen)?;
                }
                Some(Err(_)) | None => {
                    let last = stream.as_ref().and_then(|s| s.last_seq);
                    stream = client.events(&query, last).await.ok();
                    if stream.is_none() {
                        reconcile = tokio::time::interval(POLL_EVERY);
                    }
                }
            },
            _ = reconcile.tick() => {
                workflow = client.workflow(id).await?;
                report(ui, people, &workflow, &mut seen)?;
            }
        }
    }
    if ui.format == crate::cli::OutputFormat::Json {
        ui.print_json(&workflow)?;
    } else if people {
        ui.line(&format!(
            "workflow {} {} in {}",
            workflow.id,
            workflow.status,
            output::span(Some(workflow.created_at), workflow.finished_at, Utc::now())
        ))?;
    }
    outcome(&workflow)
}

/// Prints a line for each step whose status or attempt changed since `seen` (only with
/// `people`; `seen` is kept up to date either way).
fn report(
    ui: &Ui,
    people: bool,
    workflow: &Workflow,
    seen: &mut HashMap<Uuid, (TaskStatus, u32)>,
) -> Result<(), CliError> {
    let now = Utc::now();
    for step in &workflow.steps {
        let state = (step.status, step.attempts);
        if seen.insert(step.task_id, state) == Some(state) || !people {
            continue;
        }
        let mut text = format!(
            "{} step {} {}",
            now.format("%H:%M:%S"),
            output::inline(&step.id),
            step.status
        );
        match step.status {
            TaskStatus::Running | TaskStatus::Retrying => {
                text.push_str(&format!(
                    " (attempt {}/{})",
                    step.attempts, step.max_attempts
                ));
            }
            s if s.is_terminal() && step.started_at.is_some() => {
                text.push_str(&format!(
                    " in {}",
                    output::span(step.started_at, step.finished_at, now)
                ));
            }
            _ => {}
        }
        if matches!(
            step.status,
            TaskStatus::Failed | TaskStatus::Retrying | TaskStatus::Cancelled
        ) && let Some(error) = &step.last_error
        {
            text.push_str(&format!(": {}", output::excerpt(error, 100)));
        }
        ui.line(&text)?;
    }
    Ok(())
}

/// Exit 0 when the workflow succeeded, 3 when a step failed, 4 when it was cancelled.
fn outcome(workflow: &Workflow) -> Result<(), CliError> {
    let first = |status: TaskStatus| workflow.steps.iter().find(|s| s.status == status);
    match workflow.status {
        WorkflowStatus::Failed => {
            let detail = first(TaskStatus::Failed).map_or_else(String::new, |step| {
                format!(
                    ": step {} (task {}) failed: {}",
                    step.id,
                    step.task_id,
                    step.last_error.as_deref().unwrap_or("no error recorded")
                )
            });
            Err(CliError::TaskFailed(format!(
                "workflow {} failed{detail}",
                workflow.id
            )))
        }
        WorkflowStatus::Cancelled => Err(CliError::TaskCancelled(format!(
            "workflow {} was cancelled",
            workflow.id
        ))),
        WorkflowStatus::Succeeded | WorkflowStatus::Running => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskplane_api::WorkflowStepState;

    fn fill(value: Value, params: &[(&str, Value)]) -> Result<Value, String> {
        let params: BTreeMap<String, Value> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut value = value;
        let mut used = std::collections::BTreeSet::new();
        fill_params(&mut value, &params, &mut used)?;
        Ok(value)
    }

    #[test]
    fn params_fill_whole_strings_with_values_and_text_inside_strings() {
        let out = fill(
            json!({"n": "${params.n}", "url": "https://${params.host}/x", "keep": "${steps.a.result}"}),
            &[("n", json!(3)), ("host", json!("web1"))],
        );
        assert_eq!(
            out,
            Ok(json!({"n": 3, "url": "https://web1/x", "keep": "${steps.a.result}"}))
        );
        let missing = fill(json!(["${params.nope}"]), &[]);
        assert!(missing.is_err_and(|e| e.contains("--set nope=VALUE")));
    }

    fn step(id: &str, needs: &[&str]) -> WorkflowStepState {
        WorkflowStepState {
            id: id.to_owned(),
            task_id: Uuid::nil(),
            kind: "echo".to_owned(),
            status: TaskStatus::Queued,
            needs: needs.iter().map(|n| (*n).to_owned()).collect(),
            attempts: 0,
            max_attempts: 3,
            started_at: None,
            finished_at: None,
            last_error: None,
        }
    }

    #[test]
    fn the_tree_shows_each_step_once_under_its_first_need() {
        let steps = vec![
            step("a", &[]),
            step("d", &["b", "c"]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("e", &[]),
        ];
        let workflow = Workflow {
            id: Uuid::nil(),
            name: "w".to_owned(),
            status: WorkflowStatus::Running,
            created_at: Utc::now(),
            finished_at: None,
            counts: BTreeMap::new(),
            steps,
        };
        let lines: Vec<String> = workflow
            .tree()
            .into_iter()
            .map(|(prefix, step)| format!("{prefix}{}", step.id))
            .collect();
        assert_eq!(lines, vec!["a", "├─ b", "│  └─ d", "└─ c", "e"]);
    }
}
