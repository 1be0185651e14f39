//! Runs an external program and streams its output line by line, so that nothing it
//! started outlives the run.
//!
//! One runner serves the `shell` kind, the Salt and kubectl wrappers and `taskctl provision`.
//! How the program is contained depends on the process:
//!
//! - In taskd ([`contain`] was called), every program runs under a [`guard`](crate::guard):
//!   taskd's own binary re-executed, in its own session and as a child subreaper, which kills
//!   the program's whole process tree (children that called `setsid` or double-forked
//!   included) when the program exits, when the run's future is dropped (a cancelled or
//!   timed-out task) and when taskd dies by any means, SIGKILL included. So a task whose
//!   lease expires after a crash never runs twice at once on one host.
//! - Elsewhere (`taskctl provision` at a prompt), the program leads its own process group,
//!   which is killed when the run ends or is dropped, or when [`kill_all_process_groups`] is
//!   called on a forced exit.
//!
//! The program's environment is built by [`child_env`]: all of this process's variables or
//! an allow-list of them ([`InheritEnv`]), minus taskd's own settings when contained, plus
//! the invocation's own. A line of output is cut to [`MAX_LINE_BYTES`] while it is read, so
//! one endless line costs no more memory than a short one.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::guard::{self, Report};

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
    /// Which of this process's variables the program starts with, before `env`.
    pub inherit_env: InheritEnv,
    /// At most one run with this key at a time in this process: a run waits until every
    /// process of the previous one has ended, so a retried task never overlaps the attempt
    /// that was just cancelled or timed out (its tree is still being killed).
    pub exclusive: Option<String>,
}

/// Which of the running process's environment variables a program inherits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InheritEnv {
    /// All of them (in taskd, minus its own settings: see [`Containment`]).
    #[default]
    All,
    /// Only these names; a name ending in `*` stands for every name with that prefix
    /// (`LC_*`).
    Only(Vec<String>),
}

impl Invocation {
    pub fn new(program: impl Into<String>) -> Invocation {
        Invocation {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            inherit_env: InheritEnv::All,
            exclusive: None,
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
    /// The working directory it should start in is missing or not a directory.
    #[error("working directory '{}' {problem} on this worker", dir.display())]
    WorkingDir { dir: PathBuf, problem: String },
    /// Starting or waiting for it failed for another reason.
    #[error("cannot run '{program}': {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// The most bytes kept of one line; the rest of the line is read and dropped, and the kept
/// part ends with [`TRUNCATED_MARK`] and how many bytes went.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Ends a line cut at [`MAX_LINE_BYTES`], followed by the count of bytes dropped.
pub const TRUNCATED_MARK: &str = "… [line truncated:";
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

/// How taskd runs programs; see the module docs. Set once, at start, by [`contain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containment {
    /// The guard executable: taskd's own binary (`/proc/self/exe`), which turns into a guard
    /// when its first argument is [`guard::GUARD_ARG`].
    pub guard: PathBuf,
    /// Variables of this process whose names start with this are never inherited through
    /// [`InheritEnv::All`] (taskd's own settings: its JWT secret, database and broker URLs).
    pub private_env_prefix: String,
}

static CONTAINMENT: OnceLock<Containment> = OnceLock::new();

/// From now on, every program this process runs goes through `containment`'s guard. Only the
/// first call counts.
pub fn contain(containment: Containment) {
    let _ = CONTAINMENT.set(containment);
}

/// The environment a program starts with: the variables of `parent` that `inherit` allows
/// (with [`InheritEnv::All`], all but those starting with `private_prefix`), then `set`.
pub fn child_env(
    inherit: &InheritEnv,
    private_prefix: Option<&str>,
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    set: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let allowed = |name: &str| match inherit {
        InheritEnv::All => private_prefix.is_none_or(|prefix| !name.starts_with(prefix)),
        InheritEnv::Only(names) => names.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        }),
    };
    let mut env: BTreeMap<OsString, OsString> = parent
        .into_iter()
        // A name that is not UTF-8 matches no allow-list, and is no setting of taskd's.
        .filter(|(name, _)| match name.to_str() {
            Some(name) => allowed(name),
            None => matches!(inherit, InheritEnv::All),
        })
        .collect();
    env.extend(set.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// Checks the working directory before anything starts, so a missing one is not mistaken
/// for a missing program (exec reports both as "not found").
fn check_working_dir(dir: &Path) -> Result<(), RunError> {
    let problem = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "is not a directory".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be used ({e})"),
    };
    Err(RunError::WorkingDir {
        dir: dir.to_owned(),
        problem,
    })
}

/// What makes a started program's tree go away.
enum Supervisor {
    /// Its process group, killed when the run ends or this is dropped.
    Group(Option<ProcessGroup>),
    /// Its guard's control socket. Closing it (dropping this) stops the guard, which then
    /// kills the tree; after the guard exits, the socket carries the program's status.
    Guard(tokio::net::UnixStream),
}

/// Starts the program in its own process group, feeding it its input.
fn start_grouped(
    resolved: &Path,
    invocation: &Invocation,
    env: BTreeMap<OsString, OsString>,
) -> std::io::Result<(Child, Supervisor)> {
    let mut command = Command::new(resolved);
    command
        .args(&invocation.args)
        .env_clear()
        .envs(env)
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
    let mut child = command.spawn()?;
    // Dropping this (the run finished, was cancelled or timed out) kills every process in the
    // group, not only the first one; kill_on_drop above only covers a runtime shutting down
    // with the reaper task still waiting.
    let group = child.id().map(ProcessGroup::track);
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), invocation.stdin.clone()) {
        // A program that exits without reading its input closes the pipe: not an error here,
        // its exit status tells.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    Ok((child, Supervisor::Group(group)))
}

