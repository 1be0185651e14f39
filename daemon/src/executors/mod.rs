//! What a task of each kind does. Every kind is an [`Executor`] behind one small trait, so
//! adding a kind is one file, its entry in [`crate::domain::kinds::BUILTIN`] and its arm in
//! [`Registry::builtin`].

mod basic;
mod http;
mod provision;
mod shell;

pub use http::{AddressPolicy, parse_cidr};
pub use taskplane_provisioning::runner::kill_all_process_groups;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use taskplane_api::LogStream;
use taskplane_provisioning::runner::Stream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::output::LogSink;
use crate::util::BoxFuture;

/// Everything a handler gets for one attempt.
pub struct TaskContext {
    pub id: Uuid,
    pub attempt: u32,
    /// The payload as JSON text; each executor parses the shape it expects.
    pub payload: String,
    /// Fires when the task is cancelled or times out. Handlers that spawn processes or hold
    /// resources watch it; pure futures are simply dropped.
    pub cancel: CancellationToken,
    /// Captured output goes here.
    pub log: LogSink,
    /// The W3C `traceparent` to pass on (the `http` kind's header, a program's
    /// `TRACEPARENT`), if the task belongs to a trace.
    pub traceparent: Option<String>,
}

/// A failed attempt; the message becomes the task's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

impl ExecError {
    pub fn new(message: impl Into<String>) -> Self {
        ExecError(message.into())
    }
}

/// Runs tasks of one kind.
pub trait Executor: Send + Sync + 'static {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>>;
}

/// The kinds a worker can run.
#[derive(Clone)]
pub struct Registry {
    executors: BTreeMap<&'static str, Arc<dyn Executor>>,
}

impl Registry {
    /// The built-in kinds. `shell` refuses to run unless `shell_enabled` (and passes its
    /// tasks `shell_pass_env` from taskd's environment), `salt` and `kubectl` unless
    /// `provisioning_enabled`; `http` connects where `http_policy` allows.
    pub fn builtin(
        shell_enabled: bool,
        shell_pass_env: &[String],
        provisioning_enabled: bool,
        http_policy: AddressPolicy,
    ) -> Registry {
        // One executor per entry of the kinds' table, which is the only list of them.
        let executors = crate::domain::kinds::BUILTIN
            .iter()
            .map(|kind| {
                let executor: Arc<dyn Executor> = match kind.name {
                    "noop" => Arc::new(basic::Noop),
                    "echo" => Arc::new(basic::Echo),
                    "sleep" => Arc::new(basic::Sleep),
                    "shell" => Arc::new(shell::Shell::new(shell_enabled, shell_pass_env)),
                    "http" => Arc::new(http::Http::new(http_policy.clone())),
                    "salt" => Arc::new(provision::Salt {
                        enabled: provisioning_enabled,
                    }),
                    "kubectl" => Arc::new(provision::Kubectl {
                        enabled: provisioning_enabled,
                    }),
                    other => unreachable!("the built-in kind '{other}' has no executor"),
                };
                (kind.name, executor)
            })
            .collect();
        Registry { executors }
    }

    /// The kinds this registry runs: what its worker claims.
    pub fn kinds(&self) -> Vec<String> {
        self.executors.keys().map(|k| (*k).to_owned()).collect()
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn Executor>> {
        self.executors.get(kind).cloned()
    }
}

/// Parses a payload into the shape a kind expects.
fn parse<T: serde::de::DeserializeOwned>(kind: &str, payload: &str) -> Result<T, ExecError> {
    serde_json::from_str(payload).map_err(|e| ExecError(format!("{kind}: bad payload: {e}")))
}

/// The line callback of the provisioning runner, writing into a task's log.
fn log_line(log: &LogSink) -> impl FnMut(Stream, String) -> BoxFuture<'static, ()> + use<> {
    let log = log.clone();
    move |stream, line| {
        let log = log.clone();
        let stream = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        Box::pin(async move { log.line(stream, line).await })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_kind_has_an_executor() {
        // The http kind's client needs a TLS provider, as taskd's main installs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = super::Registry::builtin(false, &[], false, super::AddressPolicy::default());
        for kind in crate::domain::kinds::BUILTIN {
            assert!(registry.get(kind.name).is_some(), "{}", kind.name);
        }
        assert_eq!(registry.kinds().len(), crate::domain::kinds::BUILTIN.len());
    }
}
