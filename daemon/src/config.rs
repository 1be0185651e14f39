//! Command-line flags and environment variables of `taskd`, checked before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Bearer tokens for a taskd with auth on.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token with this taskd's key settings (the same --jwt-* flags and variables) and
    /// print only the token.
    #[command(after_help = "Example:\n  \
        TASKD_JWT_SECRET_FILE=/etc/taskplane/jwt.secret taskd token issue --scope tasks.read,tasks.write --ttl 30d --subject ci")]
    Issue {
        /// Comma-separated: tasks.read (reads, streams), tasks.write (submit, cancel, retry),
        /// admin (everything, including the shell, salt and kubectl kinds and dlq purge),
        /// worker (the lease protocol only: remote workers of declared kinds).
        #[arg(long, required = true, value_delimiter = ',', value_parser = parse_scope)]
        scope: Vec<crate::auth::Scope>,

        /// How long the token is valid.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,

        /// Who the token is for (the `sub` claim), e.g. a person or a CI job.
        #[arg(long, default_value = "taskctl")]
        subject: String,
    },
}

fn parse_scope(text: &str) -> Result<crate::auth::Scope, String> {
    crate::auth::Scope::parse(text.trim()).ok_or_else(|| {
        format!("'{text}' is not a scope; use tasks.read, tasks.write, admin or worker")
    })
}

/// The JWT settings, shared by the server and `taskd token issue`. The HS256 secret comes
/// from a file or the `TASKD_JWT_SECRET` variable (never a flag: argv is visible to every
/// user of the host).
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// Turn auth on with HS256: a file holding the shared secret (at least 32 bytes). The
    /// TASKD_JWT_SECRET variable can hold the secret itself instead.
    #[arg(
        long,
        env = "TASKD_JWT_SECRET_FILE",
        value_name = "PATH",
        global = true
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// From TASKD_JWT_SECRET (read in main).
    #[arg(skip)]
    pub jwt_secret: Option<String>,

    /// Turn auth on with RS256 or EdDSA: the public key (PEM) tokens are checked with. The
    /// key type picks the one algorithm accepted.
    #[arg(
        long,
        env = "TASKD_JWT_PUBLIC_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub jwt_public_key_file: Option<PathBuf>,

    /// `taskd token issue` with RS256 or EdDSA: the private key (PEM) to sign with.
    #[arg(
        long,
        env = "TASKD_JWT_PRIVATE_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Accept only tokens with this `iss` (and mint them with it).
    #[arg(long, env = "TASKD_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Accept only tokens with this `aud` (and mint them with it).
    #[arg(long, env = "TASKD_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
}

