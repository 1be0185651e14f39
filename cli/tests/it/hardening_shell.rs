//! The shell kind under hostile use, end to end with the real taskd: nothing a task starts
//! outlives its attempt (taskd killed with SIGKILL, a cancel, a timeout), one endless line
//! costs no memory, taskd's secrets stay out of a task's environment, and a missing working
//! directory is named as such.

use crate::common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, wait_until};
use serde_json::Value;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Whether `pid` is a live process (a zombie has ended: it only waits to be reaped).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|close| stat[close + 1..].split_whitespace().next());
    state != Some("Z")
}

/// A task's process tree that tries every way of escaping: a child in its own session
/// (`setsid`), a double-forked daemon (its parent exits at once), and the shell itself. Each
/// writes its pid to a file in `dir`.
struct Escapees {
    files: [PathBuf; 3],
}

impl Escapees {
    fn new(dir: &Path) -> Escapees {
        Escapees {
            files: ["setsid.pid", "daemon.pid", "shell.pid"].map(|name| dir.join(name)),
        }
    }

    fn script(&self) -> String {
        let [setsid, daemon, shell] = self.files.each_ref().map(|f| f.display().to_string());
        format!(
            "setsid sh -c 'echo $$ > {setsid}.tmp && mv {setsid}.tmp {setsid}; exec sleep 600' & \
             (sh -c 'echo $$ > {daemon}.tmp && mv {daemon}.tmp {daemon}; exec sleep 600' &) ; \
             echo $$ > {shell}.tmp && mv {shell}.tmp {shell}; sleep 600"
        )
    }

    /// Waits until all three have started and returns their pids.
    fn started(&self) -> Vec<u32> {
        wait_until(
            "every process of the task to start",
            Duration::from_secs(20),
            || self.files.iter().all(|f| f.exists()),
        );
        let pids: Vec<u32> = self
            .files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("pid file");
                text.trim().parse().expect("a pid")
            })
            .collect();
        for pid in &pids {
            assert!(running(*pid), "{pid} should be running");
        }
        pids
    }

    fn assert_all_gone(pids: &[u32], after: &str) {
        wait_until(
            &format!("every process of the task to be gone after {after}"),
            Duration::from_secs(10),
            || !pids.iter().any(|pid| running(*pid)),
        );
    }
}

fn submit_shell(taskd: &Daemon, extra: &[&str], script: &str) -> String {
    let mut args = vec!["submit", "shell", "-q", "--max-attempts", "1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    taskd.taskctl(&args).ok()
}

#[test]
fn killing_taskd_with_sigkill_takes_the_whole_task_tree_along() {
    let dir = temp();
    let mut taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let escapees = Escapees::new(dir.path());
    submit_shell(&taskd, &[], &escapees.script());
    let pids = escapees.started();
    taskd.kill9();
    // Without the guard these run on for ten minutes, and the task runs a second copy of
    // itself beside them once its lease expires.
    Escapees::assert_all_gone(&pids, "taskd was killed");
}

#[test]
fn cancelling_a_shell_task_kills_children_in_other_sessions_too() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let escapees = Escapees::new(dir.path());
    let id = submit_shell(&taskd, &[], &escapees.script());
    let pids = escapees.started();
    taskd.taskctl(&["cancel", &id]).ok();
    let run = taskd.taskctl(&["watch", &id]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(taskd.task(&id)["status"], "cancelled");
    Escapees::assert_all_gone(&pids, "the cancel");
}

#[test]
fn a_timed_out_shell_task_leaves_no_process_behind() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let escapees = Escapees::new(dir.path());
    let id = submit_shell(&taskd, &["--timeout", "3s"], &escapees.script());
    let pids = escapees.started();
    let run = taskd.taskctl(&["watch", &id]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let task = taskd.task(&id);
    assert_eq!(task["status"], "failed", "{task}");
    Escapees::assert_all_gone(&pids, "the timeout");
}

#[test]
fn a_retry_after_a_timeout_starts_only_once_the_old_tree_is_gone() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let pids = dir.path().join("pids");
    let overlap = dir.path().join("overlap");
    // Each attempt first checks that no process of an earlier attempt is alive, then leaves
    // a child in its own session and waits to be timed out.
    let script = format!(
        "for p in $(cat {pids} 2>/dev/null); do kill -0 $p 2>/dev/null && echo $p >> {overlap}; done; \
         setsid sh -c 'echo $$ >> {pids}; exec sleep 600' & echo $$ >> {pids}; sleep 600",
        pids = pids.display(),
        overlap = overlap.display()
    );
    let id = taskd
        .taskctl(&[
            "submit",
            "shell",
            "-q",
            "--max-attempts",
            "3",
            "--timeout",
            "1s",
            "--retry-base",
            "1ms",
            "--retry-max",
            "2ms",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .ok();
    let run = taskd.taskctl(&["watch", &id]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(taskd.task(&id)["attempts"], 3);
    assert!(
        !overlap.exists(),
        "an attempt started while these of an earlier one ran: {}",
        std::fs::read_to_string(&overlap).unwrap_or_default()
    );
    let all: Vec<u32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(all.len(), 6, "{all:?}");
    Escapees::assert_all_gone(&all, "the last timeout");
}

#[test]
fn the_guard_keeps_exit_codes_stdin_less_runs_and_finishes_when_the_program_does() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    // A background child holding the pipes does not keep a finished task running, and
    // stdin is empty (cat ends at once).
    let run = taskd.shell_wait("setsid sleep 600 & cat; echo bye >&2; exit 5");
    run.fails_with(3);
    assert_eq!(run.json()["last_error"], "exited with status 5: bye");
    let run = taskd.shell_wait("kill -TERM $$");
    run.fails_with(3);
    assert_eq!(run.json()["last_error"], "killed by signal 15");
}

/// The highest resident memory `pid` has had, in bytes (VmHWM).
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}

#[test]
fn one_endless_line_is_cut_while_it_is_read() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let run = taskd.shell_wait("head -c 300000000 /dev/zero | tr '\\0' a; echo; echo second line");
    run.ok();
    let id = run.json()["id"].as_str().expect("id").to_owned();
    let logs = taskd.taskctl(&["logs", &id, "-o", "json"]).ok();
    let lines: Vec<String> = logs
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).expect("a JSON line");
            line["line"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "{:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    // The kept head and the note on what was dropped fit the 16 KiB a line may have.
    let first = &lines[0];
    assert!(first.len() <= 16 * 1024, "{}", first.len());
    let kept = first.chars().take_while(|&c| c == 'a').count();
    assert!(
        kept > 15 * 1024,
        "the cut line keeps its head: {kept} bytes"
    );
    assert_eq!(
        &first[kept..],
        format!(
            "… [line truncated: {} more bytes dropped]",
            300_000_000 - kept
        )
    );
    assert_eq!(lines[1], "second line");
    let peak = peak_memory(taskd.pid());
    assert!(
        peak < 150 * 1024 * 1024,
        "taskd peaked at {} MiB reading one long line",
        peak / 1024 / 1024
    );
}

