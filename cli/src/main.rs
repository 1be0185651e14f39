//! `taskctl`: the Taskplane control-plane CLI. Parses everything first, then runs one
//! command; every error ends here as one line on stderr and the contract's exit code.

mod cli;
mod commands;
mod complete;
mod config;
mod error;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::Cli;
use error::CliError;

fn main() -> ExitCode {
    reset_sigpipe();
    // `COMPLETE=bash taskctl …` is the shell asking for completions; answer and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(CliError::Other(format!("cannot start: {e}"))),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(error),
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
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    let tip = lines
        .find(|l| l.starts_with("tip:"))
        .map(|tip| format!(" ({tip})"))
        .unwrap_or_default();
    eprintln!("{first}{tip} (see taskctl --help)");
    ExitCode::from(error::code::USAGE)
}

fn report(error: CliError) -> ExitCode {
    if let Some(message) = error.message() {
        eprintln!("error: {message}");
    }
    ExitCode::from(error.exit_code())
}

/// Restores the default SIGPIPE action so that `taskctl list | head` ends quietly instead of
/// failing on a closed pipe.
fn reset_sigpipe() {
    // SAFETY: setting a signal's disposition to its default touches no memory of ours and is
    // done before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