impl AuthArgs {
    /// The settings [`crate::auth`] works from.
    pub fn config(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            jwt_secret_file: self.jwt_secret_file.clone(),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key_file: self.jwt_public_key_file.clone(),
            jwt_private_key_file: self.jwt_private_key_file.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
        }
    }
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

    /// How work is delivered: `db` (the database is the queue), amqp://… (RabbitMQ) or
    /// redis://… / rediss://… (Redis streams; rediss is TLS).
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

    /// Kinds that remote workers serve (`taskctl worker`, the Python SDK, anything speaking the
    /// lease protocol), comma-separated, e.g. resize,report. A submit of a kind that is
    /// neither built in nor declared is refused. Give every API process the same list.
    #[arg(long, env = "TASKD_KINDS", value_delimiter = ',', value_name = "KIND")]
    pub kinds: Vec<String>,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Listen on a non-loopback address without auth. Anyone who can reach the port can then
    /// submit and cancel tasks; use it only behind something that authenticates.
    #[arg(long, env = "TASKD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// With auth on, also require a token (any scope) for /ready, /metrics and
    /// /api/v1/openapi.json. /health always stays open.
    #[arg(long, env = "TASKD_PRIVATE_PROBES")]
    pub private_probes: bool,

    /// Writes (POST) per second per client (per token, else per address; IPv6 per /64);
    /// past it, 429 with Retry-After. Off by default.
    #[arg(long, env = "TASKD_WRITE_RATE_LIMIT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub write_rate_limit: Option<u32>,

    /// Longest time a request may take before it is answered 503 (streams are not limited).
    #[arg(long, env = "TASKD_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long a client may take to send a request's headers before the connection is
    /// closed (slow clients cannot hold connections open).
    #[arg(long, env = "TASKD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// How long a connection may stay open with no request in flight and nothing sent
    /// before it is closed (streams send heartbeats, so they stay open).
    #[arg(long, env = "TASKD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Browser origins allowed to call the API (CORS), comma-separated; none by default.
    #[arg(
        long,
        env = "TASKD_CORS_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origin: Vec<String>,

    /// Host names this API answers to besides addresses and `localhost`, comma-separated (e.g.
    /// the name a proxy or SSH tunnel forwards as `Host`). On a loopback address, and on any
    /// address without auth, a request for any other name is refused (403
    /// host_not_allowed), so a web page cannot reach taskd by rebinding its own name.
    #[arg(
        long,
        env = "TASKD_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub allowed_host: Vec<String>,

    /// The largest request body, e.g. 1MiB, 512KiB, 4MiB (413 past it).
    #[arg(long, env = "TASKD_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// Do not serve the web dashboard (/ui/); the API stays as it is.
    #[arg(long, env = "TASKD_NO_UI", conflicts_with = "ui_readonly")]
    pub no_ui: bool,

    /// Serve the web dashboard without its actions (cancel, retry, pause, submit…): a wall
    /// display or a window for people who only watch. The API still takes what tokens allow.
    #[arg(long, env = "TASKD_UI_READONLY")]
    pub ui_readonly: bool,

    /// Allow the `shell` kind (it runs commands as the taskd user).
    #[arg(long, env = "TASKD_ENABLE_SHELL")]
    pub enable_shell: bool,

    /// Variables of taskd's environment that shell tasks also get, comma-separated (they
    /// otherwise see only PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ and
    /// TMPDIR, plus their payload's `env`).
    #[arg(
        long,
        env = "TASKD_SHELL_PASS_ENV",
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = parse_env_name
    )]
    pub shell_pass_env: Vec<String>,

    /// Allow the `salt` and `kubectl` kinds (they run salt-call/salt/salt-ssh and kubectl
    /// as the taskd user).
    #[arg(long, env = "TASKD_ENABLE_PROVISIONING")]
    pub enable_provisioning: bool,

    /// Let the `http` kind reach every address: loopback, private, link-local (cloud
    /// metadata) and the other special ranges it refuses by default.
    #[arg(long, env = "TASKD_HTTP_ALLOW_PRIVATE")]
    pub http_allow_private: bool,

    /// Let the `http` kind reach these ranges, which it refuses by default, comma-separated
    /// (e.g. 10.20.0.0/16,fd00::/8; a bare address is one host).
    #[arg(long, env = "TASKD_HTTP_ALLOW_CIDRS", value_delimiter = ',', value_name = "CIDR", value_parser = crate::executors::parse_cidr)]
    pub http_allow_cidr: Vec<ipnet::IpNet>,

    /// The shortest backoff bound between attempts.
    #[arg(long, env = "TASKD_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// The longest backoff between attempts.
    #[arg(long, env = "TASKD_RETRY_MAX", default_value = "10m", value_parser = parse_duration)]
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

    /// Audit log entries (operator actions) are deleted this long after they were made.
    #[arg(long, env = "TASKD_AUDIT_RETENTION", default_value = "90days", value_parser = parse_duration)]
    pub audit_retention: Duration,

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
    /// The kinds `--kinds` declares (an empty `TASKD_KINDS=` declares none).
    pub fn declared_kinds(&self) -> Vec<String> {
        self.kinds
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Checks what clap cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        if crate::broker::redis::is_redis_url(&self.broker) {
            crate::broker::redis::check_url(&self.broker)
                .map_err(|error| format!("--broker {error}"))?;
        } else if self.broker != "db" && !self.broker.starts_with("amqp://") {
            return Err(format!(
                "--broker {}: use db (the database is the queue), amqp://user:pass@host:5672/vhost \
                 or redis://[user:pass@]host:6379[/db]",
                crate::util::redact_url(&self.broker)
            ));
        }
        if !self.database.starts_with("sqlite:")
            && !self.database.starts_with("postgres://")
            && !self.database.starts_with("postgresql://")
        {
            return Err(format!(
                "--database {}: use sqlite://PATH or postgres://user:pass@host:5432/db",
                crate::util::redact_url(&self.database)
            ));
        }
        if self.queues.is_empty() || self.queues.iter().any(|q| q.trim().is_empty()) {
            return Err("--queues: give at least one queue name, e.g. --queues default".into());
        }
        crate::domain::kinds::check_declared(&self.declared_kinds())?;
        if self.retry_base > self.retry_max {
            return Err("--retry-base must not be longer than --retry-max".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err("--lease must be at least 1s".into());
        }
        if self.idle_timeout < Duration::from_secs(1)
            || self.header_timeout < Duration::from_millis(100)
        {
            return Err(
                "--idle-timeout must be at least 1s and --header-timeout at least 100ms".into(),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err("--request-timeout must be at least 100ms".into());
        }
        for origin in &self.cors_origin {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "--cors-origin {origin}: give origins like https://ops.example.com (or *)"
                ));
            }
        }
        Ok(())
    }
}