fn env_of_task(taskd: &Daemon) -> Vec<String> {
    let run = taskd.submit_once(
        "shell",
        &[
            "--payload",
            r#"{"argv":["env"],"env":{"FROM_PAYLOAD":"yes"}}"#,
        ],
    );
    run.ok();
    let id = run.json()["id"].as_str().expect("id").to_owned();
    let logs = taskd.taskctl(&["logs", &id]).ok();
    logs.lines().map(str::to_owned).collect()
}

#[test]
fn shell_tasks_see_an_allow_list_of_taskds_environment() {
    let secrets = [
        ("TASKD_SOMETHING_SECRET", OsString::from("xyz-taskd")),
        ("AWS_SECRET_ACCESS_KEY", OsString::from("xyz-aws")),
        ("LC_TIME", OsString::from("C")),
    ];
    let dir = temp();
    let taskd = Daemon::start_env(dir.path(), &["--enable-shell"], &secrets);
    let env = env_of_task(&taskd);
    assert!(env.iter().any(|l| l.starts_with("PATH=")), "{env:?}");
    assert!(env.iter().any(|l| l == "LC_TIME=C"), "{env:?}");
    assert!(env.iter().any(|l| l == "FROM_PAYLOAD=yes"), "{env:?}");
    assert!(!env.iter().any(|l| l.contains("xyz")), "{env:?}");
    // RUST_LOG is set for the test's taskd: not on the list, so not passed.
    assert!(!env.iter().any(|l| l.starts_with("RUST_LOG=")), "{env:?}");

    // The operator can pass a name through, and only that one.
    let dir = temp();
    let taskd = Daemon::start_env(
        dir.path(),
        &[
            "--enable-shell",
            "--shell-pass-env",
            "AWS_SECRET_ACCESS_KEY",
        ],
        &secrets,
    );
    let env = env_of_task(&taskd);
    assert!(
        env.iter().any(|l| l == "AWS_SECRET_ACCESS_KEY=xyz-aws"),
        "{env:?}"
    );
    assert!(!env.iter().any(|l| l.contains("xyz-taskd")), "{env:?}");
    assert!(env.iter().any(|l| l == "FROM_PAYLOAD=yes"), "{env:?}");
}

#[test]
fn a_missing_working_directory_is_not_a_missing_program() {
    let dir = temp();
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    for (cwd, problem) in [
        ("/nope".to_owned(), "does not exist"),
        (file.display().to_string(), "is not a directory"),
    ] {
        let payload = serde_json::json!({ "argv": ["pwd"], "cwd": cwd }).to_string();
        let run = taskd.submit_once("shell", &["--payload", &payload]);
        run.fails_with(3);
        assert_eq!(
            run.json()["last_error"],
            format!("working directory '{cwd}' {problem} on this worker")
        );
    }
}
