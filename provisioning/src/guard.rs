//! The guard: a small process between taskd and each program a task runs, which makes sure
//! that nothing the program started outlives the attempt, even when taskd is killed with
//! SIGKILL.
//!
//! taskd starts the guard by re-executing its own binary (`/proc/self/exe`) with
//! [`GUARD_ARG`] as the first argument, the resolved program and its arguments after it, and
//! one end of a Unix socket pair as standard input (the control socket; only taskd holds the
//! other end). The guard
//!
//! 1. starts its own session (`setsid`), so the terminal's and taskd's process-group signals
//!    do not reach it and it can never be confused with taskd's group;
//! 2. makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so descendants that call
//!    `setsid` or double-fork to detach are reparented to the guard instead of to init, and
//!    stay findable as its descendants;
//! 3. reads one frame from the control socket: the program's standard input (`<len>\n`
//!    followed by that many bytes; `0\n` means /dev/null);
//! 4. runs the program with the environment and working directory taskd gave the guard,
//!    standard output and error going straight to taskd's pipes;
//! 5. waits for the first of: the program exits, the control socket reaches end-of-file
//!    (taskd dropped the run on cancel or timeout, or taskd died by any means, SIGKILL
//!    included: the kernel closes its end), or SIGTERM/SIGINT/SIGHUP;
//! 6. then kills every descendant: it walks `/proc` for the processes whose parent chain
//!    leads to the guard, sends each SIGKILL (through a pidfd, after checking the process is
//!    still the one it saw, so a recycled pid is never hit), reaps what died, and repeats
//!    until no descendant is left (or, after 10 s, names in the task's log the ones it cannot
//!    kill: another user's, started through sudo);
//! 7. reports the program's status on the control socket (`exit N`, `signal N`, or
//!    `spawn-error ERRNO`) and exits with it as well: the code itself, or 128+N when a signal
//!    ended the program (127 when it could not be started), for anyone reading the guard's
//!    own status.
//!
//! PR_SET_PDEATHSIG is deliberately not used: it fires when the *thread* that forked the
//! guard exits, and taskd's runtime retires idle threads, which would kill healthy runs. The
//! control socket's end-of-file says the same thing without that trap. What the guard cannot
//! survive is its own SIGKILL (the OOM killer, say); then the program runs on unguarded, as
//! it would without a guard.
//!
//! The parsing of `/proc/<pid>/stat`, the descendant walk and the control messages are pure
//! and unit-tested here; the guard itself is tested end to end through taskd
//! (`cli/tests/hardening_shell.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

/// The first argument that turns the taskd binary into a guard.
pub const GUARD_ARG: &str = "__taskplane-guard";

/// The exit code of a guard whose program could not be started (as a shell reports it).
const SPAWN_FAILED_CODE: u8 = 127;

/// Runs the guard and returns its exit code when this process was started as one
/// (`argv[1] == GUARD_ARG`); `None` otherwise. taskd calls this first thing in `main`.
pub fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(GUARD_ARG.as_ref()) {
        return None;
    }
    let Some(program) = args.next() else {
        eprintln!("taskd: {GUARD_ARG} is taskd's internal process guard, not a command");
        return Some(ExitCode::from(2));
    };
    Some(match guard(program, args.collect()) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("taskd process guard: {error}");
            ExitCode::from(SPAWN_FAILED_CODE)
        }
    })
}

