//! `shell`: runs a program with its own process group, captures stdout and stderr line by
//! line, and kills the whole group when the task ends, is cancelled or times out (the
//! provisioning crate's runner does the process work).

use serde_json::{Value, json};
use taskplane_api::kinds::ShellPayload;
use taskplane_provisioning::runner::{self, Invocation, StdoutMode};

use super::{ExecError, Executor, TaskContext, parse};
use crate::store::BoxFuture;

pub struct Shell {
    pub enabled: bool,
}

impl Executor for Shell {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let enabled = self.enabled;
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
            let invocation = Invocation {
                env: spec.env,
                cwd: spec.cwd.map(Into::into),
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
