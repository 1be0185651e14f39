//! Snapshot tests of every view at 80×24 and 120×40, drawn on ratatui's `TestBackend`.
//! The expected screens live in `tests/snapshots/`; after an intended change of the layout,
//! regenerate them with `UPDATE_SNAPSHOTS=1 cargo test -p taskplane-tui --test views` and
//! review the diff.

use chrono::{DateTime, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::json;
use taskplane_api::{QueueStats, Task, TaskList, WorkerInfo};
use taskplane_tui::app::{self, Action, App, Query};
use taskplane_tui::view;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
}

fn task(n: u128, status: &str, kind: &str, queue: &str, started: Option<&str>) -> Task {
    serde_json::from_value(json!({
        "id": uuid::Uuid::from_u128(0x01a2_0671_0581_71d8_84a1_0000_0000_0000 + n),
        "kind": kind, "queue": queue, "priority": 0,
        "payload": {"n": n as u64}, "status": status, "attempts": 1, "max_attempts": 3,
        "timeout_secs": 300, "run_at": "2026-11-23T11:59:00Z",
        "created_at": "2026-11-23T11:59:00Z", "updated_at": "2026-11-23T11:59:30Z",
        "started_at": started, "finished_at": if status == "succeeded" || status == "failed" { Some("2026-11-23T11:59:31Z") } else { None },
        "result": if status == "succeeded" { Some(json!({"ok": true})) } else { None },
        "last_error": if status == "failed" { Some("exited with status 2: disk full") } else { None },
        "idempotency_key": null, "labels": {}, "worker": started.map(|_| "node-1-4242-ab12"),
        "cancel_requested": false
    }))
    .expect("a task")
}

fn loaded() -> App {
    let mut app = App::new("http://127.0.0.1:7070", false, false);
    app.version = "0.1.0".into();
    app.now = now();
    let tasks = vec![
        task(
            1,
            "running",
            "sleep",
            "default",
            Some("2026-11-23T11:59:30Z"),
        ),
        task(
            2,
            "failed",
            "shell",
            "default",
            Some("2026-11-23T11:59:30Z"),
        ),
        task(3, "succeeded", "echo", "mail", Some("2026-11-23T11:59:30Z")),
        task(4, "queued", "http", "default", None),
        task(5, "scheduled", "noop", "mail", None),
    ];
    app::update(
        &mut app,
        Action::Tasks(
            Query::default(),
            TaskList {
                tasks,
                next_cursor: None,
            },
        ),
    );
    for depth in [0u64, 2, 5, 9, 4, 1] {
        let queues: Vec<QueueStats> = ["default", "mail"]
            .iter()
            .map(|name| {
                serde_json::from_value(json!({
                    "queue": name,
                    "counts": {"queued": depth, "running": 1, "succeeded": 40, "failed": 2,
                               "scheduled": 1, "retrying": 0, "cancelled": 0},
                    "depth": depth, "oldest_ready_secs": 3.0, "finished_last_minute": 42,
                    "failed_last_minute": 2, "throughput_per_sec": 0.7
                }))
                .expect("stats")
            })
            .collect();
        app::update(&mut app, Action::Queues(queues));
    }
    let workers: Vec<WorkerInfo> = vec![
        serde_json::from_value(json!({
            "id": "node-1-4242-ab12", "host": "node-1", "pid": 4242, "queues": ["default", "mail"],
            "concurrency": 8, "busy": 3, "started_at": "2026-11-23T10:00:00Z",
            "last_heartbeat": "2026-11-23T11:59:59Z"
        }))
        .expect("worker"),
        // A remote worker (the lease protocol) shows the kinds it serves.
        serde_json::from_value(json!({
            "id": "gpu-7-99-cd34", "host": "10.0.0.7", "pid": 0, "queues": ["default"],
            "concurrency": 2, "busy": 2, "started_at": "2026-11-23T10:00:00Z",
            "last_heartbeat": "2026-11-23T11:59:58Z", "kinds": ["resize"], "remote": true
        }))
        .expect("remote worker"),
    ];
    app::update(&mut app, Action::Workers(workers));
    app
}

fn key(app: &mut App, code: KeyCode) {
    app::update(app, Action::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn draw(app: &mut App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| view::render(frame, app))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn check(name: &str, screen: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, screen).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; create it with UPDATE_SNAPSHOTS=1 and review it:\n{screen}",
            path.display()
        )
    });
    assert_eq!(
        screen, expected,
        "{name} changed; if intended, UPDATE_SNAPSHOTS=1"
    );
}

fn both_sizes(name: &str, app: &mut App) {
    check(&format!("{name}_80x24"), &draw(app, 80, 24));
    check(&format!("{name}_120x40"), &draw(app, 120, 40));
}

#[test]
fn the_task_table() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('j'));
    both_sizes("tasks", &mut app);
}

#[test]
fn the_detail_view_with_live_output() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Enter);
    let id = app.detail_id().expect("a detail");
    let lines = (1..=3)
        .map(|n| {
            serde_json::from_value(json!({
                "seq": n, "attempt": 1, "stream": if n == 3 { "stderr" } else { "stdout" },
                "ts": "2026-11-23T11:59:31Z", "line": format!("line {n}")
            }))
            .expect("a line")
        })
        .collect();
    app::update(
        &mut app,
        Action::Logs {
            task: id,
            lines,
            reset: true,
        },
    );
    both_sizes("detail", &mut app);
}

