//! `shell`: runs a program with a clean environment, captures stdout and stderr line by
//! line, and kills its whole process tree when the task ends, is cancelled or times out, or
//! taskd dies (the provisioning crate's runner and guard do the process work).

use serde_json::{Value, json};
use taskplane_api::kinds::ShellPayload;
use taskplane_provisioning::runner::{self, InheritEnv, Invocation, StdoutMode};

use super::{ExecError, Executor, TaskContext, parse};
use crate::util::BoxFuture;

/// The variables of taskd's environment every shell task gets: what a program needs to find
/// its tools, its home, its user and its locale, and nothing that could be a secret. A name
/// ending in `*` is a prefix. The rest of taskd's environment (its JWT secret, database
/// URL, cloud credentials) stays out of the task and so out of its log, unless the operator
/// names it with `--shell-pass-env`.
pub const SHELL_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
];

pub struct Shell {
    enabled: bool,
    /// [`SHELL_ENV`] and the operator's `--shell-pass-env` names.
    inherit: InheritEnv,
}

impl Shell {
    pub fn new(enabled: bool, pass_env: &[String]) -> Shell {
        let names = SHELL_ENV
            .iter()
            .map(|name| (*name).to_owned())
            .chain(pass_env.iter().filter(|name| !name.is_empty()).cloned())
            .collect();
        Shell {
            enabled,
            inherit: InheritEnv::Only(names),
        }
    }
}

impl Executor for Shell {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let enabled = self.enabled;
        let inherit = self.inherit.clone();
        Box::pin(async move {
            if !enabled {
                return Err(ExecError::new(
                    "the shell kind is disabled on this worker; start it with --enable-shell",
                ));
            }
            let spec: ShellPayload = parse("shell", &ctx.payload)?;
            let (program, args) = spec
                .argv
                .split_first()
                .ok_or_else(|| ExecError::new("shell: argv is empty"))?;
            let mut env = spec.env;
            // The program joins the task's trace (W3C's name for the variable), unless the
            // payload sets one.
            if let Some(traceparent) = &ctx.traceparent {
                env.entry("TRACEPARENT".to_owned())
                    .or_insert_with(|| traceparent.clone());
            }
            let invocation = Invocation {
                env,
                cwd: spec.cwd.map(Into::into),
                inherit_env: inherit,
                // A retry waits until the tree of an attempt that timed out is gone.
                exclusive: Some(format!("task {}", ctx.id)),
                ..Invocation::new(program.as_str()).args(args)
            };
            let done = runner::run(
                &invocation,
                StdoutMode::Lines,
                "check the task's argv",
                super::log_line(&ctx.log),
            )
            .await
            .map_err(|e| ExecError(e.to_string()))?;
            if done.status.success() {
                return Ok(json!({ "exit_code": 0 }));
            }
            Err(ExecError(done.failure()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_holds_no_secret_and_takes_the_operators_names() {
        let shell = Shell::new(true, &["AWS_PROFILE".to_owned(), String::new()]);
        let InheritEnv::Only(names) = &shell.inherit else {
            panic!("shell tasks must not inherit everything");
        };
        assert!(names.iter().any(|n| n == "AWS_PROFILE"));
        assert!(names.iter().any(|n| n == "PATH"));
        assert!(!names.iter().any(String::is_empty));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("TASKD") || n.contains("SECRET"))
        );
    }
}
