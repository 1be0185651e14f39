//! The CLI's error kinds and their exit codes, in one place.

use taskplane_api::Error as ApiError;

/// Exit codes of the contract.
pub mod code {
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const TASK_FAILED: u8 = 3;
    pub const TASK_CANCELLED: u8 = 4;
    /// Ctrl-C (SIGINT), as a shell reports a process it interrupted: 128 + 2.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments do not make sense together (clap catches the rest before we run).
    #[error("{0}")]
    Usage(String),
    /// Talking to taskd failed, or it refused the request.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A waited-for task failed; the message says why.
    #[error("{0}")]
    TaskFailed(String),
    /// A waited-for task was cancelled.
    #[error("{0}")]
    TaskCancelled(String),
    /// Several per-item failures that were already reported one per line.
    #[error("")]
    AlreadyReported,
    /// The user pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => code::USAGE,
            CliError::TaskFailed(_) => code::TASK_FAILED,
            CliError::TaskCancelled(_) => code::TASK_CANCELLED,
            CliError::Interrupted => code::INTERRUPTED,
            CliError::Api(_) | CliError::AlreadyReported | CliError::Other(_) => code::ERROR,
        }
    }

    /// The line to print, if any (failures reported item by item print nothing more).
    pub fn message(&self) -> Option<String> {
        match self {
            CliError::AlreadyReported => None,
            CliError::Api(error) => Some(describe(error)),
            other => Some(other.to_string()),
        }
    }
}

/// One line for an API error, with a hint where one helps.
pub fn describe(error: &ApiError) -> String {
    match error {
        ApiError::Unreachable { reason, .. } if reason.contains("certificate") => format!(
            "{error} (the server's certificate is not trusted here: give its CA with --ca-cert FILE)"
        ),
        ApiError::TimedOut { stream: false, .. } => format!(
            "{error} (hint: give it longer with --request-timeout DUR or TASKCTL_REQUEST_TIMEOUT, 0 for no limit)"
        ),
        ApiError::TimedOut { stream: true, .. } => format!(
            "{error} (a stream sends a heartbeat well within that: is taskd, or a proxy in front of it, stuck?)"
        ),
        ApiError::Unreachable { .. } => format!(
            "{error} (is taskd running? start it with `taskd`, or point --server / TASKCTL_SERVER at it)"
        ),
        ApiError::Api { code, message, .. } if code == "invalid_payload" => {
            let hint = if message.contains("invalid type: string") {
                " (hint: -p key=value sends a string; use -p key:=42 for numbers, booleans and JSON)"
            } else if message.starts_with("shell:") && message.contains("argv") {
                " (hint: give the command after --, e.g. taskctl submit shell -- ls -l)"
            } else {
                ""
            };
            format!("{message}{hint}")
        }
        ApiError::Api { code, message, .. } if code == "unauthorized" => format!(
            "{message} (hint: pass --token, set TASKCTL_TOKEN, or give a context a token file: taskctl config set-context NAME --server URL --token-file FILE)"
        ),
        ApiError::Api { code, message, .. } if code == "forbidden" => format!(
            "{message} (hint: use a token minted with that scope: taskd token issue --scope …)"
        ),
        ApiError::Api { code, message, .. } if code == "rate_limited" => message.clone(),
        _ => error.to_string(),
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Other(error.to_string())
    }
}
