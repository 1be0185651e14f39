//! `taskctl provision`: drive SaltStack and kubectl from the same terminal, with progress
//! while they run and readable summaries after; `--submit` queues the same run as a task.

mod k8s;
mod salt;

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use taskplane_api::{Client, SubmitTask};

use crate::error::CliError;
use crate::output::Ui;

pub use k8s::K8sArgs;
pub use salt::SaltArgs;

/// Drive SaltStack and kubectl.
///
/// `salt apply` runs states masterless on this host (`--local`), through a master, or over
/// SSH, and ends with a per-host table of states ok / changed / failed. `k8s` applies, diffs,
/// inspects, rolls out, scales and tails the platform's Kubernetes deployment. Either can run
/// here or, with `--submit`, as a queued task on a worker started with
/// `--enable-provisioning`: logged, retried and audited like any task.
///
/// Exit codes: 0 when everything succeeded; 3 when the run finished but reported failures
/// (a failed state, a host that did not answer, a stalled or late rollout); 1 when the tool
/// could not run (not installed, a kubectl error); 2 for bad arguments.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    taskctl provision salt apply --local --state taskplane --test --pillar taskplane.source=file://$PWD/target/release\n  \
    taskctl provision salt apply --target 'web*' --state taskplane --pillar taskplane.source=https://example.com/taskplane/0.1.0\n  \
    taskctl provision salt ping --target '*'\n  \
    taskctl provision k8s diff k8s/overlays/prod\n  \
    taskctl provision k8s apply k8s/overlays/prod && taskctl provision k8s rollout\n  \
    taskctl provision k8s scale worker=5\n  \
    taskctl provision k8s logs worker -f")]
pub struct ProvisionArgs {
    #[command(subcommand)]
    pub command: ProvisionCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProvisionCommand {
    /// SaltStack: apply states, ping minions.
    Salt(SaltArgs),
    /// Kubernetes through kubectl: apply, diff, status, rollout, scale, logs.
    K8s(K8sArgs),
}

/// Queue the run as a task instead of running it here. The default runs it here.
#[derive(Debug, Default, Args)]
pub struct SubmitOptions {
    /// Submit the run as a task (kind `salt` or `kubectl`) to the server; a worker started
    /// with --enable-provisioning runs it. Prints the task id.
    #[arg(long)]
    pub submit: bool,

    /// With --submit: follow the task to the end; exit 0 if it succeeded, 3 if it failed.
    #[arg(long, requires = "submit")]
    pub wait: bool,

    /// With --submit: the queue to submit to.
    #[arg(long, requires = "submit", value_name = "QUEUE")]
    pub queue: Option<String>,

    /// With --submit: the task's time limit per attempt (e.g. 30m) [default: the server's].
    #[arg(long, requires = "submit", value_name = "DURATION", value_parser = super::submit::parse_duration)]
    pub task_timeout: Option<Duration>,
}

impl SubmitOptions {
    /// Submits `payload` as a task of `kind`, as `taskctl submit` would.
    async fn send(
        &self,
        client: &Client,
        ui: &Ui,
        kind: &str,
        payload: Value,
    ) -> Result<(), CliError> {
        let request = SubmitTask {
            kind: kind.to_owned(),
            payload: Some(payload),
            queue: self.queue.clone(),
            timeout_secs: self.task_timeout.map(|t| t.as_secs().max(1)),
            ..SubmitTask::default()
        };
        super::submit::send(client, ui, &request, self.wait, false).await
    }
}

pub async fn run(client: &Client, ui: &Ui, args: ProvisionArgs) -> Result<(), CliError> {
    match args.command {
        ProvisionCommand::Salt(args) => salt::run(client, ui, args).await,
        ProvisionCommand::K8s(args) => k8s::run(client, ui, args).await,
    }
}

/// A spinner with the elapsed time on stderr, shown only on a terminal. Off a terminal the
/// tool's own log lines are passed through to stderr instead, so CI logs keep them.
struct Activity {
    bar: Option<ProgressBar>,
    what: String,
}

impl Activity {
    /// Starts the spinner (when `spin` and stderr is a terminal).
    fn start(ui: &Ui, what: String, spin: bool) -> Activity {
        let bar = (spin && ui.progress).then(|| {
            let bar = crate::output::progress().add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Activity { bar, what }
    }

    /// One line of the tool's output: the spinner shows it, or stderr gets it.
    fn line(&self, line: &str) {
        let line = line.trim_end();
        // Python's tracebacks and warnings are noise here: the summary (or the one-line
        // error) says what failed; -o json keeps the whole report.
        if line.trim().is_empty()
            || line.starts_with(char::is_whitespace)
            || line.starts_with("Traceback (most recent call last)")
            || line.contains("DeprecationWarning")
        {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(format!(
                "{}: {}",
                self.what,
                crate::output::excerpt(line.trim(), 100)
            )),
            None => eprintln!("{line}"),
        }
    }

    /// Prints a line above the spinner (or on stderr).
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A human duration for summaries: 850 ms, 12.4 s, 3m05s.
fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12.4), "12 ms");
        assert_eq!(duration(12_400.0), "12.4 s");
        assert_eq!(duration(185_000.0), "3m05s");
    }
}