/// Why the guard could not do its job.
#[derive(Debug, thiserror::Error)]
enum GuardError {
    /// Standard input is not taskd's control socket, or it broke before the frame arrived.
    #[error("cannot read the control socket (this process is started by taskd only): {0}")]
    Control(std::io::Error),
    /// The control frame is not `<len>\n<bytes>`.
    #[error("the control socket sent a malformed frame")]
    Frame,
    /// A system call the guard depends on failed.
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> GuardError {
    move |source| GuardError::Setup { what, source }
}

/// The guard's whole life; returns its exit code.
fn guard(program: OsString, args: Vec<OsString>) -> Result<u8, GuardError> {
    rustix::process::setsid().map_err(|e| setup("setsid")(e.into()))?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| setup("PR_SET_CHILD_SUBREAPER")(e.into()))?;
    let control = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(GuardError::Control)?;
    let mut control = UnixStream::from(control);
    let input = read_frame(&mut control)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(setup("cannot start the runtime"))?;
    let report = runtime.block_on(supervise(program, args, input, &control))?;
    // The runtime made the socket non-blocking (the flag is shared by every copy of it);
    // the report is written blocking. taskd may be gone (that may be why the guard is
    // stopping): nobody to tell then.
    let _ = control.set_nonblocking(false);
    let _ = control.write_all(report.encode().as_bytes());
    Ok(report.exit_code())
}

/// Reads the program's standard input frame: `<len>\n` and `len` bytes.
fn read_frame(control: &mut UnixStream) -> Result<Vec<u8>, GuardError> {
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = control.read(&mut byte).map_err(GuardError::Control)?;
        if n == 0 {
            return Err(GuardError::Frame);
        }
        if byte[0] == b'\n' {
            break;
        }
        header.push(byte[0]);
        if header.len() > 20 {
            return Err(GuardError::Frame);
        }
    }
    let len = parse_frame_header(&header).ok_or(GuardError::Frame)?;
    let mut input = vec![0u8; len];
    control
        .read_exact(&mut input)
        .map_err(GuardError::Control)?;
    Ok(input)
}

