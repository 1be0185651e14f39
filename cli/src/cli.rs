//! The command line: global flags and the subcommands. Doc comments here are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::bench::BenchArgs;
use crate::commands::completions::CompletionsArgs;
use crate::commands::config::ConfigArgs;
use crate::commands::provision::ProvisionArgs;
use crate::commands::top::TopArgs;
use crate::commands::{
    cancel::CancelArgs, dlq::DlqArgs, events::EventsArgs, kinds::KindsArgs, list::ListArgs,
    logs::LogsArgs, queues::QueuesArgs, retry::RetryArgs, schedule::ScheduleArgs,
    status::StatusArgs, submit::SubmitArgs, watch::WatchArgs, worker::WorkerArgs,
    workers::WorkersArgs, workflow::WorkflowArgs,
};

/// Drive and watch a Taskplane server from the terminal.
///
/// Submit tasks, follow them to the end, read their output, cancel and retry them. Every
/// command speaks JSON with `-o json` for scripts, and exits 0 on success, 1 on an error,
/// 2 on a usage error, 3 when a waited-for task failed, 4 when it was cancelled and 130
/// when interrupted (Ctrl-C). Control characters in task data and server messages are shown
/// (`^[` for ESC), never sent to the terminal, except with -o json/jsonl and `logs --raw`.
#[derive(Debug, Parser)]
#[command(name = "taskctl", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The taskd to talk to [default: the context's server, else http://127.0.0.1:7070].
    #[arg(long, env = "TASKCTL_SERVER", global = true)]
    pub server: Option<String>,

    /// A context from the config file (`taskctl config`) instead of the current one.
    #[arg(long, env = "TASKCTL_CONTEXT", global = true)]
    pub context: Option<String>,

    /// A bearer token for servers that require one.
    #[arg(long, env = "TASKCTL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Also trust the CA certificates in this PEM file (a private CA in front of taskd);
    /// certificates are always verified [default: the context's, if it names one].
    #[arg(long, env = "TASKCTL_CA_CERT", global = true, value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Output format: `table` for people (the default, piped or not); `wide` (a table with
    /// more columns); `json` for scripts (one document); `jsonl` (one compact object per
    /// line; streams always are); `id` (one id per line, for xargs).
    #[arg(short = 'o', long, value_enum, global = true)]
    pub output: Option<OutputFormat>,

    /// Never use colour (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// Print tables without their header row.
    #[arg(long, global = true)]
    pub no_headers: bool,

    /// Give up on a request that taskd has not answered within this long (e.g. 10s, 2m;
    /// 0 waits for ever). Streams (events, logs -f, watch, submit --wait, top) are not cut
    /// short by it: they end only when taskd sends nothing, not even a heartbeat, for 60s.
    #[arg(
        long,
        env = "TASKCTL_REQUEST_TIMEOUT",
        global = true,
        value_name = "DUR",
        default_value = "30s",
        value_parser = crate::commands::submit::parse_duration
    )]
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Wide,
    Json,
    Jsonl,
    Id,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a task.
    Submit(SubmitArgs),
    /// Show one task.
    Status(StatusArgs),
    /// List tasks, newest first.
    List(ListArgs),
    /// Cancel tasks: waiting ones at once, running ones by stopping their handler.
    Cancel(CancelArgs),
    /// Put failed or cancelled tasks back in their queue.
    Retry(RetryArgs),
    /// Follow tasks until every one has finished; the exit code tells how they ended.
    Watch(WatchArgs),
    /// Print a task's captured output.
    Logs(LogsArgs),
    /// The dead-letter set: list, retry or purge the tasks that failed every attempt.
    Dlq(DlqArgs),
    /// Tail task events as they happen.
    Events(EventsArgs),
    /// Recurring schedules: create, list, pause, trigger, preview and apply from a file.
    #[command(visible_alias = "schedules")]
    Schedule(ScheduleArgs),
    /// Workflows: steps that run once the steps they need have succeeded, from a file.
    #[command(visible_alias = "workflows")]
    Workflow(WorkflowArgs),
    /// Queue depth, counts by status and throughput; pause, resume and limit a queue.
    Queues(QueuesArgs),
    /// Live worker processes and how busy they are.
    Workers(WorkersArgs),
    /// Who did what: cancels, retries, purges, queue and schedule changes (admin).
    Audit(crate::commands::audit::AuditArgs),
    /// The kinds taskd accepts and the workers serving each.
    Kinds(KindsArgs),
    /// Serve declared kinds from this host: run a command for each task (the lease protocol).
    Worker(WorkerArgs),
    /// The live dashboard: queues, workers and tasks, with cancel and retry.
    Top(TopArgs),
    /// The web dashboard's address (a task's or a workflow's page), or open it.
    Ui(crate::commands::ui::UiArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
    /// Load-test a running taskd and report throughput and latency percentiles.
    Bench(BenchArgs),
    /// Named contexts (server and token file), like `kubectl config`.
    Config(ConfigArgs),
    /// Drive SaltStack and kubectl: apply states, ping minions, apply/diff/roll out/scale
    /// the Kubernetes deployment.
    Provision(ProvisionArgs),
}