#[test]
fn help_filter_confirm_and_disconnected() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('?'));
    both_sizes("help", &mut app);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('/'));
    for c in "mail".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    both_sizes("filter", &mut app);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('c'));
    both_sizes("confirm", &mut app);
    key(&mut app, KeyCode::Char('n'));
    app::update(&mut app, Action::Disconnected("cannot reach taskd".into()));
    both_sizes("disconnected", &mut app);
    app::update(&mut app, Action::Done("ok".into()));
    key(&mut app, KeyCode::Char(':'));
    for c in "queue mail".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    both_sizes("command", &mut app);
}

fn workflow() -> taskplane_api::Workflow {
    let step = |n: u128, id: &str, status: &str, needs: &[&str], error: Option<&str>| {
        json!({
            "id": id, "task_id": uuid::Uuid::from_u128(0x01a2_0671_0581_71d8_84a1_0000_0000_0100 + n),
            "kind": "echo", "status": status, "needs": needs, "attempts": u32::from(status != "waiting" && status != "cancelled"),
            "max_attempts": 3,
            "started_at": if status == "waiting" || status == "cancelled" { None } else { Some("2026-11-23T11:59:30Z") },
            "finished_at": if status == "succeeded" || status == "failed" { Some("2026-11-23T11:59:31Z") } else { None },
            "last_error": error,
        })
    };
    serde_json::from_value(json!({
        "id": uuid::Uuid::from_u128(0x01a2_0671_0581_71d8_84a1_0000_0000_0200),
        "name": "deploy", "status": "failed", "created_at": "2026-11-23T11:59:00Z",
        "finished_at": "2026-11-23T11:59:31Z",
        "counts": {"succeeded": 2, "failed": 1, "cancelled": 1},
        "steps": [
            step(1, "apply", "succeeded", &[], None),
            step(2, "rollout", "failed", &["apply"], Some("exited with status 1: image not found")),
            step(3, "smoke", "succeeded", &["apply"], None),
            step(4, "notify", "cancelled", &["rollout", "smoke"], Some("dependency_failed: step rollout (task 01a20671-0581-71d8-84a1-000000000102) failed")),
        ]
    }))
    .expect("a workflow")
}

#[test]
fn the_workflows_views_and_a_step_in_its_workflow() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char(':'));
    for c in "workflows".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    app::update(&mut app, Action::Workflows(vec![workflow()]));
    both_sizes("workflows", &mut app);
    key(&mut app, KeyCode::Enter);
    app::update(&mut app, Action::Workflow(Box::new(workflow())));
    key(&mut app, KeyCode::Char('j'));
    both_sizes("workflow", &mut app);
    // Enter on the selected step (rollout) opens its task, placed in its workflow.
    key(&mut app, KeyCode::Enter);
    let id = app.detail_id().expect("a detail");
    let mut step = task(
        0x102,
        "failed",
        "echo",
        "default",
        Some("2026-11-23T11:59:30Z"),
    );
    step.id = id;
    step.workflow_id = Some(workflow().id);
    app::update(&mut app, Action::Detail(Box::new(step)));
    app::update(&mut app, Action::Workflow(Box::new(workflow())));
    both_sizes("workflow_step", &mut app);
}

#[test]
fn an_empty_server() {
    let mut app = App::new("http://127.0.0.1:7070", true, false);
    app.version = "0.1.0".into();
    app.now = now();
    app::update(
        &mut app,
        Action::Tasks(Query::default(), TaskList::default()),
    );
    both_sizes("empty", &mut app);
}

/// Escapes a hostile task or server could send: OSC 52 (the clipboard), CSI clear, BEL, a
/// C1 CSI and a bidi override.
const EVIL: &str = "osc52:\x1b]52;c;aGk=\x07 clear:\x1b[2J c1:\u{9b}31m bidi:\u{202e}dlrow";

