//! A tmux server of a test's own, for driving the real binaries on a terminal (spinners,
//! `taskctl top`, Ctrl-C) without touching the user's sessions.

use std::process::Command;
use std::time::Duration;

use super::wait_until;

/// One tmux server with one session, `main`, running a clean bash.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (and a note) when tmux is not installed, unless the services are required.
    pub fn start(test: &str, width: u16, height: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            taskplane_testkit::skip(&format!(
                "{test}: tmux is not installed (scripts/install-test-tools.sh installs it)"
            ));
            return None;
        }
        let tmux = Tmux {
            socket: format!("taskplane-test-{}-{test}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
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

    pub fn run(&self, args: &[&str]) -> String {
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

    /// Presses keys (tmux key names: `Enter`, `C-c`, `q`, …).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
    }

    /// Types `line` and presses Enter.
    pub fn type_line(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
    }

    /// The visible screen, as text.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Waits until the screen satisfies `check`; fails showing the last screen.
    pub fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
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