/// 64 whatever the cores: a slot is a task on the async runtime, and the built-in kinds
/// mostly wait (on a peer, a timer, a child process). With a few slots per core a worker of
/// short tasks spent its time between rounds of claims and commits (8 slots: 2,600 noop
/// tasks/s embedded; 32: 6,900/s; 128: 8,200/s on 2 cores). Lower it for CPU-heavy shells.
fn default_concurrency() -> u32 {
    64
}

/// Parses `1048576`, `512KiB`, `1MiB` (binary units; KB and MB are read the same).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size; try 1MiB or 512KiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("'{text}' is not a size; try 1MiB or 512KiB")),
    };
    let size = number
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))?;
    if size < 1024 {
        return Err(format!("'{text}': the body limit must be at least 1KiB"));
    }
    Ok(size)
}

/// Checks a variable name for `--shell-pass-env`. An empty one is passed on (and ignored),
/// so `TASKD_SHELL_PASS_ENV=` in an env file means none.
fn parse_env_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.contains(['=', '\0']) {
        return Err(format!("'{text}' is not an environment variable name"));
    }
    Ok(name.to_owned())
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
        assert_eq!(cli.run.max_body, 1024 * 1024);
        assert_eq!(cli.run.request_timeout, Duration::from_secs(30));
        assert!(cli.run.write_rate_limit.is_none() && cli.run.cors_origin.is_empty());
        assert!(cli.run.validate().is_ok());
    }

    #[test]
    fn sizes_and_scopes_parse() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(
            parse_size("1GiB").is_err() && parse_size("10").is_err() && parse_size("x").is_err()
        );
        let cli = Cli::try_parse_from([
            "taskd",
            "token",
            "issue",
            "--scope",
            "tasks.read,admin",
            "--ttl",
            "1h",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Token(TokenCommand::Issue { ref scope, .. }))
                if scope == &[crate::auth::Scope::Read, crate::auth::Scope::Admin]
        ));
        assert!(Cli::try_parse_from(["taskd", "token", "issue", "--scope", "root"]).is_err());
        let cli =
            Cli::try_parse_from(["taskd", "--cors-origin", "ops.example.com"]).expect("parses");
        assert!(cli.run.validate().is_err());
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
        for good in [
            "redis://127.0.0.1:6379",
            "redis://:pw@h:6379/2",
            "rediss://u:pw@h",
        ] {
            let cli = Cli::try_parse_from(["taskd", "--broker", good]).expect("parses");
            assert!(cli.run.validate().is_ok(), "{good}");
        }
        for bad in [
            "redis://u:pw@h:notaport",
            "redis://u:pw@h:6379/nine",
            "redis://",
        ] {
            let cli = Cli::try_parse_from(["taskd", "--broker", bad]).expect("parses");
            let err = cli.run.validate().expect_err(bad);
            assert!(!err.contains("pw"), "{err}");
            assert!(err.starts_with("--broker redis://"), "{err}");
        }
        let cli = Cli::try_parse_from(["taskd", "--queues", "a,b"]).expect("parses");
        assert_eq!(cli.run.queues, vec!["a".to_owned(), "b".to_owned()]);
        let cli = Cli::try_parse_from(["taskd", "--shell-pass-env", "AWS_PROFILE,KUBECONFIG"])
            .expect("parses");
        assert_eq!(cli.run.shell_pass_env, ["AWS_PROFILE", "KUBECONFIG"]);
        assert!(Cli::try_parse_from(["taskd", "--shell-pass-env", "A=1"]).is_err());
        assert!(Cli::try_parse_from(["taskd", "--shell-pass-env", ""]).is_ok());
    }

    #[test]
    fn http_allow_flags_parse() {
        let cli = Cli::try_parse_from(["taskd"]).expect("parses");
        assert!(!cli.run.http_allow_private && cli.run.http_allow_cidr.is_empty());
        let cli = Cli::try_parse_from(["taskd", "--http-allow-cidr", "10.0.0.0/8,127.0.0.2"])
            .expect("parses");
        let nets: Vec<String> = cli
            .run
            .http_allow_cidr
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.2/32"]);
        assert!(Cli::try_parse_from(["taskd", "--http-allow-cidr", "intranet"]).is_err());
    }
}
