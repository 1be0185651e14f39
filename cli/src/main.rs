//! `taskctl`: the Taskplane control-plane CLI. Parses everything first, then runs one
//! command; every error ends here as one line on stderr and the contract's exit code, and
//! so does Ctrl-C (`taskctl: interrupted`, 130).

mod cli;
mod commands;
mod complete;
mod config;
mod error;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::CliError;

fn main() -> ExitCode {
    reset_sigpipe();
    // `COMPLETE=bash taskctl …` is the shell asking for completions; answer and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(error),
    };
    if matches!(cli.command, Command::Worker(_)) {
        // The agent writes each task's payload to its command's stdin: a command that exits
        // without reading it must cost an error on that write, not the agent its life.
        ignore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(CliError::Other(format!("cannot start: {e}"))),
    };
    match runtime.block_on(until_interrupted(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(error),
    }
}

/// Runs the command until it ends or the user presses Ctrl-C. Then the command is dropped
/// (which stops what it started: a provisioning tool's process group goes with it) after
/// its spinners and bars are wiped, so the terminal is left with one line and a clean
/// prompt. `top` reads Ctrl-C as a key in raw mode and restores the terminal itself, so it
/// is left alone.
async fn until_interrupted(cli: Cli) -> Result<(), CliError> {
    // `worker` drains on the first Ctrl-C (or SIGTERM) and stops on the second itself.
    if matches!(cli.command, Command::Top(_) | Command::Worker(_)) {
        return commands::run(cli).await;
    }
    let command = commands::run(cli);
    tokio::pin!(command);
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: Ctrl-C keeps its default effect.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut command => result,
        () = interrupt => {
            // A second Ctrl-C, while the command winds down, ends the process at once.
            default_action(libc::SIGINT);
            output::abandon_progress();
            Err(CliError::Interrupted)
        }
    }
}

/// Help and --version print as clap prints them; a usage error becomes one line (clap's own
/// message, with its tip when it has one) and exit code 2.
fn usage(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                error::code::USAGE
            } else {
                0
            },
        );
    }
    let text = error.render().to_string();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .peekable();
    let mut first = lines
        .next()
        .unwrap_or("error: invalid arguments")
        .to_owned();
    // "…were not provided:" lists the arguments on the lines below: they belong in the line.
    if first.ends_with(':') {
        let mut named = Vec::new();
        while let Some(item) = lines.next_if(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
        {
            named.push(item);
        }
        if !named.is_empty() {
            first = format!("{first} {}", named.join(", "));
        }
    }
    let tip = lines
        .find(|l| l.starts_with("tip:"))
        .map(|tip| format!(" ({tip})"))
        .unwrap_or_default();
    // The arguments may come from anywhere (a script passing task data on): shown, not sent.
    let line = taskplane_api::text::neutralize_line(&first);
    let tip = taskplane_api::text::neutralize_line(&tip);
    eprintln!("{line}{tip} (see taskctl --help)");
    ExitCode::from(error::code::USAGE)
}

fn report(error: CliError) -> ExitCode {
    if let CliError::Interrupted = error {
        output::interrupted();
    } else if let Some(message) = error.message() {
        output::error(&message);
    }
    ExitCode::from(error.exit_code())
}

/// Restores the default SIGPIPE action so that `taskctl list | head` ends quietly instead of
/// failing on a closed pipe.
fn reset_sigpipe() {
    default_action(libc::SIGPIPE);
}

/// Ignores SIGPIPE: a write to a closed pipe fails with EPIPE instead.
fn ignore_sigpipe() {
    // SAFETY: as in `default_action`: a disposition, no handler, no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Gives `signal` its default action again (for SIGPIPE and SIGINT: ending the process).
fn default_action(signal: libc::c_int) {
    // SAFETY: setting a signal's disposition to its default installs no handler and touches
    // no memory of ours; the kernel applies it to the whole process atomically, so other
    // threads running meanwhile are not affected in any way that could be unsound.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
    }
}
