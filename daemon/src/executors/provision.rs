//! `salt` and `kubectl`: provisioning runs as tasks, through the same wrappers as
//! `taskctl provision`. Salt's and kubectl's output goes to the task log; the parsed report
//! is the task's result, and a failed state or operation fails the attempt.

use serde_json::Value;
use taskplane_api::LogStream;
use taskplane_api::kinds::{KubectlPayload, SaltPayload};
use taskplane_provisioning::{kubectl, salt};

use super::{ExecError, Executor, TaskContext, log_line, parse};
use crate::util::BoxFuture;

const DISABLED: &str = "kind is disabled on this worker; start it with --enable-provisioning";

pub struct Salt {
    pub enabled: bool,
}

impl Executor for Salt {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let enabled = self.enabled;
        Box::pin(async move {
            if !enabled {
                return Err(ExecError(format!("the salt {DISABLED}")));
            }
            let payload: SaltPayload = parse("salt", &ctx.payload)?;
            let report = salt::run(&payload, log_line(&ctx.log))
                .await
                .map_err(|e| ExecError(e.to_string()))?;
            for line in report.summary_lines() {
                ctx.log.line(LogStream::System, line).await;
            }
            let value = serde_json::to_value(&report)
                .map_err(|e| ExecError(format!("salt: cannot encode the report: {e}")))?;
            if report.succeeded() {
                Ok(value)
            } else {
                Err(ExecError(report.failure_summary()))
            }
        })
    }
}

pub struct Kubectl {
    pub enabled: bool,
}

impl Executor for Kubectl {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let enabled = self.enabled;
        Box::pin(async move {
            if !enabled {
                return Err(ExecError(format!("the kubectl {DISABLED}")));
            }
            let payload: KubectlPayload = parse("kubectl", &ctx.payload)?;
            let (target, op) = kubectl::plan(&payload).map_err(|e| ExecError(e.to_string()))?;
            let outcome = kubectl::run(&target, &op, log_line(&ctx.log), |_| {})
                .await
                .map_err(|e| ExecError(e.to_string()))?;
            if let kubectl::Outcome::Diff { diff, .. } = &outcome {
                for line in diff.lines() {
                    ctx.log.line(LogStream::Stdout, line.to_owned()).await;
                }
            }
            serde_json::to_value(&outcome)
                .map_err(|e| ExecError(format!("kubectl: cannot encode the outcome: {e}")))
        })
    }
}
