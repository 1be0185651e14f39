//! `taskctl config …`: named contexts, like `kubectl config`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::{Config, Context};
use crate::error::CliError;
use crate::output::{self, Ui};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or change a context.
    ///
    /// The server is the global --server (or TASKCTL_SERVER), and a private CA the global
    /// --ca-cert: `taskctl config set-context prod --server https://taskd.example.com
    /// --token-file ~/.taskplane/prod.token [--ca-cert ca.pem]`.
    SetContext {
        /// The context's name.
        name: String,
        /// A file holding its bearer token (the token itself is never stored in the config).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Make a context the current one.
    UseContext { name: String },
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Remove a context.
    DeleteContext { name: String },
}

pub fn run(
    ui: &Ui,
    server: Option<String>,
    ca_cert: Option<PathBuf>,
    args: ConfigArgs,
) -> Result<(), CliError> {
    let mut config = Config::load()?;
    match args.command {
        ConfigCommand::SetContext { name, token_file } => {
            let server =
                server.ok_or_else(|| CliError::Usage("set-context needs --server URL".into()))?;
            taskplane_api::Client::new(&server, None)
                .map_err(|e| CliError::Usage(format!("--server: {e}")))?;
            let token_file = token_file.map(|path| std::path::absolute(&path).unwrap_or(path));
            let ca_cert = ca_cert.map(|path| std::path::absolute(&path).unwrap_or(path));
            let created = !config.contexts.contains_key(&name);
            config.contexts.insert(
                name.clone(),
                Context {
                    server,
                    token_file,
                    ca_cert,
                },
            );
            if config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            let path = config.save()?;
            let verb = if created { "created" } else { "updated" };
            eprintln!("context {name} {verb} in {}", path.display());
            Ok(())
        }
        ConfigCommand::UseContext { name } => {
            config.context(Some(&name))?;
            config.current_context = Some(name.clone());
            config.save()?;
            eprintln!("switched to context {name}");
            Ok(())
        }
        ConfigCommand::GetContexts => {
            if ui.json() {
                return ui.print_json(&config);
            }
            let mut table = ui.table(&["CURRENT", "NAME", "SERVER", "TOKEN FILE"]);
            for (name, context) in &config.contexts {
                let current = config.current_context.as_deref() == Some(name.as_str());
                table.add_row(vec![
                    output::cell(if current { "*" } else { "" }),
                    output::cell(name),
                    output::cell(&context.server),
                    output::cell(
                        context
                            .token_file
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                    ),
                ]);
            }
            ui.print_table(&table)
        }
        ConfigCommand::CurrentContext => match &config.current_context {
            Some(name) => ui.line(name),
            None => Err(CliError::Other(
                "no current context (taskctl config set-context NAME --server URL)".into(),
            )),
        },
        ConfigCommand::DeleteContext { name } => {
            config.context(Some(&name))?;
            config.contexts.remove(&name);
            if config.current_context.as_deref() == Some(name.as_str()) {
                config.current_context = None;
            }
            config.save()?;
            eprintln!("context {name} deleted");
            Ok(())
        }
    }
}
