//! The client's error type.

/// What can go wrong talking to taskd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL could not be used.
    #[error("invalid server URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The CA certificate given to trust could not be read.
    #[error("--ca-cert: {0}")]
    Certificate(String),
    /// No HTTP answer at all: connection refused, DNS, TLS, no connection within the connect
    /// timeout.
    #[error("cannot reach taskd at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// taskd took the connection but did not answer within `after`: an ordinary request
    /// outlived the request timeout, or a stream (`stream`) stayed silent, without even a
    /// heartbeat, for longer than the idle timeout.
    #[error("taskd at {url} did not answer within {}", seconds(*after))]
    TimedOut {
        url: String,
        after: std::time::Duration,
        stream: bool,
    },
    /// taskd answered with its JSON error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// taskd (or something in between) answered with something this client cannot read.
    #[error("unexpected response from {url} (HTTP {status}): {detail}")]
    BadResponse {
        url: String,
        status: u16,
        detail: String,
    },
}

/// `30s`, `1.5s`, `250ms`.
fn seconds(duration: std::time::Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

impl Error {
    /// The API's error code, when taskd answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::BadResponse { status, .. } => Some(*status),
            _ => None,
        }
    }
}
