//! The dashboard's state and the pure `update` that every input goes through: keys, data
//! from the poller, results of actions. `update` does no I/O; it returns the effects the
//! runtime must carry out.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use taskplane_api::{
    AuditEntry, LogLine, QueueStats, Schedule, Task, TaskList, TaskStatus, WorkerInfo, Workflow,
};
use uuid::Uuid;

/// How many depth samples a queue's sparkline keeps (one per refresh).
pub const HISTORY: usize = 120;

/// What the task table asks the server for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub status: Option<TaskStatus>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// The page: `None` is the newest.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    Disconnected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Cancel,
    Retry,
}

/// What `p` and `t` do to a schedule in the schedules view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAction {
    Pause,
    Resume,
    Trigger,
}

impl ScheduleAction {
    pub fn verb(self) -> &'static str {
        match self {
            ScheduleAction::Pause => "Pause",
            ScheduleAction::Resume => "Resume",
            ScheduleAction::Trigger => "Trigger",
        }
    }
}

/// What `p` does to a queue in the queues view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    Pause,
    Resume,
}

impl QueueAction {
    pub fn verb(self) -> &'static str {
        match self {
            QueueAction::Pause => "pause",
            QueueAction::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a `/` filter.
    Filter(String),
    /// Typing a `:` command.
    Command(String),
    /// Asking y/n before acting on a task.
    Confirm(Pending, Uuid),
    Help,
    /// Looking at one task.
    Detail(Uuid),
    /// The schedules view (`:schedules`).
    Schedules,
    /// Asking y/n before acting on a schedule (from the schedules view).
    ConfirmSchedule(ScheduleAction, String),
    /// The workflows view (`:workflows`).
    Workflows,
    /// One workflow's steps, as a tree.
    Workflow(Uuid),
    /// Asking y/n before cancelling or retrying a workflow.
    ConfirmWorkflow(Pending, Uuid),
    /// The queues view (`:queues`): their controls, with pause and resume.
    Queues,
    /// Asking y/n before pausing or resuming a queue.
    ConfirmQueue(QueueAction, String),
    /// The audit log (`:audit`), newest first.
    Audit,
}

/// Everything that changes the dashboard.
#[derive(Debug, Clone)]
pub enum Action {
    Key(KeyEvent),
    /// A page of tasks for `query` (pages for an older query are ignored).
    Tasks(Query, TaskList),
    Queues(Vec<QueueStats>),
    Workers(Vec<WorkerInfo>),
    /// Every schedule (read while the schedules view is open).
    Schedules(Vec<Schedule>),
    /// The newest workflows (read while the workflows view is open).
    Workflows(Vec<Workflow>),
    /// The workflow open in its view, or the one the detail task is a step of.
    Workflow(Box<Workflow>),
    /// The newest audit entries (read while the audit view is open), or why they could
    /// not be read (an admin token's to read).
    Audit(Result<Vec<AuditEntry>, String>),
    /// The task shown in the detail view, freshly read (boxed: a task is large).
    Detail(Box<Task>),
    /// More output of the detail task; `reset` starts over (another task).
    Logs {
        task: Uuid,
        lines: Vec<LogLine>,
        reset: bool,
    },
    Disconnected(String),
    /// An action on a task finished; the message is shown in the status line.
    Done(String),
    Tick(DateTime<Utc>),
}

/// What the runtime must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Fetch again now (the query, the page or the detail task changed).
    Refresh,
    Cancel(Uuid),
    Retry(Uuid),
    /// Pause, resume or trigger the schedule of this name.
    Schedule(ScheduleAction, String),
    /// Cancel or retry a workflow.
    Workflow(Pending, Uuid),
    /// Pause or resume the queue of this name.
    Queue(QueueAction, String),
    Quit,
}

pub struct App {
    pub server: String,
    pub version: String,
    pub readonly: bool,
    pub color: bool,
    pub connection: Connection,
    pub query: Query,
    /// Cursors of the pages before this one, for PgUp.
    pub pages: Vec<Option<String>>,
    pub tasks: Vec<Task>,
    pub next_cursor: Option<String>,
    /// The `/` filter: matches id, kind, queue or a label (`k=v`).
    pub filter: String,
    pub selected: usize,
    pub queues: Vec<QueueStats>,
    pub history: BTreeMap<String, VecDeque<u64>>,
    pub workers: Vec<WorkerInfo>,
    pub schedules: Vec<Schedule>,
    pub schedule_selected: usize,
    pub workflows: Vec<Workflow>,
    pub workflow_selected: usize,
    pub queue_selected: usize,
    pub audit: Vec<AuditEntry>,
    /// Why the audit log could not be read, if it could not.
    pub audit_error: Option<String>,
    /// The workflow [`App::workflow_id`] names, once read.
    pub workflow: Option<Workflow>,
    /// The selected row of the workflow's tree.
    pub step_selected: usize,
    /// Where Esc in the detail view goes back to (a workflow's steps, else the tasks).
    pub back: Option<Mode>,
    pub mode: Mode,
    pub paused: bool,
    pub detail: Option<Task>,
    pub logs: Vec<LogLine>,
    pub message: Option<String>,
    /// The message the ticks last saw, and since when: a message goes after [`MESSAGE_FOR`].
    message_seen: Option<(String, DateTime<Utc>)>,
    pub now: DateTime<Utc>,
    pub quit: bool,
    /// Rows the task table shows, for PgUp/PgDn (set by the view's size).
    pub page_rows: usize,
}

