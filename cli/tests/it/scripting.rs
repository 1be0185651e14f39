//! taskctl as scripts use it: ids through pipes and xargs, output formats, and shell
//! completion (the committed scripts are current, and bash completes subcommands and the
//! live server's task ids).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Daemon;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Runs a bash script with taskctl on the PATH, pointed at `url`.
fn bash(url: &str, script: &str) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_taskctl"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::temp_dir())
        .env("TASKCTL_SERVER", url)
        .current_dir(repo())
        .output()
        .expect("bash");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_committed_completions_and_man_pages_are_current() {
    let out = tempfile::tempdir().expect("temp dir");
    let url = "http://127.0.0.1:1";
    let dir = out.path().display().to_string();
    let (code, _, stderr) = bash(url, &format!("taskctl completions --dir {dir}"));
    assert_eq!(code, 0, "{stderr}");
    let committed = repo().join("completions");
    let list = |root: &Path| -> Vec<String> {
        let mut files = Vec::new();
        for sub in ["", "man"] {
            for entry in std::fs::read_dir(root.join(sub))
                .expect("read dir")
                .flatten()
            {
                if entry.path().is_file() {
                    files.push(format!("{sub}/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        files.sort();
        files
    };
    let fresh = list(out.path());
    assert_eq!(
        fresh,
        list(&committed),
        "completions/ is stale: run `cargo run -p taskctl -- completions --dir completions`"
    );
    for file in &fresh {
        let new = std::fs::read(out.path().join(file.trim_start_matches('/'))).expect("read");
        let old = std::fs::read(committed.join(file.trim_start_matches('/'))).expect("read");
        assert!(
            new == old,
            "completions{file} is stale: run `cargo run -p taskctl -- completions --dir completions`"
        );
    }
    let (_, printed, _) = bash(url, "taskctl completions bash");
    let committed_bash = std::fs::read_to_string(committed.join("taskctl.bash")).expect("read");
    assert_eq!(printed, committed_bash);
}

#[test]
fn ids_flow_through_pipes_and_xargs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &["--enable-shell"]);
    let (code, out, err) = bash(
        &taskd.url,
        r#"id=$(taskctl submit noop -q) && taskctl watch "$id""#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");

    for _ in 0..3 {
        taskd
            .taskctl(&[
                "submit",
                "shell",
                "--max-attempts",
                "1",
                "--wait",
                "-q",
                "--",
                "false",
            ])
            .fails_with(3);
    }
    let (code, out, err) = bash(
        &taskd.url,
        "taskctl list -o id --status failed | xargs taskctl retry",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("queued again")).count(),
        3,
        "{out}"
    );
    let (_, ids, _) = bash(&taskd.url, "taskctl list -o id");
    assert_eq!(ids.lines().count(), 4);
    assert!(ids.lines().all(|l| l.len() == 36), "{ids}");
}

#[test]
fn table_wide_and_headerless_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &[]);
    taskd
        .taskctl(&["submit", "noop", "--label", "team=ops", "--wait", "-q"])
        .ok();
    let table = taskd.taskctl(&["list"]).ok();
    assert!(
        table.starts_with("ID "),
        "a table by default, piped or not: {table}"
    );
    let wide = taskd.taskctl(&["list", "-o", "wide"]).ok();
    assert!(
        wide.lines().next().unwrap_or("").contains("LABELS"),
        "{wide}"
    );
    assert!(wide.contains("team=ops"), "{wide}");
    let bare = taskd.taskctl(&["list", "--no-headers"]).ok();
    assert_eq!(bare.lines().count(), 1);
    assert!(!bare.contains("KIND"), "{bare}");
    let jsonl = taskd.taskctl(&["list", "-o", "jsonl"]).ok();
    let task: serde_json::Value = serde_json::from_str(jsonl.trim()).expect("one JSON line");
    assert_eq!(task["labels"]["team"], "ops");
}

#[test]
fn bash_completes_subcommands_and_live_task_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taskd = Daemon::start(dir.path(), &["--kinds", "resize"]);
    let id = taskd
        .taskctl(&["submit", "noop", "--queue", "mail", "-q"])
        .ok();
    let complete = |words: &str, cword: usize, current: &str, previous: &str| {
        let script = format!(
            "source completions/taskctl.bash; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _clap_complete_taskctl taskctl '{current}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let (code, out, err) = bash(&taskd.url, &script);
        assert_eq!(code, 0, "{err}");
        out
    };
    let subcommands = complete("taskctl su", 1, "su", "taskctl");
    assert_eq!(subcommands.trim(), "submit");
    let ids = complete("taskctl status ''", 2, "", "status");
    assert!(ids.lines().any(|l| l == id), "{ids}");
    let queues = complete("taskctl list --queue ''", 3, "", "--queue");
    assert!(queues.lines().any(|l| l == "mail"), "{queues}");
    let kinds = complete("taskctl submit ''", 2, "", "submit");
    assert!(kinds.lines().any(|l| l == "sleep"), "{kinds}");
    assert!(
        kinds.lines().any(|l| l == "resize"),
        "a declared kind: {kinds}"
    );
    let served = complete("taskctl worker --kind ''", 3, "", "--kind");
    assert_eq!(served.trim(), "resize", "only declared kinds");
    let statuses = complete("taskctl list --status ''", 3, "", "--status");
    assert!(statuses.lines().any(|l| l == "failed"), "{statuses}");
    assert_eq!(
        statuses.lines().count(),
        taskplane_api::TaskStatus::ALL.len(),
        "{statuses}"
    );
}