/// Starts the program under a guard and sends the guard the program's input.
async fn start_guarded(
    containment: &Containment,
    resolved: &Path,
    invocation: &Invocation,
    env: BTreeMap<OsString, OsString>,
) -> std::io::Result<(Child, Supervisor)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut command = Command::new(&containment.guard);
    command
        .arg0("taskd-guard")
        .arg(guard::GUARD_ARG)
        .arg(resolved)
        .args(&invocation.args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Not kill_on_drop and no process group of ours: a SIGKILL would stop the guard before
    // it clears the tree, and the guard makes its own session (which a group leader cannot).
    // Dropping the control socket stops it; tokio reaps it once it has exited.
    if let Some(cwd) = &invocation.cwd {
        command.current_dir(cwd);
    }
    let child = command.spawn()?;
    // The guard's end must not stay open here too, or the guard would hold itself open.
    drop(command);
    ours.set_nonblocking(true)?;
    let mut control = tokio::net::UnixStream::from_std(ours)?;
    let input = invocation.stdin.as_deref().unwrap_or_default();
    control.write_all(&guard::encode_frame(input)).await?;
    Ok((child, Supervisor::Guard(control)))
}

/// Runs `invocation` to the end, calling `on_line` for each output line as it arrives (in
/// arrival order across both pipes). `missing_hint` completes the error when the program is
/// not installed. Dropping the returned future kills everything the program started.
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
    let io = |source| RunError::Io {
        program: program.clone(),
        source,
    };
    let resolved = find_program(&invocation.program).ok_or_else(missing)?;
    if let Some(cwd) = &invocation.cwd {
        check_working_dir(cwd)?;
    }
    if let Some(key) = &invocation.exclusive {
        previous_run_ended(key).await;
    }
    let containment = CONTAINMENT.get();
    let env = child_env(
        &invocation.inherit_env,
        containment.map(|c| c.private_env_prefix.as_str()),
        std::env::vars_os(),
        &invocation.env,
    );
    let started = match containment {
        Some(containment) => start_guarded(containment, &resolved, invocation, env).await,
        None => start_grouped(&resolved, invocation, env),
    };
    let (mut child, mut supervisor) = started.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && containment.is_none() {
            missing()
        } else {
            io(e)
        }
    })?;
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let first_pid = child.id();
    let mut exit = reap(child, invocation.exclusive.clone());

    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(256);
    let capture = match (stdout_mode, stdout_pipe) {
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
    if let Some(err) = stderr_pipe {
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
            exited = &mut exit, if status.is_none() => {
                let exited = exited
                    .unwrap_or_else(|_| Err(std::io::Error::other("the wait ended")))
                    .map_err(io)?;
                status = Some(match &mut supervisor {
                    Supervisor::Group(group) => {
                        // Descendants that outlive the main process would hold the pipes
                        // open: the run is over, so they go too, and the readers see
                        // end-of-file.
                        if let Some(group) = group {
                            ProcessGroup::kill(group.0);
                        }
                        exited
                    }
                    // The guard has already cleared the tree; it tells how the program ended.
                    Supervisor::Guard(control) => match read_report(control).await {
                        Some(Report::Exited(code)) => ExitStatus::from_raw((code & 0xff) << 8),
                        Some(Report::Signaled(signal)) => ExitStatus::from_raw(signal & 0x7f),
                        Some(Report::SpawnFailed(errno)) => {
                            let error = std::io::Error::from_raw_os_error(errno);
                            return Err(if error.kind() == std::io::ErrorKind::NotFound {
                                missing()
                            } else {
                                io(error)
                            });
                        }
                        // A guard that could not set up said why on stderr (the last line);
                        // one that was killed (the OOM killer) left the program behind. Its
                        // session's group (the guard's pid) is what is left to kill.
                        None => {
                            if let Some(guard) = first_pid {
                                ProcessGroup::kill(guard);
                            }
                            exited
                        }
                    },
                });
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

/// Runs still ending, by [`Invocation::exclusive`] key: each receiver turns true once the
/// run's first process (the guard, or the group leader) has exited and been reaped.
static ENDING: Mutex<BTreeMap<String, watch::Receiver<bool>>> = Mutex::new(BTreeMap::new());

/// Waits until the last run under `key` has ended, however it was stopped.
async fn previous_run_ended(key: &str) {
    let previous = ENDING.lock().ok().and_then(|runs| runs.get(key).cloned());
    if let Some(mut ended) = previous {
        // An error means the reaper is gone, which it only is once it is done.
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

/// Waits for `child` on a task of its own, so it is reaped (and a keyed run marked ended)
/// even after the run's future was dropped: a dropped guarded run has only closed the
/// guard's control socket, and the guard is still killing the tree. The returned receiver
/// gets the exit status.
fn reap(mut child: Child, key: Option<String>) -> oneshot::Receiver<std::io::Result<ExitStatus>> {
    let (exit_tx, exit_rx) = oneshot::channel();
    let (ended_tx, ended_rx) = watch::channel(false);
    if let (Some(key), Ok(mut runs)) = (&key, ENDING.lock()) {
        runs.insert(key.clone(), ended_rx.clone());
    }
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = ended_tx.send(true);
        if let (Some(key), Ok(mut runs)) = (&key, ENDING.lock())
            && runs.get(key).is_some_and(|rx| rx.same_channel(&ended_rx))
        {
            runs.remove(key);
        }
        // The run may be gone: then nobody wants the status.
        let _ = exit_tx.send(status);
    });
    exit_rx
}

/// The guard's last word, once it has exited (its end of the socket is then closed).
async fn read_report(control: &mut tokio::net::UnixStream) -> Option<Report> {
    let mut text = Vec::new();
    control.take(64).read_to_end(&mut text).await.ok()?;
    Report::parse(std::str::from_utf8(&text).ok()?)
}

/// Sends a pipe's lines (without line endings, cut to [`MAX_LINE_BYTES`]) to `tx`.
async fn pump(pipe: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<(Stream, String)>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::with_capacity(256);
    while let Ok(Some(dropped)) = read_line_capped(&mut reader, MAX_LINE_BYTES, &mut buf).await {
        if tx
            .send((stream, line_text(&buf, dropped, MAX_LINE_BYTES)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Reads one line into `line` (without its line ending), keeping at most `max` bytes of it
/// and reading past the rest in the reader's own buffer-sized chunks: memory stays bounded
/// however long the line is. Returns how many bytes were dropped, or `None` at end of input.
pub async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<u64>> {
    line.clear();
    let mut dropped: u64 = 0;
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            // End of input; a last line without a newline still counts.
            return Ok(read_any.then_some(dropped));
        }
        read_any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let keep = max.saturating_sub(line.len()).min(part.len());
        line.extend_from_slice(&part[..keep]);
        dropped += (part.len() - keep) as u64;
        let used = part.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            if line.last() == Some(&b'\r') && dropped == 0 {
                line.pop();
            }
            return Ok(Some(dropped));
        }
    }
}

/// Room kept at the end of a cut line for [`TRUNCATED_MARK`] and the largest count.
const MARK_ROOM: usize = TRUNCATED_MARK.len() + " 18446744073709551615 more bytes dropped]".len();

/// A line's text, at most `max` bytes: invalid UTF-8 replaced; a cut line is cut a little
/// shorter still, at a character boundary, to end with [`TRUNCATED_MARK`] and how many bytes
/// were dropped (the whole line, marker included, stays within `max`, so nothing further
/// down cuts the marker off).
fn line_text(bytes: &[u8], dropped: u64, max: usize) -> String {
    if dropped == 0 {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut kept = &bytes[..bytes.len().min(max.saturating_sub(MARK_ROOM))];
    if let Err(e) = std::str::from_utf8(kept)
        && e.error_len().is_none()
    {
        // The cut fell inside a character: end before it.
        kept = &kept[..e.valid_up_to()];
    }
    let dropped = dropped.saturating_add((bytes.len() - kept.len()) as u64);
    format!(
        "{}{TRUNCATED_MARK} {dropped} more bytes dropped]",
        String::from_utf8_lossy(kept)
    )
}

/// The process groups of runs in progress, so a forced exit can take them along.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Kills the processes of every run in progress (the process is exiting without a drain).
/// Only runs in their own process group are tracked here: a guarded run's guard sees this
/// process exit (its control socket closes) and clears the tree itself.
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
        let Some(pgid) = i32::try_from(pgid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        // ESRCH (the group is already gone) is the expected, harmless failure.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
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

    /// Lines of `input` through [`read_line_capped`], with a small buffer so lines span
    /// many reads.
    async fn capped_lines(input: &[u8], max: usize) -> Vec<(Vec<u8>, u64)> {
        let mut reader = BufReader::with_capacity(7, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while let Some(dropped) = read_line_capped(&mut reader, max, &mut line)
            .await
            .expect("in-memory reads")
        {
            out.push((line.clone(), dropped));
        }
        out
    }

    #[tokio::test]
    async fn long_lines_are_cut_while_reading() {
        let long = [b'a'; 100];
        let mut input = long.to_vec();
        input.extend_from_slice(b"\nshort\r\n\nlast");
        let lines = capped_lines(&input, 10).await;
        assert_eq!(
            lines,
            vec![
                (b"aaaaaaaaaa".to_vec(), 90),
                (b"short".to_vec(), 0),
                (Vec::new(), 0),
                (b"last".to_vec(), 0),
            ]
        );
        assert!(capped_lines(b"", 10).await.is_empty());
        // Exactly at the cap nothing is dropped.
        assert_eq!(
            capped_lines(b"0123456789\n", 10).await,
            vec![(b"0123456789".to_vec(), 0)]
        );

        // A large line: the kept part never grows past the cap, whatever the input size.
        let huge = vec![b'x'; 5 * 1024 * 1024];
        let mut reader = BufReader::new(&huge[..]);
        let mut line = Vec::new();
        let dropped = read_line_capped(&mut reader, MAX_LINE_BYTES, &mut line)
            .await
            .expect("reads");
        assert_eq!(line.len(), MAX_LINE_BYTES);
        assert!(line.capacity() < 2 * MAX_LINE_BYTES, "{}", line.capacity());
        assert_eq!(dropped, Some((huge.len() - MAX_LINE_BYTES) as u64));
    }

    #[test]
    fn cut_lines_say_so_and_never_end_in_half_a_character() {
        let max = MARK_ROOM + 3;
        assert_eq!(line_text(b"plain", 0, max), "plain");
        assert_eq!(
            line_text(b"abcdef", 7, max),
            format!("abc{TRUNCATED_MARK} 10 more bytes dropped]")
        );
        // "é" is two bytes; the cut would keep only its first.
        assert_eq!(
            line_text(b"ab\xc3\xa9", 5, max),
            format!("ab{TRUNCATED_MARK} 7 more bytes dropped]")
        );
        // Even the largest count fits the limit.
        let line = line_text(
            &[b'x'; MAX_LINE_BYTES],
            u64::MAX - MAX_LINE_BYTES as u64,
            MAX_LINE_BYTES,
        );
        assert!(line.len() <= MAX_LINE_BYTES, "{}", line.len());
        let count = u64::MAX - (MAX_LINE_BYTES - MARK_ROOM) as u64;
        assert!(line.ends_with(&format!("{TRUNCATED_MARK} {count} more bytes dropped]")));
    }

    #[test]
    fn the_environment_is_inherited_allowed_or_filtered() {
        let parent = || {
            [
                ("PATH", "/bin"),
                ("LC_ALL", "C"),
                ("TASKD_JWT_SECRET", "s3cret"),
                ("AWS_SECRET_ACCESS_KEY", "xyz"),
            ]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        };
        let set = BTreeMap::from([("MODE".to_owned(), "fast".to_owned())]);
        let names = |env: BTreeMap<OsString, OsString>| -> Vec<String> {
            env.keys()
                .map(|k| k.to_string_lossy().into_owned())
                .collect()
        };
        let all = child_env(&InheritEnv::All, None, parent(), &set);
        assert_eq!(
            names(all),
            [
                "AWS_SECRET_ACCESS_KEY",
                "LC_ALL",
                "MODE",
                "PATH",
                "TASKD_JWT_SECRET"
            ]
        );
        let filtered = child_env(&InheritEnv::All, Some("TASKD_"), parent(), &set);
        assert_eq!(
            names(filtered),
            ["AWS_SECRET_ACCESS_KEY", "LC_ALL", "MODE", "PATH"]
        );
        let only = InheritEnv::Only(vec!["PATH".to_owned(), "LC_*".to_owned()]);
        let env = child_env(&only, Some("TASKD_"), parent(), &set);
        assert_eq!(names(env.clone()), ["LC_ALL", "MODE", "PATH"]);
        assert_eq!(
            env.get(&OsString::from("PATH")),
            Some(&OsString::from("/bin"))
        );
        // The invocation's own variables win over inherited ones.
        let set = BTreeMap::from([("PATH".to_owned(), "/opt/bin".to_owned())]);
        let env = child_env(&only, None, parent(), &set);
        assert_eq!(
            env.get(&OsString::from("PATH")),
            Some(&OsString::from("/opt/bin"))
        );
    }

    #[tokio::test]
    async fn a_bad_working_directory_is_its_own_error() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        for (cwd, problem) in [
            (PathBuf::from("/taskplane-no-such-dir"), "does not exist"),
            (file.path().to_owned(), "is not a directory"),
        ] {
            let inv = Invocation {
                cwd: Some(cwd.clone()),
                ..Invocation::new("pwd")
            };
            let err = run(&inv, StdoutMode::Lines, "", |_, _| async {})
                .await
                .expect_err("no such directory");
            assert_eq!(
                err.to_string(),
                format!(
                    "working directory '{}' {problem} on this worker",
                    cwd.display()
                )
            );
        }
        // A missing program is still named as one.
        let inv = Invocation {
            cwd: Some(PathBuf::from("/")),
            ..Invocation::new("taskplane-no-such-tool")
        };
        let err = run(&inv, StdoutMode::Lines, "hint", |_, _| async {})
            .await
            .expect_err("not installed");
        assert!(err.to_string().contains("was not found on PATH"), "{err}");
    }
}