impl App {
    pub fn new(server: &str, readonly: bool, color: bool) -> App {
        App {
            server: server.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            readonly,
            color,
            connection: Connection::Connecting,
            query: Query::default(),
            pages: Vec::new(),
            tasks: Vec::new(),
            next_cursor: None,
            filter: String::new(),
            selected: 0,
            queues: Vec::new(),
            history: BTreeMap::new(),
            workers: Vec::new(),
            schedules: Vec::new(),
            schedule_selected: 0,
            workflows: Vec::new(),
            workflow_selected: 0,
            queue_selected: 0,
            audit: Vec::new(),
            audit_error: None,
            workflow: None,
            step_selected: 0,
            back: None,
            mode: Mode::Normal,
            paused: false,
            detail: None,
            logs: Vec::new(),
            message: None,
            message_seen: None,
            now: Utc::now(),
            quit: false,
            page_rows: 10,
        }
    }

    /// The tasks the table shows: the page, narrowed by the `/` filter.
    pub fn visible(&self) -> Vec<&Task> {
        let needle = self.filter.to_lowercase();
        self.tasks
            .iter()
            .filter(|t| {
                needle.is_empty()
                    || t.id.to_string().contains(&needle)
                    || t.kind.to_lowercase().contains(&needle)
                    || t.queue.to_lowercase().contains(&needle)
                    || t.labels
                        .iter()
                        .any(|(k, v)| format!("{k}={v}").to_lowercase().contains(&needle))
            })
            .collect()
    }

    pub fn selected_task(&self) -> Option<&Task> {
        self.visible().get(self.selected).copied()
    }

    /// The id of the task the poller should read in full, if any.
    /// Whether the schedules view is open (the poller reads schedules then).
    pub fn showing_schedules(&self) -> bool {
        matches!(self.mode, Mode::Schedules | Mode::ConfirmSchedule(..))
    }

    pub fn selected_schedule(&self) -> Option<&Schedule> {
        self.schedules.get(self.schedule_selected)
    }

    /// Whether the audit view is open (the poller reads the audit log then).
    pub fn showing_audit(&self) -> bool {
        self.mode == Mode::Audit
    }

    pub fn selected_queue(&self) -> Option<&QueueStats> {
        self.queues.get(self.queue_selected)
    }

    /// Whether the workflows view is open (the poller reads workflows then).
    pub fn showing_workflows(&self) -> bool {
        self.mode == Mode::Workflows
    }

    /// The workflow the poller should read: the one open in its view, or the one the
    /// detail task is a step of.
    pub fn workflow_id(&self) -> Option<Uuid> {
        match self.mode {
            Mode::Workflow(id) | Mode::ConfirmWorkflow(_, id) => Some(id),
            Mode::Detail(_) => self.detail.as_ref().and_then(|task| task.workflow_id),
            _ => None,
        }
    }

    pub fn selected_workflow(&self) -> Option<&Workflow> {
        self.workflows.get(self.workflow_selected)
    }

    pub fn detail_id(&self) -> Option<Uuid> {
        match self.mode {
            Mode::Detail(id) => Some(id),
            _ => None,
        }
    }

    fn clamp_selection(&mut self) {
        let len = self.visible().len();
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// Totals over every queue, by status.
    pub fn totals(&self) -> BTreeMap<TaskStatus, u64> {
        let mut totals: BTreeMap<TaskStatus, u64> =
            TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        for queue in &self.queues {
            for (status, count) in &queue.counts {
                *totals.entry(*status).or_default() += count;
            }
        }
        totals
    }

    pub fn throughput(&self) -> f64 {
        self.queues.iter().map(|q| q.throughput_per_sec).sum()
    }
}

const STATUS_CYCLE: [Option<TaskStatus>; 8] = [
    None,
    Some(TaskStatus::Queued),
    Some(TaskStatus::Running),
    Some(TaskStatus::Retrying),
    Some(TaskStatus::Scheduled),
    Some(TaskStatus::Succeeded),
    Some(TaskStatus::Failed),
    Some(TaskStatus::Cancelled),
];

/// Applies one action; answers the effects to carry out.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Key(key) => on_key(app, key),
        Action::Tasks(query, page) => {
            if query == app.query {
                app.connection = Connection::Connected;
                app.tasks = page.tasks;
                app.next_cursor = page.next_cursor;
                app.clamp_selection();
            }
            Vec::new()
        }
        Action::Queues(queues) => {
            app.connection = Connection::Connected;
            for queue in &queues {
                let samples = app.history.entry(queue.queue.clone()).or_default();
                samples.push_back(queue.depth);
                while samples.len() > HISTORY {
                    samples.pop_front();
                }
            }
            app.queues = queues;
            app.queue_selected = app.queue_selected.min(app.queues.len().saturating_sub(1));
            Vec::new()
        }
        Action::Audit(Ok(entries)) => {
            app.audit = entries;
            app.audit_error = None;
            Vec::new()
        }
        Action::Audit(Err(reason)) => {
            app.audit.clear();
            app.audit_error = Some(reason);
            Vec::new()
        }
        Action::Workers(workers) => {
            app.workers = workers;
            Vec::new()
        }
        Action::Schedules(schedules) => {
            app.schedules = schedules;
            app.schedule_selected = app
                .schedule_selected
                .min(app.schedules.len().saturating_sub(1));
            Vec::new()
        }
        Action::Workflows(workflows) => {
            app.workflows = workflows;
            app.workflow_selected = app
                .workflow_selected
                .min(app.workflows.len().saturating_sub(1));
            Vec::new()
        }
        Action::Workflow(workflow) => {
            if app.workflow_id() == Some(workflow.id) {
                app.step_selected = app
                    .step_selected
                    .min(workflow.steps.len().saturating_sub(1));
                app.workflow = Some(*workflow);
            }
            Vec::new()
        }
        Action::Detail(task) => {
            if app.detail_id() == Some(task.id) {
                app.detail = Some(*task);
            }
            Vec::new()
        }
        Action::Logs { task, lines, reset } => {
            if app.detail_id() == Some(task) {
                if reset {
                    app.logs.clear();
                }
                app.logs.extend(lines);
                let excess = app.logs.len().saturating_sub(1000);
                app.logs.drain(..excess);
            }
            Vec::new()
        }
        Action::Disconnected(reason) => {
            app.connection = Connection::Disconnected(reason);
            Vec::new()
        }
        Action::Done(message) => {
            app.message = Some(message);
            vec![Effect::Refresh]
        }
        Action::Tick(now) => {
            app.now = now;
            expire_message(app);
            Vec::new()
        }
    }
}

