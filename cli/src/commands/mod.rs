//! One module per subcommand; each has its clap `Args` and one `run` function.

pub mod audit;
pub mod bench;
pub mod cancel;
pub mod completions;
pub mod config;
pub mod dlq;
pub mod events;
pub mod kinds;
pub mod list;
pub mod logs;
pub mod provision;
pub mod queues;
pub mod retry;
pub mod schedule;
pub mod status;
pub mod submit;
pub mod top;
pub mod ui;
pub mod watch;
pub mod worker;
pub mod workers;
pub mod workflow;

use std::future::Future;
use std::time::Duration;

use taskplane_api::{Client, Error as ApiError, Task, Timeouts};
use uuid::Uuid;

use crate::cli::{Cli, Command};
use crate::config::Context;
use crate::error::{CliError, describe};
use crate::output::{self, Ui};

/// The server when neither a flag, the environment nor a context names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// How long taskctl waits: a connection is given up after 5 s, an ordinary request after
/// `--request-timeout` (0: never), and a stream after 60 s without a byte. taskd sends a
/// heartbeat on its streams every 15 s or less, so only a dead or hung server is that quiet.
pub fn timeouts(request: Duration) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        request: (!request.is_zero()).then_some(request),
        stream_idle: Some(Duration::from_secs(60)),
    }
}

/// Parses a task id argument.
pub fn parse_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim()).map_err(|_| format!("'{text}' is not a task id (a UUID)"))
}

/// The text of a `-f FILE` argument; `-` reads stdin.
pub fn read_file_arg(path: &str) -> Result<String, CliError> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::Usage(format!("-f -: cannot read stdin: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("-f {path}: {e}")))
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ui = Ui::from_args(&cli.global);
    let cli = match cli.command {
        Command::Completions(args) => return completions::run(args),
        Command::Config(args) => {
            return config::run(&ui, cli.global.server, cli.global.ca_cert, args);
        }
        _ => cli,
    };
    let client = connect(
        cli.global.server.clone(),
        cli.global.context.as_deref(),
        cli.global.token.clone(),
        cli.global.ca_cert.clone(),
        timeouts(cli.global.request_timeout),
    )?;
    match cli.command {
        Command::Submit(args) => submit::run(&client, &ui, args).await,
        Command::Status(args) => status::run(&client, &ui, args).await,
        Command::List(args) => list::run(&client, &ui, args).await,
        Command::Cancel(args) => cancel::run(&client, &ui, args).await,
        Command::Retry(args) => retry::run(&client, &ui, args).await,
        Command::Watch(args) => watch::run(&client, &ui, args).await,
        Command::Logs(args) => logs::run(&client, &ui, args).await,
        Command::Dlq(args) => dlq::run(&client, &ui, args).await,
        Command::Events(args) => events::run(&client, &ui, args).await,
        Command::Schedule(args) => schedule::run(&client, &ui, args).await,
        Command::Workflow(args) => workflow::run(&client, &ui, args).await,
        Command::Bench(args) => bench::run(&client, &ui, args).await,
        Command::Completions(_) | Command::Config(_) => unreachable!("handled before connecting"),
        Command::Top(args) => {
            let color = !cli.global.no_color && std::env::var_os("NO_COLOR").is_none();
            top::run(&client, color, args).await
        }
        Command::Queues(args) => queues::run(&client, &ui, args).await,
        Command::Workers(args) => workers::run(&client, &ui, args).await,
        Command::Kinds(args) => kinds::run(&client, &ui, args).await,
        Command::Ui(args) => ui::run(&client, &ui, args).await,
        Command::Audit(args) => audit::run(&client, &ui, args).await,
        Command::Worker(args) => worker::run(&client, &ui, args).await,
        Command::Provision(args) => provision::run(&client, &ui, args).await,
    }
}

/// The client for these settings. Everything is checked before the first request: flags and
/// environment win over the context, the context over the defaults. Shell completion uses
/// it too, with the environment's values.
pub fn connect(
    server: Option<String>,
    context: Option<&str>,
    token: Option<String>,
    ca_cert: Option<std::path::PathBuf>,
    timeouts: Timeouts,
) -> Result<Client, CliError> {
    let settings = crate::config::Config::load()?;
    let context = settings.context(context)?;
    let server = server
        .or_else(|| context.as_ref().map(|(_, c)| c.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match (token, &context) {
        (Some(token), _) => Some(token),
        (
            None,
            Some((
                _,
                Context {
                    token_file: Some(file),
                    ..
                },
            )),
        ) => Some(crate::config::read_token(file)?),
        _ => None,
    };
    let ca_cert = ca_cert.or_else(|| context.as_ref().and_then(|(_, c)| c.ca_cert.clone()));
    let ca_cert_name = ca_cert.as_ref().map(|p| p.display().to_string());
    let ca_pem = ca_cert
        .map(|path| {
            std::fs::read(&path)
                .map_err(|e| CliError::Usage(format!("--ca-cert {}: {e}", path.display())))
        })
        .transpose()?;
    // A request that makes tasks starts a trace of its own, or, inside a traced program (a
    // shell task, with TRACEPARENT set), continues that one.
    let traceparent = std::env::var("TRACEPARENT")
        .ok()
        .and_then(|value| taskplane_api::valid_traceparent(&value));
    Client::with_options(&server, token, ca_pem.as_deref(), timeouts)
        .map(|client| client.with_traceparent(traceparent))
        .map_err(|e| match e {
            taskplane_api::Error::Certificate(reason) => CliError::Usage(format!(
                "--ca-cert {}: {reason}",
                ca_cert_name.as_deref().unwrap_or("?")
            )),
            other => CliError::Usage(format!("--server: {other}")),
        })
}

/// Runs `show` once, or with `watch` every `every` until interrupted, redrawing in place on
/// a terminal (like `watch(1)`).
pub async fn refresh<F, Fut>(ui: &Ui, watch: bool, every: Duration, show: F) -> Result<(), CliError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    if !watch {
        return show().await;
    }
    let in_place =
        ui.progress && !ui.json() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        if in_place {
            // Clear the screen and go home, then draw.
            ui.raw_line("\x1b[2J\x1b[H")?;
        }
        show().await?;
        if !in_place && !ui.json() {
            ui.line("")?;
        }
        tokio::time::sleep(every).await;
    }
}

/// Applies `action` to each id in turn, printing one line per task (or one JSON array), and
/// one error line per id that failed. Any failure makes the command exit 1; the others still
/// happen.
pub async fn for_each_id<F, Fut>(
    ui: &Ui,
    ids: &[Uuid],
    action: F,
    describe_ok: fn(&Task) -> String,
) -> Result<(), CliError>
where
    F: Fn(Uuid) -> Fut,
    Fut: Future<Output = Result<Task, ApiError>>,
{
    let mut done = Vec::new();
    let mut failed = false;
    for &id in ids {
        match action(id).await {
            Ok(task) => {
                if !ui.json() {
                    ui.line(&describe_ok(&task))?;
                }
                done.push(task);
            }
            // Unreachable is the same for every id: stop at the first.
            Err(error @ ApiError::Unreachable { .. }) => return Err(error.into()),
            Err(error) => {
                // The server's messages name the task already.
                let message = describe(&error);
                if message.contains(&id.to_string()) {
                    output::error(&message);
                } else {
                    output::error(&format!("{id}: {message}"));
                }
                failed = true;
            }
        }
    }
    if ui.json() {
        ui.print_collection(&done, &done)?;
    }
    if failed {
        Err(CliError::AlreadyReported)
    } else {
        Ok(())
    }
}
