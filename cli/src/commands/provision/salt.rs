//! `taskctl provision salt apply|ping`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use taskplane_api::Client;
use taskplane_api::kinds::{SaltAction, SaltMode, SaltPayload};
use taskplane_provisioning::salt::{self, ApplyReport, PingReport, Report, SaltError, StateStatus};

use super::{Activity, SubmitOptions, duration};
use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct SaltArgs {
    #[command(subcommand)]
    pub command: SaltCommand,
}

#[derive(Debug, Subcommand)]
pub enum SaltCommand {
    /// Apply states (`state.apply`) and summarize the result per host.
    Apply(ApplyArgs),
    /// Check which minions answer (`test.ping`).
    Ping(PingArgs),
}

/// How to reach Salt, shared by apply and ping.
#[derive(Debug, Args)]
pub struct Reach {
    /// Which minions, as a Salt target (glob) [default: *]. Not used with --local.
    #[arg(short, long, conflicts_with = "local")]
    pub target: Option<String>,

    /// Run masterless on this host: `salt-call --local` with a temporary minion config.
    #[arg(long)]
    pub local: bool,

    /// Reach the targets over SSH with `salt-ssh` instead of a master.
    #[arg(long, conflicts_with = "local")]
    pub ssh: bool,

    /// With --local: the state tree [default: ./provisioning/salt for apply].
    #[arg(long, value_name = "DIR", requires = "local")]
    pub file_root: Option<PathBuf>,

    /// With --local: a pillar tree (e.g. ./provisioning/pillar, the example) [default:
    /// none; --pillar values and the states' defaults apply].
    #[arg(long, value_name = "DIR", requires = "local")]
    pub pillar_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    taskctl provision salt apply --local --state taskplane --test --pillar taskplane.source=file://$PWD/target/release\n  \
    taskctl provision salt apply --target 'db*' --state postgresql\n  \
    taskctl provision salt apply --local --state taskplane --pillar taskplane.source=https://example.com/taskplane/0.1.0 --pillar taskplane.source_hash=https://example.com/taskplane/0.1.0/SHA256SUMS\n  \
    taskctl provision salt apply --local --pillar-root provisioning/pillar --test")]
pub struct ApplyArgs {
    #[command(flatten)]
    pub reach: Reach,

    /// The states to apply, comma-separated [default: the highstate from top.sls].
    #[arg(short, long, value_name = "STATES")]
    pub state: Option<String>,

    /// Dry run: report what would change and change nothing.
    #[arg(long)]
    pub test: bool,

    /// Pillar data: `key=value` (a string) or `key:=JSON`; dots nest (`taskplane.config.listen=0.0.0.0:7070`).
    /// Repeatable.
    #[arg(long = "pillar", value_name = "KEY=VALUE")]
    pub pillar: Vec<String>,

    #[command(flatten)]
    pub submit: SubmitOptions,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub reach: Reach,

    #[command(flatten)]
    pub submit: SubmitOptions,
}

pub async fn run(client: &Client, ui: &Ui, args: SaltArgs) -> Result<(), CliError> {
    let (payload, submit) = match args.command {
        SaltCommand::Apply(args) => {
            let mut payload = base_payload(&args.reach, SaltAction::Apply)?;
            payload.state = args.state;
            payload.test = args.test;
            payload.pillar = parse_pillar(&args.pillar).map_err(CliError::Usage)?;
            (payload, args.submit)
        }
        SaltCommand::Ping(args) => (base_payload(&args.reach, SaltAction::Ping)?, args.submit),
    };
    salt::validate(&payload).map_err(|e| CliError::Usage(e.to_string()))?;
    if submit.submit {
        let value = serde_json::to_value(&payload)
            .map_err(|e| CliError::Other(format!("cannot encode the task: {e}")))?;
        return submit.send(client, ui, "salt", value).await;
    }

    let what = describe(&payload);
    let activity = Activity::start(ui, what, true);
    let result = salt::run(&payload, |_, line| {
        activity.line(&line);
        async {}
    })
    .await;
    activity.finish();
    let report = result.map_err(|e| match e {
        SaltError::Invalid(m) => CliError::Usage(m),
        other => CliError::Other(other.to_string()),
    })?;
    if ui.json() {
        ui.print_json(&report)?;
    } else {
        match &report {
            Report::Apply(apply) => print_apply(ui, apply)?,
            Report::Ping(ping) => print_ping(ui, ping)?,
        }
    }
    if report.succeeded() {
        Ok(())
    } else {
        Err(CliError::TaskFailed(format!(
            "salt: {}",
            report.failure_summary()
        )))
    }
}

/// The payload's mode, target and trees from the flags. Paths become absolute so that a
/// submitted run finds them too (on a worker of the same host).
fn base_payload(reach: &Reach, action: SaltAction) -> Result<SaltPayload, CliError> {
    let mode = if reach.local {
        SaltMode::Local
    } else if reach.ssh {
        SaltMode::Ssh
    } else {
        SaltMode::Master
    };
    let mut payload = SaltPayload {
        action,
        mode,
        target: reach.target.clone(),
        ..SaltPayload::default()
    };
    if mode == SaltMode::Local {
        let file_root = match (&reach.file_root, action) {
            (Some(dir), _) => Some(dir.clone()),
            // ping needs no states.
            (None, SaltAction::Ping) => None,
            (None, SaltAction::Apply) => {
                let root = Path::new("provisioning/salt");
                if !root.is_dir() {
                    return Err(CliError::Usage(
                        "no --file-root given and ./provisioning/salt is not here (run from the repository root, or give --file-root DIR)"
                            .to_owned(),
                    ));
                }
                Some(root.to_path_buf())
            }
        };
        payload.file_root = file_root.map(|d| absolute(&d, "--file-root")).transpose()?;
        payload.pillar_root = reach
            .pillar_root
            .as_ref()
            .map(|p| absolute(p, "--pillar-root"))
            .transpose()?;
    }
    Ok(payload)
}

fn absolute(dir: &Path, flag: &str) -> Result<String, CliError> {
    taskplane_provisioning::existing_dir(dir)
        .map(|path| path.display().to_string())
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

/// `key=value` / `key:=JSON` pairs, with dotted keys nesting, into one pillar object.
fn parse_pillar(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut pillar = Map::new();
    for pair in pairs {
        let (key, value) = super::super::submit::parse_param("--pillar", pair)?;
        let mut parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("--pillar {pair}: empty part in the key '{key}'"));
        }
        let leaf = parts.pop().unwrap_or_default();
        let mut node = &mut pillar;
        for part in parts {
            let entry = node
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match entry {
                Value::Object(map) => map,
                _ => return Err(format!("--pillar {pair}: '{part}' already holds a value")),
            };
        }
        node.insert(leaf.to_owned(), value);
    }
    Ok(pillar)
}

