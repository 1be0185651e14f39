//! `taskctl top` driven for real inside tmux: the dashboard shows tasks changing status,
//! filters to a running task, cancels it after y, and `q` gives the shell back with the
//! terminal restored (canonical mode on, the screen the shell's again).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, wait_until};

/// A tmux server of its own, so tests do not touch the user's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var("TASKPLANE_REQUIRE_SERVICES").is_err(),
                "tmux is needed for this test (scripts/services.sh installs it)"
            );
            eprintln!("SKIPPED taskctl_top_in_tmux: tmux is not installed");
            return None;
        }
        let tmux = Tmux {
            socket: format!("taskplane-test-{}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "TERM=xterm-256color",
            "PS1=$ ",
            "bash",
            "--norc",
            "--noprofile",
        ]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "top", "-l", line]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, Duration::from_secs(20), || {
                last = self.screen();
                check(&last)
            })
        }));
        if found.is_err() {
            panic!("timed out waiting for {what}; the screen:\n{last}");
        }
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

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
    let Some(tmux) = Tmux::start(100, 30) else {
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
    tmux.run(&["send-keys", "-t", "top", "-l", sleeper_short]);
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
