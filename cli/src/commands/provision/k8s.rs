//! `taskctl provision k8s apply|diff|status|rollout|scale|logs`, over kubectl.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use comfy_table::Color;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use taskplane_api::Client;
use taskplane_api::kinds::{KubectlAction, KubectlPayload};
use taskplane_provisioning::kubectl::{
    self, Deployment, KubectlError, LogsOptions, Outcome, Status, Target,
};
use taskplane_provisioning::runner::Stream;

use super::{Activity, SubmitOptions};
use crate::error::CliError;
use crate::output::{self, Ui, age};

#[derive(Debug, Args)]
pub struct K8sArgs {
    /// The kubeconfig context to use [default: kubectl's current context]. (`--context`
    /// names a taskctl context.)
    #[arg(long, global = true, value_name = "NAME")]
    pub kube_context: Option<String>,

    /// The namespace [default: the kubeconfig context's, as with kubectl]. apply and diff
    /// need none: the manifests name theirs (taskplane-dev for the dev overlay, taskplane
    /// for prod).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,

    #[command(subcommand)]
    pub command: K8sCommand,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Apply a kustomize directory (`kubectl apply -k`) and count what changed.
    Apply(ApplyArgs),
    /// Render a kustomize directory (`kubectl kustomize`) and diff it against the cluster.
    Diff(DiffArgs),
    /// The platform's deployments and pods, as tables.
    Status(StatusArgs),
    /// Wait until every deployment has rolled out, with a progress bar for each.
    Rollout(RolloutArgs),
    /// Set replica counts: `scale worker=5 api=2`.
    Scale(ScaleArgs),
    /// Print (or follow) the logs of every pod of a component, each line prefixed by its pod.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The kustomize directory.
    #[arg(default_value = kubectl::DEFAULT_DIR, value_name = "DIR")]
    pub dir: String,

    /// Ask the server what would happen and change nothing (`--dry-run=server`).
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub submit: SubmitOptions,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The kustomize directory.
    #[arg(default_value = kubectl::DEFAULT_DIR, value_name = "DIR")]
    pub dir: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Which objects, as a label selector.
    #[arg(short = 'l', long, default_value = kubectl::DEFAULT_SELECTOR)]
    pub selector: String,

    /// Look in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Which deployments, as a label selector.
    #[arg(short = 'l', long, default_value = kubectl::DEFAULT_SELECTOR)]
    pub selector: String,

    /// Wait for the matching deployments of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,

    /// Give up after this long (exit 3).
    #[arg(long, default_value = "5m", value_parser = crate::commands::submit::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub submit: SubmitOptions,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `DEPLOYMENT=REPLICAS`; `worker` and `api` name the platform's deployments.
    #[arg(required = true, value_name = "DEPLOYMENT=N", value_parser = parse_scale)]
    pub counts: Vec<(String, u32)>,

    #[command(flatten)]
    pub submit: SubmitOptions,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `worker` or `api` [default: both].
    #[arg(value_parser = ["worker", "api"])]
    pub component: Option<String>,

    /// Keep streaming new lines.
    #[arg(short, long)]
    pub follow: bool,

    /// Lines of recent output per pod.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,

    /// Only lines newer than this (e.g. 10m, 1h).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
}

fn parse_scale(text: &str) -> Result<(String, u32), String> {
    let (name, count) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}': expected DEPLOYMENT=N, e.g. worker=5"))?;
    if name.is_empty() || name.starts_with('-') {
        return Err(format!("'{text}': name a deployment, e.g. worker=5"));
    }
    let count = count
        .parse()
        .map_err(|_| format!("'{text}': '{count}' is not a replica count"))?;
    Ok((name.to_owned(), count))
}