/// "salt-call state.apply taskplane (test)" for the spinner.
fn describe(payload: &SaltPayload) -> String {
    let program = salt::program(payload.mode);
    let target = match payload.mode {
        SaltMode::Local => String::new(),
        _ => format!(" {}", payload.target.as_deref().unwrap_or("*")),
    };
    match payload.action {
        SaltAction::Ping => format!("{program}{target} test.ping"),
        SaltAction::Apply => format!(
            "{program}{target} state.apply {}{}",
            payload.state.as_deref().unwrap_or("(highstate)"),
            if payload.test { " (test)" } else { "" }
        ),
    }
}

fn print_apply(ui: &Ui, report: &ApplyReport) -> Result<(), CliError> {
    let changed = if report.test {
        "WOULD CHANGE"
    } else {
        "CHANGED"
    };
    let mut table = ui.table(&["HOST", "OK", changed, "FAILED", "DURATION"]);
    for host in &report.hosts {
        let failed = output::cell(host.failed + host.errors.len());
        let failed = if ui.color && !host.succeeded() {
            failed.fg(comfy_table::Color::Red)
        } else {
            failed
        };
        table.add_row(vec![
            output::cell(&host.host),
            output::cell(host.ok),
            output::cell(host.changed),
            failed,
            output::cell(duration(host.duration_ms)),
        ]);
    }
    ui.print_table(&table)?;

    // What changed (or would), then what failed with Salt's comment: the lines people
    // scroll back for.
    let mut first = true;
    for host in &report.hosts {
        for state in &host.states {
            let shown = match state.status {
                StateStatus::Changed => true,
                StateStatus::Ok => ui.wide(),
                StateStatus::Failed => false,
            };
            if shown {
                if first {
                    ui.line("")?;
                    first = false;
                }
                let verb = match (state.status, report.test) {
                    (StateStatus::Ok, _) => "ok",
                    (_, true) => "would change",
                    _ => "changed",
                };
                ui.line(&format!(
                    "{verb:<12} {}  {} ({}) {}",
                    host.host, state.id, state.function, state.name
                ))?;
            }
        }
    }
    let mut first = true;
    for host in report.hosts.iter().filter(|h| !h.succeeded()) {
        if first {
            ui.line("")?;
            first = false;
        }
        for error in &host.errors {
            // A render error carries Salt's whole traceback; -o wide shows it.
            let shown = if ui.wide() {
                error.clone()
            } else {
                salt::brief(error)
            };
            ui.line(&format!("FAILED       {}  {shown}", host.host))?;
        }
        for state in host
            .states
            .iter()
            .filter(|s| s.status == StateStatus::Failed)
        {
            ui.line(&format!(
                "FAILED       {}  {} ({}) {}",
                host.host, state.id, state.function, state.name
            ))?;
            for line in state.comment.lines() {
                ui.line(&format!("             {line}"))?;
            }
        }
    }
    Ok(())
}

fn print_ping(ui: &Ui, report: &PingReport) -> Result<(), CliError> {
    let mut table = ui.table(&["HOST", "RESPONDING"]);
    for host in &report.hosts {
        table.add_row(vec![
            host.host.clone(),
            if host.responding { "yes" } else { "no" }.to_owned(),
        ]);
    }
    ui.print_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pillar_keys_nest_on_dots() {
        let pillar = parse_pillar(&[
            "taskplane.version=0.1.0".to_owned(),
            "taskplane.roles:=[\"api\"]".to_owned(),
            "debug:=true".to_owned(),
        ])
        .expect("valid");
        assert_eq!(
            Value::Object(pillar),
            json!({"taskplane": {"version": "0.1.0", "roles": ["api"]}, "debug": true})
        );
        assert!(parse_pillar(&["a=1".to_owned(), "a.b=2".to_owned()]).is_err());
        assert!(parse_pillar(&["a..b=1".to_owned()]).is_err());
        assert!(parse_pillar(&["novalue".to_owned()]).is_err());
    }
}