/// How long a status-line message (an action's outcome) stays.
pub const MESSAGE_FOR: chrono::Duration = chrono::Duration::seconds(5);

/// Clears a message once it has been shown for [`MESSAGE_FOR`].
fn expire_message(app: &mut App) {
    match (&app.message, &app.message_seen) {
        (None, _) => app.message_seen = None,
        (Some(text), Some((seen, since))) if text == seen => {
            if app.now - *since >= MESSAGE_FOR {
                app.message = None;
                app.message_seen = None;
            }
        }
        (Some(text), _) => app.message_seen = Some((text.clone(), app.now)),
    }
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return vec![Effect::Quit];
    }
    match app.mode.clone() {
        Mode::Filter(text) => edit(app, key, text, true),
        Mode::Command(text) => edit(app, key, text, false),
        Mode::Confirm(pending, id) => {
            app.mode = Mode::Normal;
            app.back = None;
            match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    app.message = None;
                    vec![match pending {
                        Pending::Cancel => Effect::Cancel(id),
                        Pending::Retry => Effect::Retry(id),
                    }]
                }
                _ => {
                    app.message = Some("nothing done".to_owned());
                    Vec::new()
                }
            }
        }
        Mode::ConfirmSchedule(action, name) => {
            app.mode = Mode::Schedules;
            answered(app, key.code, Effect::Schedule(action, name))
        }
        Mode::ConfirmWorkflow(pending, id) => {
            app.mode = Mode::Workflow(id);
            answered(app, key.code, Effect::Workflow(pending, id))
        }
        Mode::ConfirmQueue(action, name) => {
            app.mode = Mode::Queues;
            answered(app, key.code, Effect::Queue(action, name))
        }
        Mode::Queues => queues_key(app, key),
        Mode::Audit => audit_key(app, key),
        Mode::Schedules => schedules_key(app, key),
        Mode::Workflows => workflows_key(app, key),
        Mode::Workflow(id) => workflow_key(app, key, id),
        Mode::Help => {
            app.mode = Mode::Normal;
            Vec::new()
        }
        Mode::Detail(id) => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('l') => {
                app.mode = app.back.take().unwrap_or(Mode::Normal);
                app.detail = None;
                app.logs.clear();
                vec![Effect::Refresh]
            }
            KeyCode::Char('q') => {
                app.quit = true;
                vec![Effect::Quit]
            }
            KeyCode::Char('c') | KeyCode::Char('r') => ask(app, key.code, id),
            KeyCode::Char('p') => toggle_pause(app),
            _ => Vec::new(),
        },
        Mode::Normal => normal_key(app, key),
    }
}

