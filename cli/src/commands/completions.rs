//! `taskctl completions SHELL` and the generation of `completions/` (scripts and man pages).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use crate::cli::Cli;
use crate::error::CliError;

/// Print the completion script for a shell. The script asks taskctl itself for candidates,
/// so task ids, queues and kinds complete from the current server (TASKCTL_SERVER).
///
/// Install: bash `source <(taskctl completions bash)` in ~/.bashrc; zsh
/// `source <(taskctl completions zsh)` in ~/.zshrc; fish
/// `taskctl completions fish > ~/.config/fish/completions/taskctl.fish`; PowerShell
/// `taskctl completions powershell | Out-String | Invoke-Expression` in $PROFILE; elvish
/// `eval (taskctl completions elvish | slurp)` in rc.elv.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, required_unless_present = "dir")]
    pub shell: Option<Shell>,
    /// Write every shell's script and the man pages into DIR instead (this is how the
    /// repository's completions/ directory is made).
    #[arg(long, value_name = "DIR", conflicts_with = "shell")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

impl Shell {
    const ALL: [Shell; 5] = [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Powershell,
        Shell::Elvish,
    ];

    fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
            Shell::Powershell => "powershell",
            Shell::Elvish => "elvish",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Shell::Bash => "taskctl.bash",
            Shell::Zsh => "_taskctl",
            Shell::Fish => "taskctl.fish",
            Shell::Powershell => "taskctl.ps1",
            Shell::Elvish => "taskctl.elv",
        }
    }
}

/// The registration script of `shell`, calling `taskctl` from the PATH.
pub fn script(shell: Shell) -> Result<Vec<u8>, CliError> {
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells
        .completer(shell.name())
        .ok_or_else(|| CliError::Other(format!("no completion support for {}", shell.name())))?;
    let mut buf = Vec::new();
    completer
        .write_registration("COMPLETE", "taskctl", "taskctl", "taskctl", &mut buf)
        .map_err(|e| CliError::Other(format!("cannot write the script: {e}")))?;
    Ok(buf)
}

pub fn run(args: CompletionsArgs) -> Result<(), CliError> {
    match (args.shell, args.dir) {
        (_, Some(dir)) => write_all(&dir),
        (Some(shell), None) => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&script(shell)?)
                .map_err(CliError::from)
        }
        (None, None) => Err(CliError::Usage("name a shell, or --dir".into())),
    }
}

/// Every script and every man page, into `dir` and `dir/man`.
fn write_all(dir: &Path) -> Result<(), CliError> {
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
    };
    let man = dir.join("man");
    std::fs::create_dir_all(&man)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", man.display())))?;
    for shell in Shell::ALL {
        write(dir.join(shell.file()), &script(shell)?)?;
    }
    let mut command = Cli::command();
    command.build();
    for (name, page) in man_pages(&command, "taskctl") {
        write(man.join(format!("{name}.1")), &page)?;
    }
    Ok(())
}

/// One man page per command and subcommand: `taskctl`, `taskctl-submit`, `taskctl-dlq-list`…
fn man_pages(command: &clap::Command, name: &str) -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let page = command
        .clone()
        .name(name.to_owned())
        .display_name(name.to_owned());
    let mut buf = Vec::new();
    if clap_mangen::Man::new(page).render(&mut buf).is_ok() {
        pages.push((name.to_owned(), buf));
    }
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        pages.extend(man_pages(sub, &format!("{name}-{}", sub.get_name())));
    }
    pages
}
