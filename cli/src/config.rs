//! taskctl's configuration file: named contexts (server and token file), like kubectl's
//! kubeconfig. It lives at `$TASKCTL_CONFIG`, else `$XDG_CONFIG_HOME/taskctl/config.toml`,
//! else `~/.config/taskctl/config.toml`, and is written with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Context {
    pub server: String,
    /// A file holding the bearer token (the token itself is never stored here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of extra CA certificates to trust for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// Where the configuration file is.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TASKCTL_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("taskctl").join("config.toml"))
}

impl Config {
    /// The configuration, or an empty one when there is no file.
    pub fn load() -> Result<Config, CliError> {
        let Some(path) = path() else {
            return Ok(Config::default());
        };
        Config::load_from(&path)
    }

    pub fn load_from(path: &Path) -> Result<Config, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.message()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the file (and its directory) readable by the owner only.
    pub fn save(&self) -> Result<PathBuf, CliError> {
        let path = path().ok_or_else(|| {
            CliError::Other("no HOME or XDG_CONFIG_HOME: set TASKCTL_CONFIG to a file path".into())
        })?;
        let fail =
            |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = toml::to_string(self)
            .map_err(|e| CliError::Other(format!("cannot encode the configuration: {e}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            let mut file = options.open(&path).map_err(fail)?;
            // An older file may have been created with wider permissions.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
            file.write_all(text.as_bytes()).map_err(fail)?;
        }
        #[cfg(not(unix))]
        {
            let mut file = options.open(&path).map_err(fail)?;
            file.write_all(text.as_bytes()).map_err(fail)?;
        }
        Ok(path)
    }

    /// The context `name`, or the current one; `None` when neither is set.
    pub fn context(&self, name: Option<&str>) -> Result<Option<(String, Context)>, CliError> {
        let Some(name) = name.or(self.current_context.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get(name) {
            Some(context) => Ok(Some((name.to_owned(), context.clone()))),
            None => Err(CliError::Usage(format!(
                "no context named '{name}' (taskctl config get-contexts lists them)"
            ))),
        }
    }
}

/// Reads a token file: its first line, trimmed.
pub fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("token file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips() {
        let mut config = Config::default();
        config.contexts.insert(
            "prod".into(),
            Context {
                server: "https://taskd.example.com".into(),
                token_file: Some("/etc/taskctl/prod.token".into()),
                ca_cert: Some("/etc/taskctl/ca.pem".into()),
            },
        );
        config.current_context = Some("prod".into());
        let text = toml::to_string(&config).expect("encode");
        assert!(text.contains("current-context = \"prod\""), "{text}");
        assert!(text.contains("token-file"), "{text}");
        assert_eq!(toml::from_str::<Config>(&text).expect("decode"), config);
    }

    #[test]
    fn unknown_contexts_are_usage_errors() {
        let config = Config::default();
        assert!(config.context(None).expect("no context").is_none());
        let err = config.context(Some("nope")).expect_err("unknown");
        assert_eq!(err.exit_code(), crate::error::code::USAGE);
    }
}
