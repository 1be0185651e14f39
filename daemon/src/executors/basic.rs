//! The kinds that need nothing from the outside world: `noop`, `echo`, `sleep`.

use std::time::Duration;

use serde_json::{Value, json};
use taskplane_api::kinds::SleepPayload;

use super::{ExecError, Executor, TaskContext, parse};
use crate::util::BoxFuture;

/// Succeeds at once with no result.
pub struct Noop;

impl Executor for Noop {
    fn run(&self, _ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        Box::pin(async { Ok(Value::Null) })
    }
}

/// Succeeds with its payload as the result.
pub struct Echo;

impl Executor for Echo {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        Box::pin(async move { parse::<Value>("echo", &ctx.payload) })
    }
}

/// Waits `ms` milliseconds, then succeeds. Cancellation drops the wait.
pub struct Sleep;

impl Executor for Sleep {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        Box::pin(async move {
            let spec: SleepPayload = parse("sleep", &ctx.payload)?;
            tokio::time::sleep(Duration::from_millis(spec.ms)).await;
            Ok(json!({ "slept_ms": spec.ms }))
        })
    }
}