pub async fn run(client: &Client, ui: &Ui, args: K8sArgs) -> Result<(), CliError> {
    let base = KubectlPayload {
        context: args.kube_context.clone(),
        namespace: args.namespace.clone(),
        ..KubectlPayload::new(KubectlAction::Status)
    };
    let mut target = Target {
        context: args.kube_context,
        namespace: args.namespace,
        all_namespaces: false,
    };
    match args.command {
        K8sCommand::Apply(a) => {
            let payload = KubectlPayload {
                action: KubectlAction::Apply,
                dir: Some(kustomize_dir(&a.dir, a.submit.submit)?),
                dry_run: a.dry_run,
                ..base
            };
            operate(client, ui, &target, payload, &a.submit).await
        }
        K8sCommand::Diff(a) => {
            let payload = KubectlPayload {
                action: KubectlAction::Diff,
                dir: Some(kustomize_dir(&a.dir, false)?),
                ..base
            };
            operate(client, ui, &target, payload, &SubmitOptions::default()).await
        }
        K8sCommand::Status(a) => {
            target.all_namespaces = a.all_namespaces;
            let payload = KubectlPayload {
                action: KubectlAction::Status,
                selector: Some(a.selector),
                all_namespaces: a.all_namespaces,
                ..base
            };
            operate(client, ui, &target, payload, &SubmitOptions::default()).await
        }
        K8sCommand::Rollout(a) => {
            target.all_namespaces = a.all_namespaces;
            let payload = KubectlPayload {
                action: KubectlAction::Rollout,
                selector: Some(a.selector),
                all_namespaces: a.all_namespaces,
                timeout_secs: Some(a.timeout.as_secs().max(1)),
                ..base
            };
            operate(client, ui, &target, payload, &a.submit).await
        }
        K8sCommand::Scale(a) => {
            for (name, replicas) in a.counts {
                let payload = KubectlPayload {
                    action: KubectlAction::Scale,
                    deployment: Some(name),
                    replicas: Some(replicas),
                    ..base.clone()
                };
                operate(client, ui, &target, payload, &a.submit).await?;
            }
            Ok(())
        }
        K8sCommand::Logs(a) => {
            let options = LogsOptions {
                component: a.component,
                follow: a.follow,
                tail: a.tail,
                since: a.since,
            };
            logs(&target, &options).await
        }
    }
}

/// Checks that a kustomize directory is there (here; a submitted run's worker checks its
/// own), and makes it absolute for a submitted run.
fn kustomize_dir(dir: &str, submitted: bool) -> Result<String, CliError> {
    let absolute = taskplane_provisioning::existing_dir(Path::new(dir)).map_err(|e| {
        CliError::Usage(format!(
            "{e} (run from the repository root, or give the kustomize directory)"
        ))
    })?;
    Ok(if submitted {
        absolute.display().to_string()
    } else {
        dir.to_owned()
    })
}

