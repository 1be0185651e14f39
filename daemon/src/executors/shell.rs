//! `shell`: runs a program with its own process group, captures stdout and stderr line by
//! line, and kills the whole group when the task ends, is cancelled or times out.

use std::collections::BTreeSet;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use serde_json::{Value, json};
use taskplane_api::LogStream;
use taskplane_api::kinds::ShellPayload;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{ExecError, Executor, TaskContext, parse};
use crate::store::BoxFuture;
use crate::worker::logs::{LogSink, MAX_LINE_BYTES};

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
            run(spec, ctx.log).await
        })
    }
}

async fn run(spec: ShellPayload, log: LogSink) -> Result<Value, ExecError> {
    let program = spec
        .argv
        .first()
        .ok_or_else(|| ExecError::new("shell: argv is empty"))?;
    let mut command = Command::new(program);
    command
        .args(&spec.argv[1..])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let mut child = command
        .spawn()
        .map_err(|e| ExecError(format!("cannot start '{program}': {e}")))?;
    // Dropping this guard (the task finished, was cancelled or timed out) kills every
    // process the command started, not only the first one.
    let group = child.id().map(ProcessGroup::track);

    let stdout = child.stdout.take().map(|out| {
        let log = log.clone();
        tokio::spawn(pump(out, LogStream::Stdout, log))
    });
    let stderr = child.stderr.take().map(|err| {
        let log = log.clone();
        tokio::spawn(pump(err, LogStream::Stderr, log))
    });

    let status = child
        .wait()
        .await
        .map_err(|e| ExecError(format!("waiting for '{program}' failed: {e}")))?;
    // Descendants that outlive the main process would hold the pipes open: the task is over,
    // so they go too, and the readers see end-of-file.
    if let Some(group) = &group {
        ProcessGroup::kill(group.0);
    }
    if let Some(handle) = stdout {
        let _ = handle.await;
    }
    let last_stderr = match stderr {
        Some(handle) => handle.await.unwrap_or_default(),
        None => None,
    };
    outcome(status, last_stderr)
}

fn outcome(status: ExitStatus, last_stderr: Option<String>) -> Result<Value, ExecError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(json!({ "exit_code": 0 }));
    }
    let what = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended abnormally".to_owned(),
    };
    Err(ExecError(match last_stderr {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }))
}

/// Copies a pipe into the task log, line by line; returns the last non-empty line.
async fn pump(pipe: impl AsyncRead + Unpin, stream: LogStream, log: LogSink) -> Option<String> {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::with_capacity(256);
    let mut last = None;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        buf.truncate(MAX_LINE_BYTES);
        let line = String::from_utf8_lossy(&buf).into_owned();
        if !line.trim().is_empty() {
            last = Some(line.chars().take(200).collect());
        }
        log.line(stream, line).await;
    }
    last
}

/// The process groups of running shell tasks, so a forced exit can take them along.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Kills the processes of every running shell task (taskd is exiting without a drain).
pub fn kill_all_process_groups() {
    let groups = LIVE_GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
    for pgid in groups {
        ProcessGroup::kill(pgid);
    }
}

/// A process group to kill with SIGKILL when dropped.
struct ProcessGroup(u32);

impl ProcessGroup {
    fn track(pgid: u32) -> ProcessGroup {
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.insert(pgid);
        }
        ProcessGroup(pgid)
    }

    fn kill(pgid: u32) {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory
        // of ours. ESRCH (the group is already gone) is the expected, harmless failure.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        ProcessGroup::kill(self.0);
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.remove(&self.0);
        }
    }
}