/// Runs the program until it exits or the guard is told to stop, then clears the tree.
/// Returns how the program ended.
async fn supervise(
    program: OsString,
    args: Vec<OsString>,
    input: Vec<u8>,
    control: &UnixStream,
) -> Result<Report, GuardError> {
    use tokio::io::AsyncReadExt;
    use tokio::signal::unix::{SignalKind, signal};

    // Registered before the program starts, so no exit can go unnoticed.
    let mut child_exit = signal(SignalKind::child()).map_err(setup("SIGCHLD handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(setup("SIGINT handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(setup("SIGHUP handler"))?;

    let mut command = std::process::Command::new(&program);
    command
        .args(&args)
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Ok(Report::SpawnFailed(error.raw_os_error().unwrap_or(0))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading its input closes the pipe: its exit status
        // tells, not this write.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let program_pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    // The child is reaped with waitpid below, never through std's handle.
    drop(child);

    let control = control
        .try_clone()
        .and_then(|c| {
            c.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(c)
        })
        .map_err(GuardError::Control)?;
    let mut control = control;
    let mut scratch = [0u8; 64];
    let mut status = None;
    loop {
        // Orphans reparented to the guard are reaped as they die, so none lingers as a
        // zombie while the program runs.
        if let Some(found) = reap_ready(program_pid) {
            status = Some(found);
            break;
        }
        tokio::select! {
            _ = child_exit.recv() => {}
            read = control.read(&mut scratch) => match read {
                // End-of-file: taskd dropped the run or died. Stray bytes are ignored.
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
        }
    }
    let status = kill_descendants(program_pid, status, &mut child_exit).await;
    // Without a status (it cannot happen: the program is the guard's child and is reaped
    // above), the program was killed, so it reads as SIGKILL.
    Ok(status.map_or(Report::Signaled(Signal::KILL.as_raw()), Report::from_wait))
}

/// Reaps every child that has ended, without blocking; returns the program's status if it
/// was among them.
fn reap_ready(program: Option<Pid>) -> Option<WaitStatus> {
    let mut found = None;
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if Some(pid) == program {
            found = Some(status);
        }
    }
    found
}

/// How long the guard keeps trying to kill descendants that do not die: a process of
/// another user (started through sudo, say) cannot be killed by the guard's user.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Kills every descendant of the guard and reaps them; returns the program's status once
/// known (`status`, or what reaping it found).
async fn kill_descendants(
    program: Option<Pid>,
    mut status: Option<WaitStatus>,
    child_exit: &mut tokio::signal::unix::Signal,
) -> Option<WaitStatus> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let give_up = tokio::time::Instant::now() + KILL_DEADLINE;
    loop {
        if let Some(found) = reap_ready(program) {
            status = Some(found);
        }
        let table = process_table();
        let tree = descendants(me, &table);
        if tree.is_empty() {
            return status;
        }
        if tokio::time::Instant::now() >= give_up {
            // The guard's stderr is the task's: the survivors are named in its log.
            eprintln!("taskd process guard: could not kill {tree:?}; leaving them");
            return status;
        }
        for pid in &tree {
            if let Some(entry) = table.get(pid)
                && entry.state != 'Z'
            {
                kill_if_unchanged(*pid, entry.ppid);
            }
        }
        // Until one of the guard's children ends. Descendants whose parent died are
        // reparented to the guard without a signal to it, hence the short bound.
        let _ = tokio::time::timeout(Duration::from_millis(50), child_exit.recv()).await;
    }
}

/// SIGKILLs `pid` if it is still the process that had parent `ppid`: the pidfd pins the
/// process, so the check and the signal are about the same one even if the pid is reused.
fn kill_if_unchanged(pid: i32, ppid: i32) {
    use rustix::io::Errno;
    let Some(target) = Pid::from_raw(pid) else {
        return;
    };
    let plain_kill = || {
        let _ = rustix::process::kill_process(target, Signal::KILL);
    };
    match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => {
            if read_stat(pid).is_some_and(|now| now.ppid == ppid) {
                match rustix::process::pidfd_send_signal(&pidfd, Signal::KILL) {
                    Ok(()) | Err(Errno::SRCH) => {}
                    // A seccomp filter that allows pidfd_open but not this.
                    Err(_) => plain_kill(),
                }
            }
        }
        // Gone already.
        Err(Errno::SRCH) => {}
        // No pidfds here (a kernel before 5.3, a seccomp filter): the race they close is a
        // narrow one, and the process must go.
        Err(_) => plain_kill(),
    }
}

/// One process, as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z` (zombie), `T`, …
    pub state: char,
    pub ppid: i32,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid …`. The command name may hold spaces
/// and parentheses, so the fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find(" (")?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat { pid, state, ppid })
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Every process on the host, by pid (processes that end during the scan are skipped).
fn process_table() -> BTreeMap<i32, ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .map(|stat| (stat.pid, stat))
        .collect()
}

/// The pids whose chain of parents leads to `root` (not `root` itself).
pub fn descendants(root: i32, table: &BTreeMap<i32, ProcStat>) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for stat in table.values() {
        children.entry(stat.ppid).or_default().push(stat.pid);
    }
    let mut found = BTreeSet::new();
    let mut pending = vec![root];
    while let Some(parent) = pending.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            // A pid is visited once, so even a corrupt table with a cycle ends.
            if child != root && found.insert(child) {
                pending.push(child);
            }
        }
    }
    found
}

/// The control frame taskd sends first: the program's standard input.
pub fn encode_frame(input: &[u8]) -> Vec<u8> {
    let mut frame = format!("{}\n", input.len()).into_bytes();
    frame.extend_from_slice(input);
    frame
}

fn parse_frame_header(header: &[u8]) -> Option<usize> {
    std::str::from_utf8(header).ok()?.parse().ok()
}

/// How the program ended, as the guard reports it to taskd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// It exited with this code.
    Exited(i32),
    /// This signal ended it.
    Signaled(i32),
    /// It could not be started: this errno.
    SpawnFailed(i32),
}

impl Report {
    fn from_wait(status: WaitStatus) -> Report {
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Report::Exited(code),
            (None, Some(signal)) => Report::Signaled(signal),
            (None, None) => Report::Signaled(Signal::KILL.as_raw()),
        }
    }

    /// One line on the control socket.
    pub fn encode(self) -> String {
        match self {
            Report::Exited(code) => format!("exit {code}\n"),
            Report::Signaled(signal) => format!("signal {signal}\n"),
            Report::SpawnFailed(errno) => format!("spawn-error {errno}\n"),
        }
    }

    /// Reads what [`Report::encode`] wrote; anything else is `None`.
    pub fn parse(text: &str) -> Option<Report> {
        let (word, number) = text.trim().split_once(' ')?;
        let number = number.parse().ok()?;
        match word {
            "exit" => Some(Report::Exited(number)),
            "signal" => Some(Report::Signaled(number)),
            "spawn-error" => Some(Report::SpawnFailed(number)),
            _ => None,
        }
    }

    /// The guard's own exit code: the program's, 128+N for a signal, 127 when it did not start.
    pub fn exit_code(self) -> u8 {
        match self {
            Report::Exited(code) => (code & 0xff) as u8,
            Report::Signaled(signal) => 128u8.wrapping_add((signal & 0x7f) as u8),
            Report::SpawnFailed(_) => SPAWN_FAILED_CODE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, ppid: i32) -> (i32, ProcStat) {
        (
            pid,
            ProcStat {
                pid,
                state: 'S',
                ppid,
            },
        )
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (sleep) S 4200 4242 4200 0 -1 4194560 98 0 0 0 0 0 0 0 20 0 1 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 4200
            })
        );
        // A name can hold spaces and parentheses: only the last ')' ends it.
        let line = "7 (a) b (c)) Z 1 7 7 0 -1\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 7,
                state: 'Z',
                ppid: 1
            })
        );
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x)"), None);
        assert_eq!(parse_stat("x (y) S 1"), None);
        // This very process parses, with its real parent.
        let me = std::process::id() as i32;
        let mine = read_stat(me).expect("own stat");
        assert_eq!(mine.pid, me);
        assert_eq!(mine.ppid, std::os::unix::process::parent_id() as i32);
    }

    #[test]
    fn descendants_follow_every_generation_and_nothing_else() {
        let table: BTreeMap<i32, ProcStat> = [
            stat(1, 0),
            stat(10, 1), // the guard
            stat(11, 10),
            stat(12, 11),
            stat(13, 12),
            stat(14, 10), // a double-forked daemon, reparented to the guard
            stat(20, 1),  // unrelated
            stat(21, 20),
        ]
        .into_iter()
        .collect();
        assert_eq!(descendants(10, &table), BTreeSet::from([11, 12, 13, 14]));
        assert!(descendants(13, &table).is_empty());
        assert!(descendants(99, &table).is_empty());
        // A cycle (pid reuse seen mid-scan) cannot loop forever.
        let cycle: BTreeMap<i32, ProcStat> = [stat(5, 6), stat(6, 5)].into_iter().collect();
        assert_eq!(descendants(5, &cycle), BTreeSet::from([6]));
    }

    #[test]
    fn reports_round_trip_and_map_to_exit_codes() {
        for report in [
            Report::Exited(3),
            Report::Signaled(9),
            Report::SpawnFailed(13),
        ] {
            assert_eq!(Report::parse(&report.encode()), Some(report));
        }
        assert_eq!(Report::parse("exit"), None);
        assert_eq!(Report::parse("exit x"), None);
        assert_eq!(Report::parse("quit 1"), None);
        assert_eq!(Report::Exited(0).exit_code(), 0);
        assert_eq!(Report::Exited(2).exit_code(), 2);
        assert_eq!(Report::Signaled(9).exit_code(), 137);
        assert_eq!(Report::Signaled(15).exit_code(), 143);
        assert_eq!(Report::SpawnFailed(2).exit_code(), 127);
    }

    #[test]
    fn frames_carry_the_input_and_its_length() {
        assert_eq!(encode_frame(b""), b"0\n");
        assert_eq!(encode_frame(b"ab\n"), b"3\nab\n");
        assert_eq!(parse_frame_header(b"3"), Some(3));
        assert_eq!(parse_frame_header(b"-1"), None);
        assert_eq!(parse_frame_header(b""), None);
    }
}
