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
    /// No HTTP answer at all: connection refused, DNS, TLS, timeout.
    #[error("cannot reach taskd at {url}: {reason}")]
    Unreachable { url: String, reason: String },
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