/// Checks `payload`, then submits it or runs it here and shows the outcome.
async fn operate(
    client: &Client,
    ui: &Ui,
    target: &Target,
    payload: KubectlPayload,
    submit: &SubmitOptions,
) -> Result<(), CliError> {
    let (_, op) = kubectl::plan(&payload).map_err(|e| CliError::Usage(e.to_string()))?;
    if submit.submit {
        let value = serde_json::to_value(&payload)
            .map_err(|e| CliError::Other(format!("cannot encode the task: {e}")))?;
        return submit.send(client, ui, "kubectl", value).await;
    }
    // A rollout shows a bar per deployment; a spinner beside them would fight for the lines.
    let rollout = matches!(op, kubectl::Op::Rollout { .. });
    let activity = Activity::start(ui, spinner_text(&op), !rollout);
    let mut progress = RolloutProgress::new(ui, rollout);
    let result = kubectl::run(
        target,
        &op,
        |stream, line| {
            // apply's and scale's own lines are the output; anything else is kubectl's
            // commentary (warnings), kept on stderr.
            match (stream, &op) {
                (Stream::Stdout, kubectl::Op::Apply { .. } | kubectl::Op::Scale { .. })
                    if !ui.json() =>
                {
                    activity.println(&apply_line(ui, &line));
                }
                _ => activity.line(&line),
            }
            async {}
        },
        |deployments| progress.update(deployments),
    )
    .await;
    activity.finish();
    progress.finish();
    let outcome = result.map_err(|e| match e {
        KubectlError::Invalid(m) => CliError::Usage(m),
        KubectlError::Rollout(m) => CliError::TaskFailed(m),
        other => CliError::Other(other.to_string()),
    })?;
    if ui.json() {
        return ui.print_json(&outcome);
    }
    match outcome {
        Outcome::Applied { applied } => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &applied {
                let action = a.action.split_whitespace().next().unwrap_or("");
                *counts.entry(action).or_default() += 1;
            }
            let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
            eprintln!(
                "{} objects: {}",
                applied.len(),
                if summary.is_empty() {
                    "none".to_owned()
                } else {
                    summary.join(", ")
                }
            );
        }
        Outcome::Diff {
            changed,
            objects,
            diff,
        } => {
            for line in diff.lines() {
                // The line's own text is shown safe; the colour around it is ours.
                ui.raw_line(&diff_line(ui, &output::inline(line)))?;
            }
            if changed {
                eprintln!("{} objects differ: {}", objects.len(), objects.join(", "));
            } else {
                eprintln!("no differences: the cluster matches the manifests");
            }
        }
        Outcome::Status(status) => {
            print_status(ui, &status, target.all_namespaces)?;
            if status.deployments.is_empty() && status.pods.is_empty() {
                eprintln!(
                    "nothing of the platform here; try -n taskplane (prod) or -n taskplane-dev (dev), or -A for every namespace"
                );
            }
        }
        Outcome::RolledOut { deployments } => {
            let names: Vec<&str> = deployments.iter().map(|d| d.name.as_str()).collect();
            ui.line(&format!("rolled out: {}", names.join(", ")))?;
        }
        Outcome::Scaled {
            deployment,
            replicas,
        } => ui.line(&format!("deployment/{deployment} scaled to {replicas}"))?,
    }
    Ok(())
}

fn spinner_text(op: &kubectl::Op) -> String {
    match op {
        kubectl::Op::Apply { dir, dry_run } => format!(
            "kubectl apply -k {dir}{}",
            if *dry_run { " (server dry run)" } else { "" }
        ),
        kubectl::Op::Diff { dir } => format!("kubectl diff of {dir}"),
        kubectl::Op::Status { .. } => "kubectl get deployments,pods".to_owned(),
        kubectl::Op::Rollout { .. } => "waiting for the rollout".to_owned(),
        kubectl::Op::Scale {
            deployment,
            replicas,
        } => format!("kubectl scale deployment/{deployment} --replicas={replicas}"),
    }
}

/// `deployment.apps/x configured`, the action coloured by what it means.
fn apply_line(ui: &Ui, line: &str) -> String {
    let Some(applied) = kubectl::parse_apply_line(line) else {
        return line.to_owned();
    };
    if !ui.color {
        return line.to_owned();
    }
    let colour = match applied.action.split_whitespace().next() {
        Some("created") => "32",
        Some("configured") => "33",
        Some("unchanged") => "2",
        _ => "0",
    };
    format!("{} \x1b[{colour}m{}\x1b[0m", applied.object, applied.action)
}

fn diff_line(ui: &Ui, line: &str) -> String {
    if !ui.color {
        return line.to_owned();
    }
    let colour = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ")
    {
        "1"
    } else if line.starts_with('+') {
        "32"
    } else if line.starts_with('-') {
        "31"
    } else if line.starts_with("@@") {
        "36"
    } else {
        return line.to_owned();
    };
    format!("\x1b[{colour}m{line}\x1b[0m")
}

