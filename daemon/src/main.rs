//! `taskd`: parses its configuration, sets up logging and the runtime, and hands over to
//! [`taskd::app`]. Errors end here as one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use taskd::app;
use taskd::config::{Cli, Command, LogFormat, RunArgs, TokenCommand};
use taskplane_provisioning::runner;

fn main() -> ExitCode {
    // taskd re-executes itself as the guard of every program a task runs (see the
    // provisioning crate's guard module); that process does nothing else.
    if let Some(code) = taskplane_provisioning::guard::run_if_requested() {
        return code;
    }
    // Not dumpable: processes of the same user (a shell task among them) cannot read this
    // one's memory or /proc/PID/environ, where the JWT secret and database password live.
    // Programs taskd starts are dumpable again (exec resets it) and get a filtered
    // environment.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let mut cli = Cli::parse();
    // The HS256 secret may come from the environment; never from argv (see AuthArgs).
    cli.run.auth.jwt_secret = std::env::var("TASKD_JWT_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(Command::Token(TokenCommand::Issue {
        scope,
        ttl,
        subject,
    })) = &cli.command
    {
        let request = taskd::auth::TokenRequest {
            scopes: scope.clone(),
            ttl: *ttl,
            subject: subject.clone(),
        };
        return match taskd::auth::issue(&cli.run.auth.config(), &request) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("taskd: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(message) = cli.run.validate() {
        eprintln!("taskd: {message}");
        return ExitCode::from(2);
    }
    // One TLS crypto provider for every client in the process (the http kind, the trace
    // exporter): installed before any of them is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let traces = match init_logging(&cli.run) {
        Ok(traces) => traces,
        Err(message) => {
            eprintln!("taskd: {message}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("taskd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Migrate) => app::migrate(&cli.run).await,
            Some(Command::Health { url }) => app::health(&url).await,
            Some(Command::Token(_)) => Ok(()),
            None => {
                // Every program this taskd runs (shell, salt, kubectl) goes through a guard:
                // this same binary. /proc/self/exe still names it after an upgrade replaced
                // the file on disk. Programs never see taskd's own TASKD_* settings.
                runner::contain(runner::Containment {
                    guard: "/proc/self/exe".into(),
                    private_env_prefix: "TASKD_".to_owned(),
                });
                app::serve(cli.run).await
            }
        }
    });
    // The runtime's tasks are done; the exporter's thread sends what is left.
    drop(runtime);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("taskd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (text or JSON), and spans to an OTLP collector when the standard
/// variables ask for it ([`taskd::telemetry`]).
fn init_logging(args: &RunArgs) -> Result<Option<taskd::telemetry::Traces>, String> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = match &args.log_level {
        Some(level) => EnvFilter::try_new(level).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    // sqlx warns about connect parameters it does not know with their values (a password
    // given as `?sslpassword=`): whatever the level asked for, those lines stay out.
    let filter = match "sqlx_postgres::options=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // A log reader that goes away (a closed pipe) must not take taskd with it: without
    // this, the subscriber reports the failed write with eprintln!, which panics.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let lines = match args.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            lines.with_ansi(ansi).boxed()
        }
        LogFormat::Json => lines.json().with_ansi(false).boxed(),
    };
    let (traces, spans) = match taskd::telemetry::start()? {
        Some((traces, layer)) => (Some(traces), Some(layer)),
        None => (None, None),
    };
    match spans {
        // The log level filters the log lines only: spans reach the exporter whatever it is
        // (taskd's own, at info, where the request, attempt, store and broker spans are).
        Some(spans) => {
            let spans = spans.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("taskd", tracing::Level::INFO),
            );
            tracing_subscriber::registry()
                .with(lines.with_filter(filter))
                .with(spans)
                .init();
        }
        // Without traces, one global filter, as before they existed (its callsite interest
        // is cached: a disabled line costs nothing).
        None => tracing_subscriber::registry()
            .with(lines)
            .with(filter)
            .init(),
    }
    Ok(traces)
}
