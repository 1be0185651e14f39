//! Command-line flags and environment variables of `taskd`, checked before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The Taskplane daemon.
///
/// With no flags, taskd is a complete platform in one process: the HTTP API and a worker on an
/// embedded SQLite database (./taskd.db) that is also the queue, on 127.0.0.1:7070.
#[derive(Debug, Parser)]
#[command(name = "taskd", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database schema and exit.
    Migrate,
    /// Ask a running taskd whether it is healthy: exit 0 if it answers 2xx, 1 otherwise (for
    /// container health checks, where no curl is installed).
    Health {
        /// The probe to ask.
        #[arg(long, default_value = "http://127.0.0.1:7070/health")]
        url: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The API and a worker in one process.
    All,
    /// Only the HTTP API.
    Api,
    /// Only a worker; /health and /ready stay served for probes.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    pub fn runs_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    pub fn runs_worker(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which roles this process runs.
    #[arg(
        long,
        env = "TASKD_ROLE",
        value_enum,
        default_value = "all",
        global = true
    )]
    pub role: Role,

    /// HTTP address. Port 0 picks a free port (the log says which).
    #[arg(
        long,
        env = "TASKD_LISTEN",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    pub listen: SocketAddr,

    /// Where task state lives: sqlite://PATH or postgres://user:pass@host:5432/db.
    #[arg(
        long,
        env = "TASKD_DATABASE_URL",
        default_value = "sqlite://taskd.db",
        global = true
    )]
    pub database: String,

    /// How work is delivered: `db` (the database is the queue) or amqp://… (RabbitMQ).
    #[arg(long, env = "TASKD_BROKER_URL", default_value = "db", global = true)]
    pub broker: String,

    /// Worker slots: how many tasks this process runs at once.
    #[arg(long, env = "TASKD_CONCURRENCY", default_value_t = default_concurrency(), value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Queues this worker consumes, comma-separated.
    #[arg(
        long,
        env = "TASKD_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,

    /// Allow the `shell` kind (it runs commands as the taskd user).
    #[arg(long, env = "TASKD_ENABLE_SHELL")]
    pub enable_shell: bool,

    /// Allow the `salt` and `kubectl` kinds (they run salt-call/salt/salt-ssh and kubectl
    /// as the taskd user).
    #[arg(long, env = "TASKD_ENABLE_PROVISIONING")]
    pub enable_provisioning: bool,

    /// The shortest backoff bound between attempts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// The longest backoff between attempts.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub retry_max: Duration,

    /// How long SIGTERM waits for running tasks before stopping and requeueing them.
    #[arg(long, env = "TASKD_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,

    /// How long a worker's claim on a task lasts without renewal. A worker renews its leases
    /// every third of this; the tasks of a worker that dies run again once it has passed.
    #[arg(long, env = "TASKD_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,

    /// Finished tasks (and their output) are deleted this long after they finish.
    /// Idempotency keys last as long as their task.
    #[arg(long, env = "TASKD_RETENTION", default_value = "7days", value_parser = parse_duration)]
    pub retention: Duration,

    /// Log format; text is the default.
    #[arg(
        long,
        env = "TASKD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Log level or filter (e.g. `debug`, `taskd=debug,sqlx=warn`); overrides RUST_LOG.
    #[arg(long, env = "TASKD_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
}

impl RunArgs {
    /// Checks what clap cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        if self.broker != "db" && !self.broker.starts_with("amqp://") {
            return Err(format!(
                "--broker {}: use db (the database is the queue) or amqp://user:pass@host:5672/vhost",
                crate::store::redact_url(&self.broker)
            ));
        }
        if !self.database.starts_with("sqlite:")
            && !self.database.starts_with("postgres://")
            && !self.database.starts_with("postgresql://")
        {
            return Err(format!(
                "--database {}: use sqlite://PATH or postgres://user:pass@host:5432/db",
                crate::store::redact_url(&self.database)
            ));
        }
        if self.queues.is_empty() || self.queues.iter().any(|q| q.trim().is_empty()) {
            return Err("--queues: give at least one queue name, e.g. --queues default".into());
        }
        if self.retry_base > self.retry_max {
            return Err("--retry-base must not be longer than --retry-max".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err("--lease must be at least 1s".into());
        }
        Ok(())
    }
}

fn default_concurrency() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 64) as u32
}

/// Parses `500ms`, `30s`, `10m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}); try 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["taskd"]).expect("parses");
        assert_eq!(cli.run.role, Role::All);
        assert_eq!(cli.run.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(cli.run.database, "sqlite://taskd.db");
        assert_eq!(cli.run.broker, "db");
        assert_eq!(cli.run.queues, vec!["default".to_owned()]);
        assert!(!cli.run.enable_shell);
        assert_eq!(cli.run.retry_base, Duration::from_secs(1));
        assert_eq!(cli.run.retry_max, Duration::from_secs(600));
        assert_eq!(cli.run.grace, Duration::from_secs(30));
        assert_eq!(cli.run.retention, Duration::from_secs(7 * 24 * 3600));
        assert!(cli.run.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["taskd", "--role", "boss"]).is_err());
        assert!(Cli::try_parse_from(["taskd", "--grace", "soon"]).is_err());
        assert!(Cli::try_parse_from(["taskd", "--concurrency", "0"]).is_err());
        let cli = Cli::try_parse_from(["taskd", "--broker", "nats://u:pw@h/"]).expect("parses");
        let err = cli.run.validate().expect_err("not a broker taskd knows");
        assert!(!err.contains("pw"), "{err}");
        let cli =
            Cli::try_parse_from(["taskd", "--database", "mysql://u:pw@h/db"]).expect("parses");
        let err = cli.run.validate().expect_err("not a database taskd knows");
        assert!(!err.contains("pw"), "{err}");
        let cli = Cli::try_parse_from(["taskd", "--broker", "amqp://u:pw@h/%2f"]).expect("parses");
        assert!(cli.run.validate().is_ok());
        let cli = Cli::try_parse_from(["taskd", "--queues", "a,b"]).expect("parses");
        assert_eq!(cli.run.queues, vec!["a".to_owned(), "b".to_owned()]);
    }
}
