//! Runs an external program in its own process group and streams its output line by line.
//!
//! One runner serves the `shell` kind, the Salt and kubectl wrappers and `taskctl provision`:
//! the process group is killed when the run ends, is dropped (a cancelled or timed-out task)
//! or when [`kill_all_process_groups`] is called on a forced exit, so nothing it started
//! outlives it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What happens to the program's standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutMode {
    /// Each line goes to the line callback (logs, progress).
    Lines,
    /// Kept whole and returned (a JSON document to parse); only stderr is streamed.
    Capture,
}

/// One program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<OsString>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Written to standard input, which is then closed; without it stdin is empty.
    pub stdin: Option<Vec<u8>>,
}

impl Invocation {
    pub fn new(program: impl Into<String>) -> Invocation {
        Invocation {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Invocation {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The arguments as text, for tests and messages.
    pub fn argv_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The captured standard output ([`StdoutMode::Capture`]); empty otherwise.
    pub stdout: Vec<u8>,
    /// The last non-empty stderr line (at most 200 characters), for error messages.
    pub last_stderr: Option<String>,
}

impl Finished {
    /// "exited with status 2" / "killed by signal 9".
    pub fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended abnormally".to_owned(),
        }
    }

    /// `what`, followed by the last stderr line when there is one.
    pub fn explain(&self, what: String) -> String {
        match &self.last_stderr {
            Some(line) => format!("{what}: {line}"),
            None => what,
        }
    }

    /// How a failed run ended, with its last stderr line: "exited with status 2: boom".
    pub fn failure(&self) -> String {
        self.explain(self.describe())
    }
}

/// Why a program could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program is not installed (not on PATH).
    #[error("'{program}' was not found on PATH; {hint}")]
    Missing { program: String, hint: String },
    /// Starting or waiting for it failed for another reason.
    #[error("cannot run '{program}': {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// The most bytes kept of one line; the rest of the line is dropped.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// The most captured standard output kept (64 MiB).
const MAX_CAPTURE_BYTES: u64 = 64 * 1024 * 1024;

/// Finds `program` the way exec does: a path with a slash as it is, else the first match on
/// PATH that is an executable file.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `invocation` to the end, calling `on_line` for each output line as it arrives (in
/// arrival order across both pipes). `missing_hint` completes the error when the program is
/// not installed. Dropping the returned future kills the program's whole process group.
pub async fn run<F, Fut>(
    invocation: &Invocation,
    stdout_mode: StdoutMode,
    missing_hint: &str,
    mut on_line: F,
) -> Result<Finished, RunError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let program = invocation.program.clone();
    let missing = || RunError::Missing {
        program: program.clone(),
        hint: missing_hint.to_owned(),
    };
    let resolved = find_program(&invocation.program).ok_or_else(missing)?;
    let mut command = Command::new(&resolved);
    command
        .args(&invocation.args)
        .envs(&invocation.env)
        .stdin(if invocation.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &invocation.cwd {
        command.current_dir(cwd);
    }
    let io = |source| RunError::Io {
        program: program.clone(),
        source,
    };
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing()
        } else {
            io(e)
        }
    })?;
    // Dropping this guard (the run finished, was cancelled or timed out) kills every process
    // the program started, not only the first one.
    let group = child.id().map(ProcessGroup::track);

    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), invocation.stdin.clone()) {
        // A program that exits without reading its input closes the pipe: not an error here,
        // its exit status tells.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }

    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(256);
    let capture = match (stdout_mode, child.stdout.take()) {
        (StdoutMode::Lines, Some(out)) => {
            tokio::spawn(pump(out, Stream::Stdout, tx.clone()));
            None
        }
        (StdoutMode::Capture, Some(out)) => Some(tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = out.take(MAX_CAPTURE_BYTES).read_to_end(&mut buf).await;
            buf
        })),
        (_, None) => None,
    };
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, Stream::Stderr, tx.clone()));
    }
    drop(tx);

    let mut last_stderr = None;
    let mut status = None;
    let mut lines_open = true;
    while status.is_none() || lines_open {
        tokio::select! {
            line = rx.recv(), if lines_open => match line {
                Some((stream, text)) => {
                    if stream == Stream::Stderr && !text.trim().is_empty() {
                        last_stderr = Some(text.chars().take(200).collect());
                    }
                    on_line(stream, text).await;
                }
                None => lines_open = false,
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited.map_err(io)?);
                // Descendants that outlive the main process would hold the pipes open: the
                // run is over, so they go too, and the readers see end-of-file.
                if let Some(group) = &group {
                    ProcessGroup::kill(group.0);
                }
            }
        }
    }
    let stdout = match capture {
        Some(handle) => handle.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let status = status.ok_or_else(|| io(std::io::Error::other("no exit status")))?;
    Ok(Finished {
        status,
        stdout,
        last_stderr,
    })
}

/// Sends a pipe's lines (without line endings, cut to [`MAX_LINE_BYTES`]) to `tx`.
async fn pump(pipe: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<(Stream, String)>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::with_capacity(256);
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
        if tx.send((stream, line)).await.is_err() {
            break;
        }
    }
}

/// The process groups of runs in progress, so a forced exit can take them along.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Kills the processes of every run in progress (the process is exiting without a drain).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_both_pipes_and_captures_stdout() {
        let inv = Invocation::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]);
        let mut seen = Vec::new();
        let done = run(&inv, StdoutMode::Lines, "", |s, l| {
            seen.push((s, l));
            async {}
        })
        .await
        .expect("sh runs");
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.describe(), "exited with status 3");
        assert_eq!(done.failure(), "exited with status 3: err");
        assert!(seen.contains(&(Stream::Stdout, "out".to_owned())));
        assert!(seen.contains(&(Stream::Stderr, "err".to_owned())));
        assert_eq!(done.last_stderr.as_deref(), Some("err"));

        let inv = Invocation::new("sh").args(["-c", "cat; echo note >&2"]);
        let inv = Invocation {
            stdin: Some(b"{\"a\":\n1}".to_vec()),
            ..inv
        };
        let mut stderr = Vec::new();
        let done = run(&inv, StdoutMode::Capture, "", |s, l| {
            stderr.push((s, l));
            async {}
        })
        .await
        .expect("sh runs");
        assert!(done.status.success());
        assert_eq!(done.stdout, b"{\"a\":\n1}");
        assert_eq!(stderr, vec![(Stream::Stderr, "note".to_owned())]);
    }

    #[tokio::test]
    async fn a_missing_program_says_how_to_install_it() {
        let inv = Invocation::new("taskplane-no-such-tool");
        let err = run(
            &inv,
            StdoutMode::Lines,
            "install it with apt",
            |_, _| async {},
        )
        .await
        .expect_err("not installed");
        assert_eq!(
            err.to_string(),
            "'taskplane-no-such-tool' was not found on PATH; install it with apt"
        );
    }

    #[tokio::test]
    async fn background_children_do_not_keep_the_run_alive() {
        // The child leaves a grandchild holding the pipes; the run still ends when the child
        // does, because the whole group is killed.
        let inv = Invocation::new("sh").args(["-c", "sleep 600 & echo started"]);
        let done = run(&inv, StdoutMode::Lines, "", |_, _| async {})
            .await
            .expect("sh runs");
        assert!(done.status.success());
    }
}
