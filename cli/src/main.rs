//! `taskctl`: the Taskplane control-plane CLI. Parses everything first, then runs one
//! command; every error ends here as one line on stderr and the contract's exit code.

mod cli;
mod commands;
mod complete;
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
    let cli = Cli::parse();
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