fn normal_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let len = app.visible().len();
    match key.code {
        KeyCode::Char('q') => {
            app.quit = true;
            vec![Effect::Quit]
        }
        KeyCode::Char('?') => {
            app.mode = Mode::Help;
            Vec::new()
        }
        KeyCode::Char('j') | KeyCode::Down => {
            app.selected = (app.selected + 1).min(len.saturating_sub(1));
            Vec::new()
        }
        KeyCode::Char('k') | KeyCode::Up => {
            app.selected = app.selected.saturating_sub(1);
            Vec::new()
        }
        KeyCode::Char('g') | KeyCode::Home => {
            app.selected = 0;
            Vec::new()
        }
        KeyCode::Char('G') | KeyCode::End => {
            app.selected = len.saturating_sub(1);
            Vec::new()
        }
        KeyCode::PageDown => {
            if app.selected + 1 >= len
                && let Some(next) = app.next_cursor.clone()
            {
                // Past the last row: the next page from the server.
                app.pages.push(app.query.cursor.take());
                app.query.cursor = Some(next);
                app.selected = 0;
                return vec![Effect::Refresh];
            }
            app.selected = (app.selected + app.page_rows).min(len.saturating_sub(1));
            Vec::new()
        }
        KeyCode::PageUp => {
            if app.selected == 0
                && let Some(previous) = app.pages.pop()
            {
                app.query.cursor = previous;
                return vec![Effect::Refresh];
            }
            app.selected = app.selected.saturating_sub(app.page_rows);
            Vec::new()
        }
        KeyCode::Enter | KeyCode::Char('l') => match app.selected_task() {
            Some(task) => {
                let id = task.id;
                app.detail = Some(task.clone());
                app.logs.clear();
                app.mode = Mode::Detail(id);
                vec![Effect::Refresh]
            }
            None => Vec::new(),
        },
        KeyCode::Esc => {
            if !app.filter.is_empty() {
                app.filter.clear();
                app.clamp_selection();
            }
            app.message = None;
            Vec::new()
        }
        KeyCode::Char('/') => {
            app.mode = Mode::Filter(app.filter.clone());
            Vec::new()
        }
        KeyCode::Char(':') => {
            app.mode = Mode::Command(String::new());
            Vec::new()
        }
        KeyCode::Char('s') => {
            let at = STATUS_CYCLE
                .iter()
                .position(|s| *s == app.query.status)
                .unwrap_or(0);
            let status = STATUS_CYCLE[(at + 1) % STATUS_CYCLE.len()];
            set_query(app, |q| q.status = status)
        }
        KeyCode::Char('p') => toggle_pause(app),
        KeyCode::Char(c @ ('c' | 'r')) => match app.selected_task() {
            Some(task) => {
                let id = task.id;
                ask(app, KeyCode::Char(c), id)
            }
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Moves `selected` among `len` rows for j/k/g/G and the arrows; false for other keys.
fn move_in(selected: &mut usize, len: usize, code: KeyCode) -> bool {
    match code {
        KeyCode::Char('j') | KeyCode::Down => {
            *selected = (*selected + 1).min(len.saturating_sub(1))
        }
        KeyCode::Char('k') | KeyCode::Up => *selected = selected.saturating_sub(1),
        KeyCode::Char('g') | KeyCode::Home => *selected = 0,
        KeyCode::Char('G') | KeyCode::End => *selected = len.saturating_sub(1),
        _ => return false,
    }
    true
}

/// Keys of the workflows view: move, Enter opens one, c/r cancel or retry it (asked
/// first); Esc goes back to the tasks.
fn workflows_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    if move_in(&mut app.workflow_selected, app.workflows.len(), key.code) {
        return Vec::new();
    }
    let selected = app.selected_workflow().map(|w| w.id);
    if let Some(effects) = leave_view(app, key.code) {
        return effects;
    }
    match key.code {
        KeyCode::Enter => match selected {
            Some(id) => open_workflow(app, id),
            None => Vec::new(),
        },
        KeyCode::Char(c @ ('c' | 'r')) => match selected {
            Some(id) => ask_workflow(app, c, id),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn open_workflow(app: &mut App, id: Uuid) -> Vec<Effect> {
    if app.workflow.as_ref().map(|w| w.id) != Some(id) {
        app.workflow = None;
        app.step_selected = 0;
    }
    app.mode = Mode::Workflow(id);
    vec![Effect::Refresh]
}

fn ask_workflow(app: &mut App, c: char, id: Uuid) -> Vec<Effect> {
    if app.readonly {
        app.message = Some("read-only: actions are disabled (--readonly)".to_owned());
        return Vec::new();
    }
    let pending = if c == 'c' {
        Pending::Cancel
    } else {
        Pending::Retry
    };
    app.mode = Mode::ConfirmWorkflow(pending, id);
    Vec::new()
}

/// Keys of one workflow's steps: move, Enter opens the step's task (Esc there comes back
/// here), c/r cancel or retry the workflow; Esc goes back to the workflows.
fn workflow_key(app: &mut App, key: KeyEvent, id: Uuid) -> Vec<Effect> {
    let len = app.workflow.as_ref().map_or(0, |w| w.steps.len());
    if move_in(&mut app.step_selected, len, key.code) {
        return Vec::new();
    }
    match key.code {
        KeyCode::Char('q') => {
            app.quit = true;
            vec![Effect::Quit]
        }
        KeyCode::Esc => {
            app.mode = Mode::Workflows;
            app.message = None;
            vec![Effect::Refresh]
        }
        KeyCode::Enter => {
            let task = app.workflow.as_ref().and_then(|workflow| {
                workflow
                    .tree()
                    .get(app.step_selected)
                    .map(|(_, step)| step.task_id)
            });
            match task {
                Some(task) => {
                    app.back = Some(Mode::Workflow(id));
                    app.detail = None;
                    app.logs.clear();
                    app.mode = Mode::Detail(task);
                    vec![Effect::Refresh]
                }
                None => Vec::new(),
            }
        }
        KeyCode::Char(c @ ('c' | 'r')) => ask_workflow(app, c, id),
        _ => Vec::new(),
    }
}

/// Keys of the schedules view: move, pause or resume (`p`) and trigger (`t`), both asked
/// first; Esc goes back to the tasks.
fn schedules_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    if move_in(&mut app.schedule_selected, app.schedules.len(), key.code) {
        return Vec::new();
    }
    if let Some(effects) = leave_view(app, key.code) {
        return effects;
    }
    match key.code {
        KeyCode::Char(c @ ('p' | 't')) => {
            let Some(schedule) = app.selected_schedule() else {
                return Vec::new();
            };
            let action = match (c, schedule.paused) {
                ('t', _) => ScheduleAction::Trigger,
                (_, true) => ScheduleAction::Resume,
                (_, false) => ScheduleAction::Pause,
            };
            let name = schedule.name.clone();
            if app.readonly {
                app.message = Some("read-only: actions are disabled (--readonly)".to_owned());
                return Vec::new();
            }
            app.mode = Mode::ConfirmSchedule(action, name);
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Keys of the queues view: move, `p` pauses or resumes the selected queue (asked first);
/// Esc goes back to the tasks.
fn queues_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    if move_in(&mut app.queue_selected, app.queues.len(), key.code) {
        return Vec::new();
    }
    if let Some(effects) = leave_view(app, key.code) {
        return effects;
    }
    match key.code {
        KeyCode::Enter => match app.selected_queue() {
            // The tasks of that queue.
            Some(queue) => {
                let name = queue.queue.clone();
                app.mode = Mode::Normal;
                set_query(app, |q| q.queue = Some(name))
            }
            None => Vec::new(),
        },
        KeyCode::Char('p') => {
            let Some(queue) = app.selected_queue() else {
                return Vec::new();
            };
            let action = if queue.paused {
                QueueAction::Resume
            } else {
                QueueAction::Pause
            };
            let name = queue.queue.clone();
            if app.readonly {
                app.message = Some("read-only: actions are disabled (--readonly)".to_owned());
                return Vec::new();
            }
            app.mode = Mode::ConfirmQueue(action, name);
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Keys of the audit view: Esc goes back to the tasks.
fn audit_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    leave_view(app, key.code).unwrap_or_default()
}

/// The keys every list view shares: `q` quits, Esc goes back to the tasks, `:` opens the
/// command prompt. None for any other key.
fn leave_view(app: &mut App, code: KeyCode) -> Option<Vec<Effect>> {
    match code {
        KeyCode::Char('q') => {
            app.quit = true;
            Some(vec![Effect::Quit])
        }
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            app.message = None;
            Some(vec![Effect::Refresh])
        }
        KeyCode::Char(':') => {
            app.mode = Mode::Command(String::new());
            Some(Vec::new())
        }
        _ => None,
    }
}

/// The answer to a y/n question: `effect` on y, "nothing done" on anything else.
fn answered(app: &mut App, code: KeyCode, effect: Effect) -> Vec<Effect> {
    match code {
        KeyCode::Char('y') | KeyCode::Char('Y') => {
            app.message = None;
            vec![effect]
        }
        _ => {
            app.message = Some("nothing done".to_owned());
            Vec::new()
        }
    }
}

fn toggle_pause(app: &mut App) -> Vec<Effect> {
    app.paused = !app.paused;
    if app.paused {
        Vec::new()
    } else {
        vec![Effect::Refresh]
    }
}

fn ask(app: &mut App, code: KeyCode, id: Uuid) -> Vec<Effect> {
    if app.readonly {
        app.message = Some("read-only: actions are disabled (--readonly)".to_owned());
        return Vec::new();
    }
    let pending = if code == KeyCode::Char('c') {
        Pending::Cancel
    } else {
        Pending::Retry
    };
    app.mode = Mode::Confirm(pending, id);
    Vec::new()
}

/// Changes the server query; the view goes back to the first page.
fn set_query(app: &mut App, change: impl FnOnce(&mut Query)) -> Vec<Effect> {
    change(&mut app.query);
    app.query.cursor = None;
    app.pages.clear();
    app.selected = 0;
    app.tasks.clear();
    vec![Effect::Refresh]
}

/// Line editing for the filter and command prompts.
fn edit(app: &mut App, key: KeyEvent, mut text: String, filter: bool) -> Vec<Effect> {
    match key.code {
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            Vec::new()
        }
        KeyCode::Enter => {
            app.mode = Mode::Normal;
            if filter {
                app.filter = text.trim().to_owned();
                app.selected = 0;
                Vec::new()
            } else {
                command(app, text.trim())
            }
        }
        KeyCode::Backspace => {
            text.pop();
            app.mode = if filter {
                Mode::Filter(text)
            } else {
                Mode::Command(text)
            };
            Vec::new()
        }
        KeyCode::Char(c) => {
            text.push(c);
            if filter {
                // Filter as you type.
                app.filter = text.clone();
                app.selected = 0;
                app.mode = Mode::Filter(text);
            } else {
                app.mode = Mode::Command(text);
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// `:queue NAME`, `:kind K`, `:status S` (an empty argument clears), `:clear`,
/// `:schedules`, `:workflows`, `:queues`, `:audit`, `:tasks`, `:q`.
fn command(app: &mut App, line: &str) -> Vec<Effect> {
    let (name, arg) = line.split_once(' ').unwrap_or((line, ""));
    let arg = arg.trim();
    let value = (!arg.is_empty() && arg != "all" && arg != "*").then(|| arg.to_owned());
    match name {
        "schedules" | "schedule" | "sched" => {
            app.mode = Mode::Schedules;
            vec![Effect::Refresh]
        }
        "workflows" | "workflow" | "wf" => {
            app.mode = Mode::Workflows;
            vec![Effect::Refresh]
        }
        "queues" => {
            app.mode = Mode::Queues;
            vec![Effect::Refresh]
        }
        "audit" => {
            app.mode = Mode::Audit;
            vec![Effect::Refresh]
        }
        "tasks" | "task" => {
            app.mode = Mode::Normal;
            vec![Effect::Refresh]
        }
        "queue" => set_query(app, |q| q.queue = value),
        "kind" => set_query(app, |q| q.kind = value),
        "status" => match value.as_deref().map(str::parse::<TaskStatus>).transpose() {
            Ok(status) => set_query(app, |q| q.status = status),
            Err(e) => {
                app.message = Some(e.to_string());
                Vec::new()
            }
        },
        "clear" => {
            app.filter.clear();
            set_query(app, |q| *q = Query::default())
        }
        "q" | "quit" => {
            app.quit = true;
            vec![Effect::Quit]
        }
        "" => Vec::new(),
        other => {
            app.message = Some(format!(
                "unknown command :{other} (try :queue NAME, :kind K, :status S, :clear, :queues, :schedules, :workflows, :audit)"
            ));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventKind;
    use serde_json::json;

    pub(crate) fn task(n: u128, status: TaskStatus, kind: &str) -> Task {
        serde_json::from_value(json!({
            "id": Uuid::from_u128(n), "kind": kind, "queue": "default", "priority": 0,
            "payload": {}, "status": status, "attempts": 1, "max_attempts": 3,
            "timeout_secs": 300, "run_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "started_at": null, "finished_at": null, "result": null, "last_error": null,
            "idempotency_key": null, "labels": {"team": "ops"}, "worker": null,
            "cancel_requested": false
        }))
        .expect("a task")
    }

    fn key(code: KeyCode) -> Action {
        Action::Key(KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        })
    }

    fn loaded() -> App {
        let mut app = App::new("http://x", false, true);
        let page = TaskList {
            tasks: vec![
                task(1, TaskStatus::Running, "sleep"),
                task(2, TaskStatus::Failed, "shell"),
                task(3, TaskStatus::Succeeded, "echo"),
            ],
            next_cursor: Some("cursor-2".into()),
        };
        update(&mut app, Action::Tasks(Query::default(), page));
        app
    }

    #[test]
    fn moving_stays_inside_the_list() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Char('k')));
        assert_eq!(app.selected, 0);
        update(&mut app, key(KeyCode::Char('j')));
        update(&mut app, key(KeyCode::Down));
        update(&mut app, key(KeyCode::Down));
        assert_eq!(app.selected, 2);
        update(&mut app, key(KeyCode::Char('g')));
        assert_eq!(app.selected, 0);
        update(&mut app, key(KeyCode::Char('G')));
        assert_eq!(app.selected, 2);
    }

    #[test]
    fn page_down_past_the_end_fetches_the_next_page_and_back() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Char('G')));
        let effects = update(&mut app, key(KeyCode::PageDown));
        assert_eq!(effects, vec![Effect::Refresh]);
        assert_eq!(app.query.cursor.as_deref(), Some("cursor-2"));
        assert_eq!(app.selected, 0);
        let effects = update(&mut app, key(KeyCode::PageUp));
        assert_eq!(effects, vec![Effect::Refresh]);
        assert_eq!(app.query.cursor, None);
    }

    #[test]
    fn the_filter_narrows_by_kind_and_label() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Char('/')));
        for c in "shell".chars() {
            update(&mut app, key(KeyCode::Char(c)));
        }
        assert_eq!(app.visible().len(), 1);
        update(&mut app, key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.filter, "shell");
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.visible().len(), 3);
        app.filter = "team=ops".into();
        assert_eq!(app.visible().len(), 3);
    }

    #[test]
    fn s_cycles_the_status_filter_and_asks_the_server() {
        let mut app = loaded();
        assert_eq!(
            update(&mut app, key(KeyCode::Char('s'))),
            vec![Effect::Refresh]
        );
        assert_eq!(app.query.status, Some(TaskStatus::Queued));
        for _ in 0..7 {
            update(&mut app, key(KeyCode::Char('s')));
        }
        assert_eq!(app.query.status, None, "round the cycle");
        // A page for an older query is ignored.
        let stale = Query {
            status: Some(TaskStatus::Failed),
            ..Query::default()
        };
        update(&mut app, Action::Tasks(stale, TaskList::default()));
        assert!(!app.tasks.is_empty() || app.query.status.is_none());
    }

    #[test]
    fn commands_set_the_query() {
        let mut app = loaded();
        for line in [":queue mail", ":kind shell", ":status failed"] {
            update(&mut app, key(KeyCode::Char(':')));
            for c in line[1..].chars() {
                update(&mut app, key(KeyCode::Char(c)));
            }
            assert_eq!(update(&mut app, key(KeyCode::Enter)), vec![Effect::Refresh]);
        }
        assert_eq!(app.query.queue.as_deref(), Some("mail"));
        assert_eq!(app.query.kind.as_deref(), Some("shell"));
        assert_eq!(app.query.status, Some(TaskStatus::Failed));
        update(&mut app, key(KeyCode::Char(':')));
        for c in "status bogus".chars() {
            update(&mut app, key(KeyCode::Char(c)));
        }
        assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
        assert!(
            app.message
                .as_deref()
                .unwrap_or("")
                .contains("unknown status")
        );
        update(&mut app, key(KeyCode::Char(':')));
        for c in "clear".chars() {
            update(&mut app, key(KeyCode::Char(c)));
        }
        update(&mut app, key(KeyCode::Enter));
        assert_eq!(app.query, Query::default());
    }

    #[test]
    fn a_message_goes_after_a_few_seconds() {
        let mut app = App::new("http://x", false, false);
        let t0 = app.now;
        update(
            &mut app,
            Action::Done("cancel requested for abc".to_owned()),
        );
        update(&mut app, Action::Tick(t0 + chrono::Duration::seconds(1)));
        assert!(app.message.is_some());
        update(&mut app, Action::Tick(t0 + chrono::Duration::seconds(4)));
        assert!(app.message.is_some(), "shown for 3 s so far");
        update(&mut app, Action::Tick(t0 + chrono::Duration::seconds(7)));
        assert!(app.message.is_none(), "gone after 5 s");
    }

    fn schedule(name: &str, paused: bool) -> Schedule {
        serde_json::from_value(json!({
            "name": name, "cron": "0 2 * * *", "timezone": "UTC", "overlap": "allow",
            "catch_up": "none", "paused": paused, "task": {"kind": "noop"},
            "next_run_at": "2026-01-02T02:00:00Z", "last_run_at": null, "last_task_id": null,
            "last_status": null, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a schedule")
    }

    fn typed(app: &mut App, line: &str) -> Vec<Effect> {
        update(app, key(KeyCode::Char(':')));
        for c in line.chars() {
            update(app, key(KeyCode::Char(c)));
        }
        update(app, key(KeyCode::Enter))
    }

    #[test]
    fn the_schedules_view_pauses_resumes_and_triggers_after_asking() {
        let mut app = loaded();
        assert_eq!(typed(&mut app, "schedules"), vec![Effect::Refresh]);
        assert_eq!(app.mode, Mode::Schedules);
        assert!(app.showing_schedules(), "the poller reads schedules now");
        update(
            &mut app,
            Action::Schedules(vec![schedule("nightly", false), schedule("weekly", true)]),
        );
        // p on a running schedule asks to pause it; only y acts.
        update(&mut app, key(KeyCode::Char('p')));
        assert_eq!(
            app.mode,
            Mode::ConfirmSchedule(ScheduleAction::Pause, "nightly".into())
        );
        assert!(update(&mut app, key(KeyCode::Char('n'))).is_empty());
        assert_eq!(app.mode, Mode::Schedules);
        // On a paused one, p resumes; t triggers.
        update(&mut app, key(KeyCode::Char('j')));
        update(&mut app, key(KeyCode::Char('p')));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('y'))),
            vec![Effect::Schedule(ScheduleAction::Resume, "weekly".into())]
        );
        update(&mut app, key(KeyCode::Char('t')));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('y'))),
            vec![Effect::Schedule(ScheduleAction::Trigger, "weekly".into())]
        );
        // Esc goes back to the tasks.
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.showing_schedules());
    }

    fn queue(name: &str, paused: bool) -> QueueStats {
        serde_json::from_value(json!({
            "queue": name, "counts": {}, "depth": 3, "oldest_ready_secs": null,
            "finished_last_minute": 0, "failed_last_minute": 0, "throughput_per_sec": 0.0,
            "paused": paused, "max_running": null, "rate_per_sec": null
        }))
        .expect("queue stats")
    }

    #[test]
    fn the_queues_view_pauses_and_resumes_after_asking() {
        let mut app = loaded();
        update(
            &mut app,
            Action::Queues(vec![queue("default", false), queue("mail", true)]),
        );
        assert_eq!(typed(&mut app, "queues"), vec![Effect::Refresh]);
        assert_eq!(app.mode, Mode::Queues);
        update(&mut app, key(KeyCode::Char('p')));
        assert_eq!(
            app.mode,
            Mode::ConfirmQueue(QueueAction::Pause, "default".into())
        );
        assert!(
            update(&mut app, key(KeyCode::Char('n'))).is_empty(),
            "only y acts"
        );
        assert_eq!(app.mode, Mode::Queues);
        update(&mut app, key(KeyCode::Char('j')));
        update(&mut app, key(KeyCode::Char('p')));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('y'))),
            vec![Effect::Queue(QueueAction::Resume, "mail".into())],
            "a paused queue resumes"
        );
        // Enter shows the queue's tasks.
        assert_eq!(update(&mut app, key(KeyCode::Enter)), vec![Effect::Refresh]);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.query.queue.as_deref(), Some("mail"));

        let mut readonly = App::new("http://x", true, false);
        update(&mut readonly, Action::Queues(vec![queue("default", false)]));
        typed(&mut readonly, "queues");
        assert!(update(&mut readonly, key(KeyCode::Char('p'))).is_empty());
        assert_eq!(readonly.mode, Mode::Queues, "read-only asks nothing");
        assert!(
            readonly
                .message
                .as_deref()
                .is_some_and(|m| m.contains("read-only"))
        );
    }

    #[test]
    fn the_audit_view_reads_the_log_and_says_when_it_may_not() {
        let mut app = loaded();
        assert_eq!(typed(&mut app, "audit"), vec![Effect::Refresh]);
        assert!(app.showing_audit(), "the poller reads the audit log now");
        update(&mut app, Action::Audit(Err("403: needs admin".into())));
        assert_eq!(app.audit_error.as_deref(), Some("403: needs admin"));
        let entry: AuditEntry = serde_json::from_value(json!({
            "seq": 1, "at": "2026-01-01T00:00:00Z", "actor": "alice", "action": "cancel",
            "target": "x", "details": {}
        }))
        .expect("an entry");
        update(&mut app, Action::Audit(Ok(vec![entry])));
        assert_eq!(app.audit.len(), 1);
        assert_eq!(app.audit_error, None);
        update(&mut app, key(KeyCode::Esc));
        assert!(!app.showing_audit());
    }

    fn workflow(id: u128) -> Workflow {
        serde_json::from_value(json!({
            "id": Uuid::from_u128(id), "name": "deploy", "status": "running",
            "created_at": "2026-01-01T00:00:00Z", "finished_at": null, "counts": {"queued": 2},
            "steps": [
                {"id": "a", "task_id": Uuid::from_u128(100), "kind": "noop", "status": "succeeded",
                 "needs": [], "attempts": 1, "max_attempts": 3, "started_at": null,
                 "finished_at": null, "last_error": null},
                {"id": "b", "task_id": Uuid::from_u128(101), "kind": "noop", "status": "waiting",
                 "needs": ["a"], "attempts": 0, "max_attempts": 3, "started_at": null,
                 "finished_at": null, "last_error": null}
            ]
        }))
        .expect("a workflow")
    }

    #[test]
    fn the_workflows_view_opens_a_workflow_and_its_steps() {
        let mut app = loaded();
        assert_eq!(typed(&mut app, "workflows"), vec![Effect::Refresh]);
        assert!(app.showing_workflows(), "the poller reads workflows now");
        update(&mut app, Action::Workflows(vec![workflow(7), workflow(8)]));
        update(&mut app, key(KeyCode::Char('j')));
        assert_eq!(update(&mut app, key(KeyCode::Enter)), vec![Effect::Refresh]);
        let id = Uuid::from_u128(8);
        assert_eq!(app.mode, Mode::Workflow(id));
        assert_eq!(app.workflow_id(), Some(id));
        // Another workflow's answer is not shown.
        update(&mut app, Action::Workflow(Box::new(workflow(7))));
        assert!(app.workflow.is_none());
        update(&mut app, Action::Workflow(Box::new(workflow(8))));
        // The second row of the tree is step b; Enter opens its task, Esc comes back.
        update(&mut app, key(KeyCode::Down));
        update(&mut app, key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Detail(Uuid::from_u128(101)));
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Workflow(id));
        // Cancel asks first.
        update(&mut app, key(KeyCode::Char('c')));
        assert_eq!(app.mode, Mode::ConfirmWorkflow(Pending::Cancel, id));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('y'))),
            vec![Effect::Workflow(Pending::Cancel, id)]
        );
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Workflows);
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn the_schedules_view_honours_readonly() {
        let mut app = App::new("http://x", true, false);
        typed(&mut app, "schedules");
        update(
            &mut app,
            Action::Schedules(vec![schedule("nightly", false)]),
        );
        for c in ['p', 't'] {
            assert!(update(&mut app, key(KeyCode::Char(c))).is_empty());
            assert_eq!(app.mode, Mode::Schedules);
            assert!(
                app.message
                    .as_deref()
                    .is_some_and(|m| m.contains("read-only"))
            );
        }
    }

    #[test]
    fn cancel_asks_first_and_only_yes_acts() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Char('c')));
        assert_eq!(app.mode, Mode::Confirm(Pending::Cancel, Uuid::from_u128(1)));
        assert!(update(&mut app, key(KeyCode::Char('n'))).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        update(&mut app, key(KeyCode::Char('r')));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('y'))),
            vec![Effect::Retry(Uuid::from_u128(1))]
        );
    }

    #[test]
    fn readonly_refuses_actions() {
        let mut app = loaded();
        app.readonly = true;
        assert!(update(&mut app, key(KeyCode::Char('c'))).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.message.as_deref().unwrap_or("").contains("read-only"));
    }

    #[test]
    fn enter_opens_the_detail_and_logs_follow_it() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Enter));
        let id = Uuid::from_u128(1);
        assert_eq!(app.mode, Mode::Detail(id));
        let line: LogLine = serde_json::from_value(json!({
            "seq": 1, "attempt": 1, "stream": "stdout", "ts": "2026-01-01T00:00:00Z", "line": "hi"
        }))
        .expect("a line");
        update(
            &mut app,
            Action::Logs {
                task: id,
                lines: vec![line.clone()],
                reset: true,
            },
        );
        update(
            &mut app,
            Action::Logs {
                task: Uuid::from_u128(9),
                lines: vec![line],
                reset: false,
            },
        );
        assert_eq!(app.logs.len(), 1, "lines of another task are ignored");
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.logs.is_empty());
    }

    #[test]
    fn quitting_and_pausing() {
        let mut app = loaded();
        update(&mut app, key(KeyCode::Char('p')));
        assert!(app.paused);
        assert_eq!(
            update(&mut app, key(KeyCode::Char('p'))),
            vec![Effect::Refresh]
        );
        assert_eq!(
            update(&mut app, key(KeyCode::Char('q'))),
            vec![Effect::Quit]
        );
        assert!(app.quit);
        let mut app = loaded();
        let ctrl_c = Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(update(&mut app, ctrl_c), vec![Effect::Quit]);
    }

    #[test]
    fn queue_depth_history_is_bounded() {
        let mut app = App::new("http://x", false, false);
        let stats: QueueStats = serde_json::from_value(json!({
            "queue": "default", "counts": {"queued": 4}, "depth": 4, "oldest_ready_secs": 1.0,
            "finished_last_minute": 0, "failed_last_minute": 0, "throughput_per_sec": 0.0
        }))
        .expect("stats");
        for _ in 0..(HISTORY + 10) {
            update(&mut app, Action::Queues(vec![stats.clone()]));
        }
        assert_eq!(app.history["default"].len(), HISTORY);
        assert_eq!(app.totals()[&TaskStatus::Queued], 4);
    }
}
