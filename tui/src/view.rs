//! Drawing: turns the [`App`] into widgets. Pure rendering; no I/O and no state changes.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use taskplane_api::text::neutralize_line;
use taskplane_api::{Task, TaskStatus};
use uuid::Uuid;

use crate::app::{App, Connection, Mode, Pending, QueueAction, ScheduleAction};

/// Text from the server (task data, names, messages) as it may reach the terminal: its
/// control characters shown, never obeyed (ratatui drops most of them silently, but lets bidi
/// overrides through).
fn shown(text: &str) -> String {
    neutralize_line(text).into_owned()
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The keys, as `?` lists them.
pub const HELP: &[(&str, &str)] = &[
    ("j/k ↑/↓", "move"),
    (
        "PgUp/PgDn",
        "page (past the end: the next page from the server)",
    ),
    ("g/G", "first / last row"),
    ("Enter", "details and live output of the task"),
    ("Esc", "back; clear the filter"),
    ("/", "filter by id, kind, queue or label k=v"),
    ("s", "cycle the status filter"),
    (":", "command: :queue NAME  :kind K  :status S  :clear  :q"),
    (
        ":views",
        ":tasks  :queues  :schedules  :workflows  :audit (Enter opens one)",
    ),
    (
        "c",
        "cancel the task (in :workflows, the workflow; asks y/n)",
    ),
    (
        "r",
        "retry the task (in :workflows, the workflow; asks y/n)",
    ),
    ("l", "logs: the detail view with the output"),
    (
        "p",
        "pause or resume updates (in :queues, the queue; in :schedules, the schedule)",
    ),
    ("t", "in :schedules: trigger the schedule now (asks y/n)"),
    ("q Ctrl-C", "quit"),
];

/// `values` as a sparkline `width` characters wide (the newest on the right).
pub fn sparkline<I: IntoIterator<Item = u64>>(values: I, width: usize) -> String {
    let values: Vec<u64> = values.into_iter().collect();
    let shown = &values[values.len().saturating_sub(width)..];
    let max = shown.iter().copied().max().unwrap_or(0).max(1);
    let mut line: String = shown
        .iter()
        .map(|v| SPARKS[((*v * 7) / max).min(7) as usize])
        .collect();
    while line.chars().count() < width {
        line.insert(0, ' ');
    }
    line
}

/// `5s`, `3m`, `2h`, `4d`.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn duration(task: &Task, now: DateTime<Utc>) -> String {
    span(task.started_at, task.finished_at, now)
}

/// How long from `started` to `finished` (or now), `-` before a start.
fn span(
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let Some(started) = started else {
        return "-".to_owned();
    };
    let ms = (finished.unwrap_or(now) - started)
        .num_milliseconds()
        .max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        ago(started, started + chrono::Duration::milliseconds(ms))
    }
}

fn status_color(status: TaskStatus) -> Color {
    match status {
        TaskStatus::Succeeded => Color::Green,
        TaskStatus::Failed => Color::Red,
        TaskStatus::Cancelled => Color::DarkGray,
        TaskStatus::Running => Color::Cyan,
        TaskStatus::Retrying => Color::Yellow,
        TaskStatus::Queued | TaskStatus::Scheduled => Color::Blue,
        TaskStatus::Waiting => Color::Magenta,
    }
}

struct Palette {
    color: bool,
}

