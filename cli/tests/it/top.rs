//! `taskctl top` driven for real inside tmux: the dashboard shows tasks changing status,
//! filters to a running task, cancels it after y, and `q` gives the shell back with the
//! terminal restored (canonical mode on, the screen the shell's again).

use crate::common;

use common::Daemon;
use common::tmux::Tmux;

/// The table row of a task (its line starts with the short id, inside the border).
fn row<'a>(screen: &'a str, short_id: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|line| line.trim_start_matches('│').starts_with(short_id))
}

#[test]
fn taskctl_top_in_tmux() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let Some(tmux) = Tmux::start("taskctl_top_in_tmux", 100, 30) else {
        return;
    };
    tmux.wait_for("the shell prompt", |s| s.contains("$"));
    tmux.type_line(&format!(
        "NO_COLOR=1 TASKCTL_SERVER={} {} top --refresh 1s",
        taskd.url,
        env!("CARGO_BIN_EXE_taskctl")
    ));
    tmux.wait_for("the dashboard", |s| {
        s.contains("Taskplane") && s.contains("connected")
    });

    // Tasks appear and change status on screen.
    let sleeper = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=60000", "-q"])
        .ok();
    let quick = taskd
        .taskctl(&["submit", "sleep", "-p", "ms:=2500", "-q"])
        .ok();
    let sleeper_short = &sleeper[sleeper.len() - 8..];
    let quick_short = &quick[quick.len() - 8..];
    tmux.wait_for("the quick task running", |s| {
        row(s, quick_short).is_some_and(|r| r.contains("running"))
    });
    tmux.wait_for("the quick task succeeded", |s| {
        row(s, quick_short).is_some_and(|r| r.contains("succeeded"))
    });
    let screen = tmux.wait_for("the long task running", |s| {
        row(s, sleeper_short).is_some_and(|r| r.contains("running"))
    });
    assert!(
        screen.contains("Workers") && screen.contains("1/"),
        "{screen}"
    );

    // Filter to the running task, cancel it after saying yes.
    tmux.keys(&["/"]);
    tmux.type_text(sleeper_short);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the filter to apply", |s| row(s, quick_short).is_none());
    assert!(row(&screen, sleeper_short).is_some(), "{screen}");
    tmux.keys(&["c"]);
    tmux.wait_for("the confirmation", |s| s.contains("y/n"));
    tmux.keys(&["y"]);
    tmux.wait_for("the task cancelled", |s| {
        row(s, sleeper_short).is_some_and(|r| r.contains("cancelled"))
    });
    assert_eq!(taskd.task(&sleeper)["status"], "cancelled");

    // :queues, p, y: the queue is paused on the server; :audit shows who did it.
    tmux.keys(&["Escape"]);
    tmux.keys(&[":"]);
    tmux.type_text("queues");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the queues view", |s| s.contains("CONTROLS"));
    tmux.keys(&["p"]);
    tmux.wait_for("the pause confirmation", |s| {
        s.contains("Pause queue default?")
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the queue paused on screen", |s| {
        s.lines()
            .any(|l| l.contains("default") && l.contains("paused"))
    });
    let (_, queues) = taskd.http("GET", "/api/v1/queues", b"");
    assert_eq!(queues["queues"][0]["paused"], true, "{queues}");
    tmux.keys(&[":"]);
    tmux.type_text("audit");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the audit entry", |s| {
        s.contains("queue.pause") && s.contains("anonymous@127")
    });
    tmux.keys(&["Escape"]);

    // q: the shell is back and the terminal is out of raw mode.
    tmux.keys(&["q"]);
    tmux.wait_for("the shell prompt after the dashboard", |s| {
        !s.contains("Taskplane") && s.lines().rev().find(|l| !l.trim().is_empty()) == Some("$")
    });
    tmux.type_line("stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; echo done-$((2+3))");
    let screen = tmux.wait_for("the shell to answer", |s| s.contains("done-5"));
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "the terminal was left in raw mode:\n{screen}"
    );
}