fn raw_controls(screen: &str) -> Vec<char> {
    screen
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

#[test]
fn hostile_text_is_shown_not_obeyed() {
    let mut app = loaded();
    let mut evil = task(
        9,
        "failed",
        "shell",
        "default",
        Some("2026-11-23T11:59:30Z"),
    );
    evil.kind = EVIL.into();
    evil.queue = EVIL.into();
    evil.worker = Some(EVIL.into());
    evil.last_error = Some(EVIL.into());
    evil.payload = json!({ "m": EVIL });
    evil.labels.insert("k".into(), EVIL.into());
    app::update(
        &mut app,
        Action::Tasks(
            Query::default(),
            TaskList {
                tasks: vec![evil.clone()],
                next_cursor: None,
            },
        ),
    );
    let table = draw(&mut app, 120, 40);
    assert!(raw_controls(&table).is_empty(), "{table}");
    assert!(
        table.contains("^[]52"),
        "the table shows the escape:\n{table}"
    );

    key(&mut app, KeyCode::Enter);
    app::update(&mut app, Action::Detail(Box::new(evil)));
    let lines = vec![
        serde_json::from_value(json!({
            "seq": 1, "attempt": 1, "stream": "stdout",
            "ts": "2026-11-23T11:59:31Z", "line": EVIL
        }))
        .expect("a line"),
    ];
    let id = app.detail_id().expect("a detail");
    app::update(
        &mut app,
        Action::Logs {
            task: id,
            lines,
            reset: true,
        },
    );
    app::update(&mut app, Action::Done(EVIL.into()));
    let detail = draw(&mut app, 120, 40);
    assert_eq!(raw_controls(&detail), Vec::<char>::new(), "{detail}");
    for shown in ["^[]52;c;aGk=^G", "^[[2J", "<U+009B>31m", "<U+202E>dlrow"] {
        let count = detail.matches(shown).count();
        // The error, the output line and the footer message at least (the payload is JSON,
        // which escapes C0 controls its own way).
        assert!(count >= 3, "{shown} shown {count} times:\n{detail}");
    }

    app::update(&mut app, Action::Disconnected(EVIL.into()));
    let footer = draw(&mut app, 120, 40);
    assert!(raw_controls(&footer).is_empty(), "{footer}");
    assert!(footer.contains("disconnected: osc52:^[]52"), "{footer}");
}

#[test]
fn a_finished_task_shows_its_labels_and_no_live_output() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Enter);
    let mut detail = app.detail.clone().expect("a detail");
    detail.labels = [("team".to_owned(), "ops".to_owned())].into();
    app.detail = Some(detail);
    let screen = draw(&mut app, 120, 40);
    assert!(screen.contains("labels: team=ops"), "{screen}");
    assert!(screen.contains("no output"), "{screen}");
    assert!(!screen.contains("no output yet"), "{screen}");
    assert!(!screen.contains("Output (live)"), "{screen}");
}

#[test]
fn the_schedules_view() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char(':'));
    for c in "schedules".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let schedules: Vec<taskplane_api::Schedule> = serde_json::from_value(json!([
        {"name": "nightly-backup", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
         "overlap": "skip", "catch_up": "none", "paused": false,
         "task": {"kind": "shell", "payload": {"argv": ["backup.sh"]}},
         "next_run_at": "2026-11-24T01:00:00Z", "last_run_at": "2026-11-23T01:00:00Z",
         "last_task_id": "01a20671-0581-71d8-84a1-000000000003", "last_status": "succeeded",
         "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z"},
        {"name": "heartbeat", "every_secs": 30, "timezone": "UTC", "overlap": "allow",
         "catch_up": "none", "paused": true, "task": {"kind": "http"},
         "next_run_at": "2026-11-23T12:00:30Z", "last_run_at": "2026-11-23T11:59:30Z",
         "last_task_id": null, "last_status": "failed",
         "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z"}
    ]))
    .expect("schedules");
    app::update(&mut app, Action::Schedules(schedules));
    both_sizes("schedules", &mut app);
    key(&mut app, KeyCode::Char('t'));
    check("schedule_confirm_80x24", &draw(&mut app, 80, 24));
}

#[test]
fn the_queues_view_and_its_confirm() {
    let mut app = loaded();
    let queues: Vec<QueueStats> = serde_json::from_value(json!([
        {"queue": "default", "counts": {"queued": 4, "running": 2}, "depth": 4,
         "oldest_ready_secs": 12.0, "finished_last_minute": 30, "failed_last_minute": 1,
         "throughput_per_sec": 0.5, "paused": false, "max_running": 2, "rate_per_sec": 0.5},
        {"queue": "partner-api", "counts": {"queued": 120}, "depth": 120,
         "oldest_ready_secs": 300.0, "finished_last_minute": 0, "failed_last_minute": 0,
         "throughput_per_sec": 0.0, "paused": true, "max_running": null, "rate_per_sec": 10.0}
    ]))
    .expect("queues");
    app::update(&mut app, Action::Queues(queues));
    key(&mut app, KeyCode::Char(':'));
    for c in "queues".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    both_sizes("queues", &mut app);
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('p'));
    check("queue_confirm_80x24", &draw(&mut app, 80, 24));
}

#[test]
fn the_audit_view() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char(':'));
    for c in "audit".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let entries: Vec<taskplane_api::AuditEntry> = serde_json::from_value(json!([
        {"seq": 3, "at": "2026-11-23T11:59:00Z", "actor": "alice", "action": "queue.pause",
         "target": "partner-api", "details": {}},
        {"seq": 2, "at": "2026-11-23T11:30:00Z", "actor": "anonymous@10.0.0.9",
         "action": "dlq.purge", "target": "dlq",
         "details": {"older_than_secs": 86400, "kind": null, "queue": null}}
    ]))
    .expect("entries");
    app::update(&mut app, Action::Audit(Ok(entries)));
    both_sizes("audit", &mut app);
    app::update(
        &mut app,
        Action::Audit(Err("forbidden: the token lacks the admin scope".into())),
    );
    check("audit_refused_80x24", &draw(&mut app, 80, 24));
}
