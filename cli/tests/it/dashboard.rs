//! `taskctl ui`: the web dashboard's address for the context, and `--open` handing it to the
//! desktop's opener (a stand-in `xdg-open` on PATH records what it was given). The pages
//! themselves are driven in Chromium by `tests/web`.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Daemon, taskctl_command, wait_child, wait_until};

#[test]
fn taskctl_ui_prints_and_opens_the_dashboards_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    let id = taskd.taskctl(&["submit", "echo", "-q"]).ok();
    assert_eq!(taskd.taskctl(&["ui"]).ok(), format!("{}/ui/", taskd.url));
    assert_eq!(
        taskd.taskctl(&["ui", &id]).ok(),
        format!("{}/ui/tasks/{id}", taskd.url)
    );
    let json = taskd
        .taskctl(&["ui", "--workflow", &id, "-o", "json"])
        .json();
    assert_eq!(json["url"], format!("{}/ui/workflows/{id}", taskd.url));
    // The address it prints is a page taskd serves.
    let (status, page) = taskd.http("GET", &format!("/ui/tasks/{id}"), b"");
    assert_eq!(status, 200);
    assert!(page.as_str().is_some_and(|p| p.contains(&id)));
    let line = taskd.taskctl(&["ui", "not-an-id"]).fails_with(2);
    assert!(line.contains("not-an-id"), "{line}");

    // --open: the opener gets the address (and taskctl does not wait for a browser).
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let opened = dir.path().join("opened");
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .expect("write opener");
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = taskctl_command(&taskd.url, &["ui", &id, "--open"])
        .env("PATH", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskctl");
    let run = wait_child(child, Duration::from_secs(30));
    assert_eq!(run.ok(), format!("{}/ui/tasks/{id}", taskd.url));
    wait_until("the opener to run", Duration::from_secs(10), || {
        opened.exists()
    });
    assert_eq!(
        std::fs::read_to_string(&opened).expect("opened"),
        format!("{}/ui/tasks/{id}", taskd.url)
    );
    // No opener at all: one line, exit 1, the address still named.
    let child = taskctl_command(&taskd.url, &["ui", "--open"])
        .env("PATH", dir.path().join("empty"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskctl");
    let line = wait_child(child, Duration::from_secs(30)).fails_with(1);
    assert!(line.contains("xdg-open") && line.contains("/ui/"), "{line}");

    let off_dir = tempfile::tempdir().expect("temp dir");
    let off = Daemon::start(off_dir.path(), &["--no-ui"]);
    let line = off.taskctl(&["ui"]).fails_with(1);
    assert!(line.contains("--no-ui"), "{line}");
}