impl Palette {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }
    fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(&self) -> Style {
        if self.color {
            Style::new()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
}

pub fn render(frame: &mut Frame, app: &mut App) {
    let palette = Palette { color: app.color };
    let area = frame.area();
    let side = app.queues.len().max(app.workers.len()).clamp(1, 6) as u16 + 2;
    let [header, panes, main, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(side),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, app, &palette, header);
    let [queues, workers] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(panes);
    render_queues(frame, app, &palette, queues);
    render_workers(frame, app, &palette, workers);
    match app.mode {
        Mode::Detail(_) => render_detail(frame, app, &palette, main),
        Mode::Schedules | Mode::ConfirmSchedule(..) => {
            render_schedules(frame, app, &palette, main);
        }
        Mode::Workflows => render_workflows(frame, app, &palette, main),
        Mode::Queues | Mode::ConfirmQueue(..) => render_queue_table(frame, app, &palette, main),
        Mode::Audit => render_audit(frame, app, &palette, main),
        Mode::Workflow(_) | Mode::ConfirmWorkflow(..) => {
            render_workflow(frame, app, &palette, main);
        }
        _ => render_tasks(frame, app, &palette, main),
    }
    render_footer(frame, app, &palette, footer);
    if app.mode == Mode::Help {
        render_help(frame, &palette, area);
    }
}

fn render_header(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let (state, color) = match &app.connection {
        Connection::Connecting => ("connecting…".to_owned(), Color::Yellow),
        Connection::Connected => ("● connected".to_owned(), Color::Green),
        Connection::Disconnected(_) => ("disconnected — retrying".to_owned(), Color::Red),
    };
    let mut first = vec![
        Span::styled("Taskplane ", palette.bold()),
        Span::raw(format!("{}  ", shown(&app.server))),
        Span::styled(state, palette.fg(color)),
        Span::raw(format!(
            "  v{}  {:.1} tasks/s",
            app.version,
            app.throughput()
        )),
    ];
    if app.paused {
        first.push(Span::styled("  ⏸ paused", palette.fg(Color::Yellow)));
    }
    let totals = app.totals();
    let mut second: Vec<Span> = Vec::new();
    for status in [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Scheduled,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        if !second.is_empty() {
            second.push(Span::raw(" "));
        }
        second.push(Span::styled(
            format!("{} {}", status, totals.get(&status).copied().unwrap_or(0)),
            palette.fg(status_color(status)),
        ));
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}

fn render_queues(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(" Queues ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.queues.is_empty() {
        frame.render_widget(Paragraph::new("no queues yet"), inner);
        return;
    }
    let spark = (inner.width as usize).saturating_sub(40).clamp(3, 30);
    let lines: Vec<Line> = app
        .queues
        .iter()
        .map(|queue| {
            let history = app
                .history
                .get(&queue.queue)
                .map(|h| h.iter().copied().collect::<Vec<_>>())
                .unwrap_or_default();
            let oldest = queue
                .oldest_ready_secs
                .map(|s| format!("{s:.0}s"))
                .unwrap_or_else(|| "-".to_owned());
            Line::from(vec![
                Span::styled(format!("{:<8.8}", shown(&queue.queue)), palette.bold()),
                // A paused queue at a glance (its controls are in :queues).
                Span::styled(
                    if queue.paused { "‖ " } else { "  " },
                    palette.fg(Color::Yellow),
                ),
                Span::styled(sparkline(history, spark), palette.fg(Color::Cyan)),
                Span::raw(format!(" {:>4} ready {:>5} old", queue.depth, oldest)),
                Span::styled(
                    format!(" {:>3} ✗/m", queue.failed_last_minute),
                    palette.fg(if queue.failed_last_minute > 0 {
                        Color::Red
                    } else {
                        Color::Reset
                    }),
                ),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_workers(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(" Workers ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.workers.is_empty() {
        frame.render_widget(Paragraph::new("no live workers"), inner);
        return;
    }
    let lines: Vec<Line> = app
        .workers
        .iter()
        .map(|worker| {
            let busy_color = if worker.busy >= worker.concurrency {
                Color::Yellow
            } else {
                Color::Green
            };
            Line::from(vec![
                Span::raw(format!("{:<18.18} ", shown(&worker.id))),
                Span::styled(
                    format!("{}/{} busy", worker.busy, worker.concurrency),
                    palette.fg(busy_color),
                ),
                Span::raw(format!("  hb {}", ago(worker.last_heartbeat, app.now))),
                Span::raw(if worker.remote {
                    format!("  remote: {}", shown(&worker.kinds.join(",")))
                } else {
                    String::new()
                }),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn filters(app: &App) -> String {
    let mut parts = vec![format!(
        "status: {}",
        app.query.status.map_or("all", TaskStatus::as_str)
    )];
    if let Some(queue) = &app.query.queue {
        parts.push(format!("queue: {}", shown(queue)));
    }
    if let Some(kind) = &app.query.kind {
        parts.push(format!("kind: {}", shown(kind)));
    }
    if !app.filter.is_empty() {
        parts.push(format!("/{}", shown(&app.filter)));
    }
    if !app.pages.is_empty() {
        parts.push(format!("page {}", app.pages.len() + 1));
    }
    format!(" Tasks [{}] ", parts.join("  "))
}

fn render_tasks(frame: &mut Frame, app: &mut App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(filters(app));
    app.page_rows = (block.inner(area).height as usize).saturating_sub(1).max(1);
    let now = app.now;
    let wide = area.width >= 110;
    let visible = app.visible();
    let rows: Vec<Row> = visible
        .iter()
        .map(|task| {
            let id = task.id.to_string();
            let mut cells = vec![
                // UUIDv7s start with the time, so the tail is what tells them apart.
                Cell::from(if wide {
                    id
                } else {
                    id[id.len() - 8..].to_owned()
                }),
                Cell::from(shown(&task.kind)),
                Cell::from(shown(&task.queue)),
                Cell::from(Span::styled(
                    task.status.as_str(),
                    palette.fg(status_color(task.status)),
                )),
                Cell::from(format!("{}/{}", task.attempts, task.max_attempts)),
                Cell::from(ago(task.created_at, now)),
                Cell::from(duration(task, now)),
            ];
            cells.push(Cell::from(shown(
                task.worker.as_deref().unwrap_or_default(),
            )));
            Row::new(cells)
        })
        .collect();
    let id_width = if wide { 36 } else { 8 };
    let widths = [
        Constraint::Length(id_width),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Min(6),
    ];
    let header = Row::new([
        "ID", "KIND", "QUEUE", "STATUS", "ATT", "AGE", "DUR", "WORKER",
    ])
    .style(palette.bold());
    let empty = visible.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(palette.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
    if empty {
        let hint = if app.connection == Connection::Connecting {
            "loading…"
        } else {
            "no tasks match"
        };
        render_empty(frame, area, hint);
    }
}

/// A hint on the first row under the header of an empty bordered table.
fn render_empty(frame: &mut Frame, area: Rect, hint: &'static str) {
    let inner = Block::bordered().inner(area);
    let line = Rect {
        y: inner.y + 1,
        height: 1,
        ..inner
    };
    frame.render_widget(Paragraph::new(hint), line);
}

/// `in 3m`, `5s ago`.
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at >= now {
        format!("in {}", ago(now, at))
    } else {
        format!("{} ago", ago(at, now))
    }
}

fn render_schedules(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(format!(" Schedules ({}) ", app.schedules.len()));
    let now = app.now;
    let rows: Vec<Row> = app
        .schedules
        .iter()
        .map(|schedule| {
            let next = match (schedule.paused, schedule.next_run_at) {
                (true, _) => "-".to_owned(),
                (false, Some(at)) => relative(at, now),
                (false, None) => "never".to_owned(),
            };
            let last = schedule
                .last_run_at
                .map_or_else(|| "-".to_owned(), |at| relative(at, now));
            let status = match schedule.last_status {
                Some(status) => Span::styled(status.as_str(), palette.fg(status_color(status))),
                None => Span::raw("-"),
            };
            Row::new(vec![
                Cell::from(shown(&schedule.name)),
                Cell::from(shown(&schedule.timing_text())),
                Cell::from(shown(&schedule.task.kind)),
                Cell::from(next),
                Cell::from(last),
                Cell::from(status),
                Cell::from(if schedule.paused {
                    Span::styled("paused", palette.fg(Color::Yellow))
                } else {
                    Span::raw("")
                }),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(2),
        Constraint::Fill(3),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(6),
    ];
    let header =
        Row::new(["NAME", "SCHEDULE", "KIND", "NEXT", "LAST", "STATUS", ""]).style(palette.bold());
    let empty = app.schedules.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(palette.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.schedule_selected));
    frame.render_stateful_widget(table, area, &mut state);
    if empty {
        render_empty(
            frame,
            area,
            "no schedules: taskctl schedule create NAME --cron EXPR KIND",
        );
    }
}

/// A queue's controls in one cell: `paused`, `max 2`, `5/s`, or empty for none.
fn controls(queue: &taskplane_api::QueueStats) -> String {
    taskplane_api::controls_text(queue.paused, queue.max_running, queue.rate_per_sec)
}

fn render_queue_table(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(format!(" Queues ({}) ", app.queues.len()));
    let rows: Vec<Row> = app
        .queues
        .iter()
        .map(|queue| {
            let count = |status: TaskStatus| queue.counts.get(&status).copied().unwrap_or(0);
            let state = controls(queue);
            Row::new(vec![
                Cell::from(shown(&queue.queue)),
                Cell::from(Span::styled(
                    state,
                    palette.fg(if queue.paused {
                        Color::Yellow
                    } else {
                        Color::Reset
                    }),
                )),
                Cell::from(queue.depth.to_string()),
                Cell::from(count(TaskStatus::Running).to_string()),
                Cell::from(
                    queue
                        .oldest_ready_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s")),
                ),
                Cell::from(queue.finished_last_minute.to_string()),
                Cell::from(queue.failed_last_minute.to_string()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(10),
    ];
    let header = Row::new([
        "QUEUE",
        "CONTROLS",
        "READY",
        "RUNNING",
        "OLDEST",
        "DONE/MIN",
        "FAILED/MIN",
    ])
    .style(palette.bold());
    let empty = app.queues.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(palette.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.queue_selected));
    frame.render_stateful_widget(table, area, &mut state);
    if empty {
        render_empty(frame, area, "no queues yet: submit a task");
    }
}

fn render_audit(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(format!(" Audit log ({}) ", app.audit.len()));
    let rows: Vec<Row> = app
        .audit
        .iter()
        .map(|entry| {
            Row::new(vec![
                Cell::from(relative(entry.at, app.now)),
                Cell::from(shown(&entry.actor)),
                Cell::from(Span::styled(shown(&entry.action), palette.bold())),
                Cell::from(shown(&entry.target)),
                Cell::from(shown(&entry.details.to_string())),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(9),
        Constraint::Fill(3),
        Constraint::Length(16),
        Constraint::Fill(3),
        Constraint::Fill(3),
    ];
    let header = Row::new(["WHEN", "ACTOR", "ACTION", "TARGET", "DETAILS"]).style(palette.bold());
    let table = Table::new(rows, widths).header(header).block(block);
    frame.render_widget(table, area);
    if let Some(reason) = &app.audit_error {
        let inner = Block::bordered().inner(area);
        let line = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        frame.render_widget(
            Paragraph::new(format!("cannot read the audit log: {}", shown(reason)))
                .style(palette.fg(Color::Red)),
            line,
        );
    } else if app.audit.is_empty() {
        render_empty(frame, area, "no operator actions recorded yet");
    }
}

fn render_workflows(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let block = Block::bordered().title(format!(" Workflows ({}) ", app.workflows.len()));
    let now = app.now;
    let rows: Vec<Row> = app
        .workflows
        .iter()
        .map(|workflow| {
            let total: u32 = workflow.counts.values().sum();
            let succeeded = workflow.counts.get("succeeded").copied().unwrap_or(0);
            let took = match workflow.finished_at {
                Some(end) => ago(workflow.created_at, end),
                None => ago(workflow.created_at, now),
            };
            Row::new(vec![
                Cell::from(shown(&workflow.name)),
                Cell::from(Span::styled(
                    workflow.status.as_str(),
                    palette.fg(workflow_color(workflow.status)),
                )),
                Cell::from(format!("{succeeded}/{total}")),
                Cell::from(ago(workflow.created_at, now)),
                Cell::from(took),
                Cell::from(workflow.id.to_string()),
            ])
        })
        .collect();
    // The id last, cut short on a narrow screen rather than the name.
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Fill(2),
    ];
    let header =
        Row::new(["NAME", "STATUS", "STEPS", "AGE", "DURATION", "ID"]).style(palette.bold());
    let empty = app.workflows.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(palette.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.workflow_selected));
    frame.render_stateful_widget(table, area, &mut state);
    if empty {
        render_empty(frame, area, "no workflows: taskctl workflow run -f FILE");
    }
}

fn workflow_color(status: taskplane_api::WorkflowStatus) -> Color {
    match status {
        taskplane_api::WorkflowStatus::Running => Color::Cyan,
        taskplane_api::WorkflowStatus::Succeeded => Color::Green,
        taskplane_api::WorkflowStatus::Failed => Color::Red,
        taskplane_api::WorkflowStatus::Cancelled => Color::DarkGray,
    }
}

fn render_workflow(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let Some(workflow) = &app.workflow else {
        frame.render_widget(Paragraph::new("loading…").block(Block::bordered()), area);
        return;
    };
    let block = Block::bordered().title(Line::from(vec![
        Span::raw(format!(
            " Workflow {} ({}) ",
            shown(&workflow.name),
            workflow.id
        )),
        Span::styled(
            format!("{} ", workflow.status),
            palette.fg(workflow_color(workflow.status)),
        ),
    ]));
    let now = app.now;
    let rows: Vec<Row> = workflow
        .tree()
        .into_iter()
        .map(|(prefix, step)| {
            let error = step
                .last_error
                .as_deref()
                .filter(|_| step.status != TaskStatus::Succeeded)
                .map_or_else(String::new, shown);
            Row::new(vec![
                Cell::from(format!("{prefix}{}", shown(&step.id))),
                Cell::from(Span::styled(
                    step.status.as_str(),
                    palette.fg(status_color(step.status)),
                )),
                Cell::from(span(step.started_at, step.finished_at, now)),
                Cell::from(format!("{}/{}", step.attempts, step.max_attempts)),
                Cell::from(shown(&step.kind)),
                Cell::from(Span::styled(error, palette.fg(Color::Red))),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Fill(2),
    ];
    let header =
        Row::new(["STEP", "STATUS", "TIME", "ATTEMPTS", "KIND", "ERROR"]).style(palette.bold());
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(palette.selected());
    let selected = (!workflow.steps.is_empty()).then_some(app.step_selected);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

/// The lines that place a detail task in its workflow: the workflow, the steps it needs
/// and the steps that need it, each with its status.
fn workflow_lines<'a>(task: &Task, app: &'a App, palette: &Palette) -> Vec<Line<'a>> {
    let label = |name: &str| Span::styled(format!("{name:>10}: "), palette.bold());
    let Some(workflow) = app
        .workflow
        .as_ref()
        .filter(|w| Some(w.id) == task.workflow_id)
    else {
        if task.depends_on.is_empty() {
            return Vec::new();
        }
        let ids: Vec<String> = task.depends_on.iter().map(Uuid::to_string).collect();
        return vec![Line::from(vec![label("after"), Span::raw(ids.join(", "))])];
    };
    let Some(me) = workflow.step_of(task.id) else {
        return Vec::new();
    };
    let step = |id: &str| {
        let status = workflow.steps.iter().find(|s| s.id == id).map(|s| s.status);
        let mut spans = vec![Span::raw(format!("{} ", shown(id)))];
        if let Some(status) = status {
            spans.push(Span::styled(
                format!("({status})  "),
                palette.fg(status_color(status)),
            ));
        }
        spans
    };
    let mut lines = vec![Line::from(vec![
        label("workflow"),
        Span::raw(format!(
            "{} ({})  step {}  ",
            shown(&workflow.name),
            workflow.id,
            shown(&me.id)
        )),
        Span::styled(
            workflow.status.as_str(),
            palette.fg(workflow_color(workflow.status)),
        ),
    ])];
    let needs: Vec<Span> = me.needs.iter().flat_map(|id| step(id)).collect();
    if !needs.is_empty() {
        lines.push(Line::from([vec![label("needs")], needs].concat()));
    }
    let needed_by: Vec<Span> = workflow
        .needed_by(&me.id)
        .iter()
        .flat_map(|s| step(&s.id))
        .collect();
    if !needed_by.is_empty() {
        lines.push(Line::from([vec![label("needed by")], needed_by].concat()));
    }
    lines
}

fn render_detail(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let Some(task) = &app.detail else {
        frame.render_widget(Paragraph::new("loading…").block(Block::bordered()), area);
        return;
    };
    let json = |value: &serde_json::Value| shown(&serde_json::to_string(value).unwrap_or_default());
    let time = |at: Option<DateTime<Utc>>| {
        at.map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let field = |name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{name:>10}: "), palette.bold()),
            Span::raw(value),
        ])
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{:>10}: ", "status"), palette.bold()),
            Span::styled(task.status.as_str(), palette.fg(status_color(task.status))),
            Span::raw(format!(
                "  attempt {}/{}  {} on {}  priority {}",
                task.attempts,
                task.max_attempts,
                shown(&task.kind),
                shown(&task.queue),
                task.priority
            )),
        ]),
        field(
            "times",
            format!(
                "created {}  started {}  finished {}  ({})",
                time(Some(task.created_at)),
                time(task.started_at),
                time(task.finished_at),
                duration(task, app.now)
            ),
        ),
        field("worker", shown(task.worker.as_deref().unwrap_or("-"))),
        field("payload", json(&task.payload)),
    ];
    lines.extend(workflow_lines(task, app, palette));
    if !task.labels.is_empty() {
        lines.push(field("labels", shown(&task.labels_text())));
    }
    if let Some(result) = &task.result {
        lines.push(field("result", json(result)));
    }
    if let Some(error) = &task.last_error {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>10}: ", "error"), palette.bold()),
            Span::styled(shown(error), palette.fg(Color::Red)),
        ]));
    }
    let block = Block::bordered().title(format!(" Task {} ", task.id));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let top = (lines.len() as u16 + 1).min(inner.height / 2);
    let [fields, output] =
        Layout::vertical([Constraint::Length(top), Constraint::Min(1)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), fields);
    let finished = task.status.is_terminal();
    let log_block = Block::bordered().title(if finished {
        " Output "
    } else {
        " Output (live) "
    });
    let log_inner = log_block.inner(output);
    frame.render_widget(log_block, output);
    let rows = log_inner.height as usize;
    let start = app.logs.len().saturating_sub(rows);
    let log_lines: Vec<Line> = app.logs[start..]
        .iter()
        .map(|line| {
            let style = match line.stream {
                taskplane_api::LogStream::Stderr => palette.fg(Color::Yellow),
                taskplane_api::LogStream::System => palette.fg(Color::DarkGray),
                taskplane_api::LogStream::Stdout => Style::new(),
            };
            Line::styled(shown(&line.line), style)
        })
        .collect();
    if log_lines.is_empty() {
        let empty = if finished {
            "no output"
        } else {
            "no output yet"
        };
        frame.render_widget(Paragraph::new(empty), log_inner);
    } else {
        frame.render_widget(Paragraph::new(log_lines), log_inner);
    }
}

fn render_footer(frame: &mut Frame, app: &App, palette: &Palette, area: Rect) {
    let line = match &app.mode {
        Mode::Filter(text) => Line::from(format!("/{}▏  (Enter apply, Esc cancel)", shown(text))),
        Mode::Command(text) => Line::from(format!(":{}▏  (Enter run, Esc cancel)", shown(text))),
        Mode::Confirm(pending, id) => {
            let verb = match pending {
                Pending::Cancel => "Cancel",
                Pending::Retry => "Retry",
            };
            Line::styled(format!("{verb} task {id}? y/n"), palette.fg(Color::Yellow))
        }
        Mode::ConfirmSchedule(action, name) => {
            let what = match action {
                ScheduleAction::Trigger => "(one task now)",
                ScheduleAction::Pause | ScheduleAction::Resume => "",
            };
            Line::styled(
                format!("{} schedule {}? {what} y/n", action.verb(), shown(name)),
                palette.fg(Color::Yellow),
            )
        }
        Mode::ConfirmWorkflow(pending, id) => {
            let verb = match pending {
                Pending::Cancel => "Cancel every unfinished step of",
                Pending::Retry => "Run the failed and cancelled steps of",
            };
            Line::styled(
                format!("{verb} workflow {id}? y/n"),
                palette.fg(Color::Yellow),
            )
        }
        Mode::ConfirmQueue(action, name) => Line::styled(
            match action {
                QueueAction::Pause => format!(
                    "Pause queue {}? (no new starts on any worker; running tasks finish) y/n",
                    shown(name)
                ),
                QueueAction::Resume => format!("Resume queue {}? y/n", shown(name)),
            },
            palette.fg(Color::Yellow),
        ),
        Mode::Queues
            if app.message.is_none() && !matches!(app.connection, Connection::Disconnected(_)) =>
        {
            Line::styled(
                if app.readonly {
                    "Esc tasks  j/k move  ⏎ its tasks  : command  q quit  (read-only)"
                } else {
                    "Esc tasks  j/k move  ⏎ its tasks  p pause/resume  : command  q quit"
                },
                palette.fg(Color::DarkGray),
            )
        }
        Mode::Audit
            if app.message.is_none() && !matches!(app.connection, Connection::Disconnected(_)) =>
        {
            Line::styled(
                "Esc tasks  : command  q quit  (newest first)",
                palette.fg(Color::DarkGray),
            )
        }
        Mode::Workflows | Mode::Workflow(_)
            if app.message.is_none() && !matches!(app.connection, Connection::Disconnected(_)) =>
        {
            let back = if app.mode == Mode::Workflows {
                "Esc tasks"
            } else {
                "Esc workflows"
            };
            Line::styled(
                if app.readonly {
                    format!("{back}  j/k move  ⏎ open  : command  q quit  (read-only)")
                } else {
                    format!("{back}  j/k move  ⏎ open  c cancel  r retry  : command  q quit")
                },
                palette.fg(Color::DarkGray),
            )
        }
        Mode::Schedules
            if app.message.is_none() && !matches!(app.connection, Connection::Disconnected(_)) =>
        {
            Line::styled(
                if app.readonly {
                    "Esc tasks  j/k move  : command  q quit  (read-only)"
                } else {
                    "Esc tasks  j/k move  p pause/resume  t trigger  : command  q quit"
                },
                palette.fg(Color::DarkGray),
            )
        }
        _ => match (&app.message, &app.connection) {
            (_, Connection::Disconnected(reason)) => Line::styled(
                format!("disconnected: {}", shown(reason)),
                palette.fg(Color::Red),
            ),
            (Some(message), _) => Line::from(shown(message)),
            (None, _) => Line::styled(
                if app.readonly {
                    "? help  / filter  s status  : command  ⏎ details  p pause  q quit  (read-only)"
                } else {
                    "? help  / filter  s status  : cmd  ⏎ details  c cancel  r retry  p pause  q quit"
                },
                palette.fg(Color::DarkGray),
            ),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn render_help(frame: &mut Frame, palette: &Palette, area: Rect) {
    let width = area.width.min(72);
    let height = (HELP.len() as u16 + 3).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<11}"), palette.bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys (any key closes) ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_maximum() {
        assert_eq!(sparkline([0, 7, 14], 3), "▁▄█");
        assert_eq!(sparkline([5, 5], 4), "  ██");
        assert_eq!(sparkline([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3), "▆▇█");
        assert_eq!(sparkline(Vec::<u64>::new(), 2), "  ");
    }
}
