//! `taskctl top`: a live dashboard of a Taskplane server, in ratatui.
//!
//! Three parts, as in gitui and ratatui's component template: [`app`] holds the state and
//! the pure `update`; [`view`] draws it; [`poller`] talks to the server on its own task and
//! feeds data in as actions, so drawing never waits on the network. The terminal is put back
//! on exit and on panic.

pub mod app;
pub mod poller;
pub mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use taskplane_api::Client;
use tokio::sync::{mpsc, watch};

use app::{Action, App, Effect};
use poller::Params;

/// How `taskctl top` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Disable cancel and retry.
    pub readonly: bool,
    /// Use colour (off with NO_COLOR or --no-color).
    pub color: bool,
    /// How often to refresh when no event says something changed.
    pub refresh: Duration,
}

fn params(app: &App, generation: u64) -> Params {
    Params {
        query: app.query.clone(),
        detail: app.detail_id(),
        paused: app.paused,
        schedules: app.showing_schedules(),
        workflows: app.showing_workflows(),
        audit: app.showing_audit(),
        workflow: app.workflow_id(),
        generation,
    }
}

/// Runs the dashboard until the user quits.
pub async fn run(client: Client, options: Options) -> std::io::Result<()> {
    let mut app = App::new(client.base_url(), options.readonly, options.color);
    let (tx, mut rx) = mpsc::channel::<Action>(256);
    let mut generation = 0;
    let (params_tx, params_rx) = watch::channel(params(&app, generation));
    let poller = tokio::spawn(poller::run(
        client.clone(),
        params_rx,
        tx.clone(),
        options.refresh,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let keys = std::thread::spawn({
        let tx = tx.clone();
        let stop = stop.clone();
        move || read_keys(tx, stop)
    });

    // Restores the terminal on panic too.
    let mut terminal = ratatui::init();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let result: std::io::Result<()> = async {
        terminal.draw(|frame| view::render(frame, &mut app))?;
        loop {
            let mut effects = tokio::select! {
                Some(action) = rx.recv() => app::update(&mut app, action),
                _ = ticker.tick() => app::update(&mut app, Action::Tick(chrono::Utc::now())),
            };
            // Take whatever else is waiting before drawing once.
            while let Ok(action) = rx.try_recv() {
                effects.extend(app::update(&mut app, action));
            }
            for effect in effects {
                match effect {
                    Effect::Quit => return Ok(()),
                    Effect::Refresh => generation += 1,
                    Effect::Cancel(id) => spawn_action(&client, &tx, id, true),
                    Effect::Retry(id) => spawn_action(&client, &tx, id, false),
                    Effect::Schedule(action, name) => spawn_schedule(&client, &tx, action, name),
                    Effect::Workflow(pending, id) => spawn_workflow(&client, &tx, pending, id),
                    Effect::Queue(action, name) => spawn_queue(&client, &tx, action, name),
                }
            }
            params_tx.send_if_modified(|current| {
                let wanted = params(&app, generation);
                let changed = *current != wanted;
                *current = wanted;
                changed
            });
            terminal.draw(|frame| view::render(frame, &mut app))?;
        }
    }
    .await;
    // Stop reading keys before giving the terminal back, so that what the user types at the
    // shell afterwards is not swallowed.
    stop.store(true, Ordering::Relaxed);
    let _ = keys.join();
    ratatui::restore();
    poller.abort();
    result
}

/// Cancels or retries a task in the background; the outcome comes back as a message.
fn spawn_action(client: &Client, tx: &mpsc::Sender<Action>, id: uuid::Uuid, cancel: bool) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let result = if cancel {
            client.cancel(id).await
        } else {
            client.retry(id).await
        };
        let message = match (result, cancel) {
            (Ok(task), true) if task.status.is_terminal() => format!("cancelled {id}"),
            (Ok(_), true) => format!("cancel requested for {id}"),
            (Ok(_), false) => format!("queued {id} again"),
            (Err(error), _) => format!("failed: {error}"),
        };
        let _ = tx.send(Action::Done(message)).await;
    });
}

/// Pauses, resumes or triggers a schedule in the background; the outcome comes back as a
/// message.
fn spawn_schedule(
    client: &Client,
    tx: &mpsc::Sender<Action>,
    action: app::ScheduleAction,
    name: String,
) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let message = match action {
            app::ScheduleAction::Trigger => match client.trigger_schedule(&name).await {
                Ok(task) => format!("schedule {name} triggered: task {}", task.id),
                Err(error) => format!("failed: {error}"),
            },
            app::ScheduleAction::Pause | app::ScheduleAction::Resume => {
                let verb = if action == app::ScheduleAction::Pause {
                    "pause"
                } else {
                    "resume"
                };
                match client.schedule_action(&name, verb).await {
                    Ok(_) => format!("schedule {name} {verb}d"),
                    Err(error) => format!("failed: {error}"),
                }
            }
        };
        let _ = tx.send(Action::Done(message)).await;
    });
}

/// Pauses or resumes a queue in the background; the outcome comes back as a message.
fn spawn_queue(client: &Client, tx: &mpsc::Sender<Action>, action: app::QueueAction, name: String) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let message = match client.queue_action(&name, action.verb()).await {
            Ok(_) => format!("queue {name} {}d", action.verb()),
            Err(error) => format!("failed: {error}"),
        };
        let _ = tx.send(Action::Done(message)).await;
    });
}

/// Cancels or retries a workflow in the background; the outcome comes back as a message.
fn spawn_workflow(
    client: &Client,
    tx: &mpsc::Sender<Action>,
    pending: app::Pending,
    id: uuid::Uuid,
) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let (verb, done) = match pending {
            app::Pending::Cancel => ("cancel", "cancelled"),
            app::Pending::Retry => ("retry", "to run again"),
        };
        let message = match client.workflow_action(id, verb).await {
            Ok(answer) => format!("workflow {id}: {} steps {done}", answer.changed),
            Err(error) => format!("failed: {error}"),
        };
        let _ = tx.send(Action::Done(message)).await;
    });
}

/// Forwards key presses (and resizes, as a redraw) until `stop`.
fn read_keys(tx: mpsc::Sender<Action>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let action = match event::read() {
            Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => Action::Key(key),
            Ok(Event::Resize(..)) => Action::Tick(chrono::Utc::now()),
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.blocking_send(action).is_err() {
            return;
        }
    }
}