fn print_status(ui: &Ui, status: &Status, namespaces: bool) -> Result<(), CliError> {
    let now = Utc::now();
    let when = |t: Option<chrono::DateTime<Utc>>| t.map(|t| age(t, now)).unwrap_or_default();
    let with_namespace = |mut headers: Vec<&'static str>| {
        if namespaces {
            headers.insert(0, "NAMESPACE");
        }
        headers
    };
    let mut table = ui.table(&with_namespace(vec![
        "DEPLOYMENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
    ]));
    for d in &status.deployments {
        let mut row = vec![
            d.name.clone(),
            format!("{}/{}", d.ready, d.desired),
            d.updated.to_string(),
            d.available.to_string(),
            when(d.created_at),
        ];
        if namespaces {
            row.insert(0, d.namespace.clone());
        }
        table.add_row(row);
    }
    ui.print_table(&table)?;
    ui.line("")?;
    let mut headers = with_namespace(vec!["POD", "READY", "STATUS", "RESTARTS", "AGE"]);
    if ui.wide() {
        headers.push("NODE");
    }
    let mut table = ui.table(&headers);
    for p in &status.pods {
        let healthy = matches!(p.status.as_str(), "Running" | "Succeeded");
        let status_cell = output::cell(&p.status);
        let status_cell = match (ui.color, healthy) {
            (true, true) => status_cell.fg(Color::Green),
            (true, false) => status_cell.fg(Color::Red),
            _ => status_cell,
        };
        let mut row = vec![
            output::cell(&p.name),
            output::cell(format!("{}/{}", p.ready, p.containers)),
            status_cell,
            output::cell(p.restarts),
            output::cell(when(p.created_at)),
        ];
        if namespaces {
            row.insert(0, output::cell(&p.namespace));
        }
        if ui.wide() {
            row.push(output::cell(p.node.as_deref().unwrap_or("<none>")));
        }
        table.add_row(row);
    }
    ui.print_table(&table)
}

/// A bar per deployment on a terminal (available of desired replicas); off a terminal, one
/// line whenever a deployment's counts change.
struct RolloutProgress {
    multi: Option<MultiProgress>,
    bars: BTreeMap<String, ProgressBar>,
    last: BTreeMap<String, String>,
    active: bool,
}

impl RolloutProgress {
    fn new(ui: &Ui, active: bool) -> RolloutProgress {
        RolloutProgress {
            multi: (active && ui.progress).then(|| output::progress().clone()),
            bars: BTreeMap::new(),
            last: BTreeMap::new(),
            active,
        }
    }

    fn update(&mut self, deployments: &[Deployment]) {
        if !self.active {
            return;
        }
        for d in deployments {
            let text = format!(
                "{} updated, {} available of {}{}",
                d.updated,
                d.available,
                d.desired,
                if d.rolled_out() { " ✓" } else { "" }
            );
            match &self.multi {
                Some(multi) => {
                    let bar = self.bars.entry(d.name.clone()).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new(u64::from(d.desired)));
                        bar.set_style(
                            ProgressStyle::with_template("{prefix:24} [{bar:30}] {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        bar.set_prefix(d.name.clone());
                        bar
                    });
                    bar.set_length(u64::from(d.desired.max(1)));
                    bar.set_position(u64::from(d.available.min(d.updated)));
                    bar.set_message(text);
                }
                None => {
                    if self.last.get(&d.name) != Some(&text) {
                        eprintln!("{}: {text}", d.name);
                        self.last.insert(d.name.clone(), text);
                    }
                }
            }
        }
    }

    fn finish(self) {
        for bar in self.bars.values() {
            bar.finish();
        }
    }
}

/// Streams `kubectl logs` straight through: stdout to stdout, stderr to stderr.
async fn logs(target: &Target, options: &LogsOptions) -> Result<(), CliError> {
    kubectl::logs(target, options, |stream, line| {
        match stream {
            Stream::Stdout => println!("{line}"),
            Stream::Stderr => eprintln!("{line}"),
        }
        async {}
    })
    .await
    .map_err(|e| CliError::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_arguments() {
        assert_eq!(parse_scale("worker=5"), Ok(("worker".into(), 5)));
        assert!(parse_scale("worker").is_err());
        assert!(parse_scale("worker=-1").is_err());
        assert!(parse_scale("=3").is_err());
    }
}
