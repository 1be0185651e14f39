//! Payload shapes of the built-in kinds that take structured input.
//!
//! They live here because both sides use them: the CLI builds them, the daemon validates
//! and runs them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The built-in kinds, in the order the help text lists them.
pub const BUILTIN_KINDS: [&str; 7] = ["noop", "echo", "sleep", "shell", "http", "salt", "kubectl"];

/// `sleep`: wait `ms` milliseconds, then succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    pub ms: u64,
}

/// `shell`: run `argv` directly (no shell is involved unless argv names one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellPayload {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `http`: one request; a 2xx answer is success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPayload {
    /// Defaults to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A string is sent as it is; any other JSON value is sent as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// Headers an `http` task may not set. taskd frames the request itself (`Host`,
/// `Content-Length`), and hop-by-hop headers describe one connection, not the request: given
/// by a caller they could smuggle a second request past a proxy or confuse the server.
pub const HTTP_REFUSED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why an `http` task's header was refused. Names are shown escaped, so a name holding a
/// line break still makes a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpHeaderError {
    #[error("header '{0}' cannot be set: taskd sets it, or it belongs to one connection")]
    Refused(String),
    #[error("'{0}' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")]
    BadName(String),
    #[error("the value of header '{0}' holds a control character (CR, LF, NUL or another)")]
    BadValue(String),
}

impl HttpPayload {
    /// Checks every header: a valid name (an RFC 9110 token), not one taskd refuses
    /// ([`HTTP_REFUSED_HEADERS`]), and a value without control characters (tab excepted),
    /// so a value cannot end the header line and start another.
    pub fn check_headers(&self) -> Result<(), HttpHeaderError> {
        for (name, value) in &self.headers {
            let shown = || name.escape_debug().to_string();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(HttpHeaderError::BadName(shown()));
            }
            if HTTP_REFUSED_HEADERS
                .iter()
                .any(|refused| name.eq_ignore_ascii_case(refused))
            {
                return Err(HttpHeaderError::Refused(shown()));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(HttpHeaderError::BadValue(shown()));
            }
        }
        Ok(())
    }
}

/// `salt`: a SaltStack run, through the same wrapper as `taskctl provision salt`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaltPayload {
    #[serde(default)]
    pub action: SaltAction,
    #[serde(default)]
    pub mode: SaltMode,
    /// Which minions (`salt` and `salt-ssh`; ignored by `local`). Defaults to `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The states to apply, comma-separated; none means the highstate (`top.sls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `local` only: the state tree (`file_roots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_root: Option<String>,
    /// `local` only: a pillar tree (`pillar_roots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pillar_root: Option<String>,
    /// A dry run: report what would change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Pillar data given on the command line, merged over the pillar tree.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub pillar: serde_json::Map<String, Value>,
}

/// What a `salt` task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltAction {
    /// `state.apply`.
    #[default]
    Apply,
    /// `test.ping`.
    Ping,
}

/// How Salt is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltMode {
    /// `salt` on a master.
    #[default]
    Master,
    /// `salt-ssh` from this host.
    Ssh,
    /// Masterless `salt-call --local` on this host.
    Local,
}

/// `kubectl`: one operation on the platform's Kubernetes deployment, through the same
/// wrapper as `taskctl provision k8s`. Which fields apply depends on `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubectlPayload {
    pub action: KubectlAction,
    /// `apply`, `diff`: the kustomize directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `status`, `rollout`: a label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `scale`: the deployment (`worker`, `api` or a full name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// `scale`: the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// `rollout`: how long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// `apply`: a server-side dry run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// `status`, `rollout`: every namespace (without `namespace`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
}

impl KubectlPayload {
    /// `action` with every option at its default.
    pub fn new(action: KubectlAction) -> KubectlPayload {
        KubectlPayload {
            action,
            dir: None,
            context: None,
            namespace: None,
            selector: None,
            deployment: None,
            replicas: None,
            timeout_secs: None,
            dry_run: false,
            all_namespaces: false,
        }
    }
}

/// What a `kubectl` task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubectlAction {
    Apply,
    Diff,
    Status,
    Rollout,
    Scale,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(name: &str, value: &str) -> HttpPayload {
        HttpPayload {
            method: None,
            url: "https://example.com/".into(),
            headers: [(name.to_owned(), value.to_owned())].into(),
            body: None,
        }
    }

    #[test]
    fn http_headers_are_checked() {
        for (name, value) in [
            ("Authorization", "Bearer abc"),
            ("X-Trace", "a\tb"),
            ("content-type", "application/json; charset=utf-8"),
            ("X-Name", "Zoë"),
        ] {
            assert_eq!(with_header(name, value).check_headers(), Ok(()), "{name}");
        }
        for refused in [
            "Host",
            "HOST",
            "Content-Length",
            "Transfer-Encoding",
            "te",
            "Upgrade",
        ] {
            assert_eq!(
                with_header(refused, "x").check_headers(),
                Err(HttpHeaderError::Refused(refused.into()))
            );
        }
        for name in ["", "X Space", "X:Colon", "X-\r\nEvil", "Ünicode"] {
            assert!(
                matches!(
                    with_header(name, "x").check_headers(),
                    Err(HttpHeaderError::BadName(_))
                ),
                "{name:?}"
            );
        }
        for value in [
            "a\r\nHost: evil",
            "a\nb",
            "a\rb",
            "nul\0",
            "bell\u{7}",
            "del\u{7f}",
        ] {
            assert_eq!(
                with_header("X-Ok", value).check_headers(),
                Err(HttpHeaderError::BadValue("X-Ok".into())),
                "{value:?}"
            );
        }
        let err = with_header("X-\r\nEvil", "x")
            .check_headers()
            .expect_err("bad name");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
