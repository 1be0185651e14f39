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
    init_logging(&cli.run);
    // One TLS crypto provider for every client in the process (the http kind).
    let _ = rustls::crypto::ring::default_provider().install_default();

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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("taskd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &RunArgs) {
    use tracing_subscriber::EnvFilter;
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match args.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
