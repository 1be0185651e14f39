//! The dashboard's pages. Each reads through the API's own handlers (the same filters,
//! limits and conversions as `/api/v1/…`) and renders HTML; the regions marked `data-live`
//! are what the page's script swaps in when it refreshes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use taskplane_api::{
    AuditQuery, KindInfo, ListQuery, QueueStats, ScheduleQuery, Task, TaskStatus, WorkerInfo,
    WorkflowQuery, WorkflowStatus,
};
use uuid::Uuid;

use super::chart;
use super::view::{self, Action, Live, action, when, when_opt};
use super::{Ui, Viewer};
use crate::auth::{Scope, kind_needs_admin};
use crate::http::error::ApiError;
use crate::http::extract::{QueryParams, TaskId, WorkflowId};
use crate::http::{AppState, controls, leases, schedules, tasks, workflows};
use crate::util::now_ms;

/// Rows per page of the paged lists.
const PAGE: u32 = 50;

type Page = Result<Response, Response>;

/// The query of a dashboard list: every field optional, empty ones (a form's blank inputs)
/// the same as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    status: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    label: Option<String>,
    id: Option<String>,
    name: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
}

impl Filter {
    /// The page's query, or a page that says what is wrong with it.
    fn parse(viewer: &Viewer, uri: &Uri) -> Result<Filter, Box<Response>> {
        let mut filter: Filter =
            serde_html_form::from_str(uri.query().unwrap_or("")).map_err(|e| {
                Box::new(view::problem_with(
                    viewer,
                    StatusCode::BAD_REQUEST,
                    "Bad filter",
                    &format!("this page's query is not one it understands: {e}"),
                    Some((uri.path(), "This page without filters")),
                ))
            })?;
        for field in [
            &mut filter.status,
            &mut filter.queue,
            &mut filter.kind,
            &mut filter.label,
            &mut filter.id,
            &mut filter.name,
            &mut filter.actor,
            &mut filter.action,
            &mut filter.cursor,
        ] {
            *field = field
                .take()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
        }
        Ok(filter)
    }

    fn text(field: &Option<String>) -> String {
        field.clone().unwrap_or_default()
    }
}

/// A failed read as a page: the API's message, its status.
fn failed(viewer: &Viewer, error: ApiError) -> Response {
    let title = match error.status {
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_client_error() => "Bad request",
        _ => "Unavailable",
    };
    view::problem(viewer, error.status, title, &error.message)
}

fn done(page: Page) -> Response {
    page.unwrap_or_else(|refusal| refusal)
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now_ms()).unwrap_or_else(Utc::now)
}

/// `GET /ui/`: totals, the last hour, queues and workers.
pub async fn overview(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    done(overview_page(state, ui, viewer).await)
}

async fn overview_page(state: AppState, ui: Arc<Ui>, viewer: Viewer) -> Page {
    let fail = |e| failed(&viewer, e);
    let fleet = ui.fleet(&state).await.map_err(fail)?;
    let (queues, workers) = (&fleet.queues, &fleet.workers);
    let at = now_ms();
    let minutes = ui
        .history
        .minutes(&*state.store, at)
        .await
        .map_err(|e| fail(e.into()))?;
    let now = now();
    let mut totals: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for queue in &queues.queues {
        for (status, count) in &queue.counts {
            *totals.entry(*status).or_default() += count;
        }
    }
    let succeeded: u64 = minutes.iter().map(|m| m.succeeded).sum();
    let failed_hour: u64 = minutes.iter().map(|m| m.failed).sum();
    let finished = succeeded + failed_hour;
    // Over the last 60 s, as GET /api/v1/queues reckons it.
    let rate_now: f64 = queues.queues.iter().map(|q| q.throughput_per_sec).sum();
    let body = html! {
        section #totals .cards data-live aria-label="Tasks by status" {
            @for (status, count) in &totals {
                a.card href={ "/ui/tasks?status=" (status.as_str()) } {
                    span.count { (count) }
                    (view::status(*status))
                }
            }
        }
        section #hour .panel data-live {
            h2 { "Last hour" }
            p.summary {
                strong { (finished) } " finished · "
                strong { (failed_hour) } " failed"
                @if finished > 0 {
                    " (" (format!("{:.1}", failed_hour as f64 * 100.0 / finished as f64)) "% failure rate)"
                }
                " · now " strong { (format!("{:.1}", rate_now)) } " tasks/s"
            }
            div.chart { (chart::minutes(&minutes)) }
            p.legend {
                span.key.ok {} "succeeded " span.key.bad {} "failed · per minute over the last hour (UTC), the tallest "
                (minutes.iter().map(|m| m.succeeded + m.failed).max().unwrap_or(0)) "/min"
            }
        }
        div.columns {
            section #queues .panel data-live {
                h2 { a href="/ui/queues" { "Queues" } }
                (queue_table(&ui, &viewer, &queues.queues, served_queues(&workers.workers).as_ref(), false))
            }
            section #workers .panel data-live {
                h2 { "Workers" }
                (worker_table(&workers.workers, now))
            }
        }
    };
    Ok(view::page(
        &viewer,
        "/ui/",
        "Overview",
        Live::events("").every(5_000).gap(1_000),
        body,
    ))
}

/// The queues some live worker takes tasks from (`None`: a remote worker may take from any).
fn served_queues(workers: &[WorkerInfo]) -> Option<std::collections::HashSet<String>> {
    if workers.iter().any(|w| w.remote) {
        return None;
    }
    Some(
        workers
            .iter()
            .flat_map(|w| w.queues.iter().cloned())
            .collect(),
    )
}

/// The queues as a table; `full` adds every count and the actions.
fn queue_table(
    ui: &Ui,
    viewer: &Viewer,
    queues: &[QueueStats],
    served: Option<&std::collections::HashSet<String>>,
    full: bool,
) -> Markup {
    let admin = viewer.can(Scope::Admin);
    let unserved = |q: &QueueStats| q.depth > 0 && served.is_some_and(|s| !s.contains(&q.queue));
    let count = |q: &QueueStats, s: TaskStatus| q.counts.get(&s).copied().unwrap_or(0);
    html! {
        div.scroll {
            table {
                thead { tr {
                    th { "Queue" } th.num { "Ready" } th.wide { "Trend" }
                    @if full { th.num.wide { "Oldest ready" } th.num.wide { "Scheduled" } th.num.wide { "Waiting" } th.num.wide { "Retrying" } }
                    th.num { "Running" } th.num { "Failed" } th.num.wide { "Done/min" }
                    @if full { th.wide { "Limits" } }
                    th { "State" }
                    @if full && admin { th { span.sr { "Actions" } } }
                } }
                tbody {
                    @if queues.is_empty() { (view::empty_row(if full { 14 } else { 8 }, "No queues yet: submit a task.")) }
                    @for q in queues {
                        tr {
                            td { a href={ "/ui/tasks?queue=" (q.queue) } { (q.queue) } }
                            td.num { (q.depth) }
                            td.wide { (chart::sparkline(&ui.history.depths(&q.queue), &format!("ready tasks in {} over the last minutes", q.queue))) }
                            @if full {
                                td.num.wide { (q.oldest_ready_secs.map(|s| view::short_duration((s * 1000.0) as u64)).unwrap_or_else(|| "—".into())) }
                                td.num.wide { (count(q, TaskStatus::Scheduled)) }
                                td.num.wide { (count(q, TaskStatus::Waiting)) }
                                td.num.wide { (count(q, TaskStatus::Retrying)) }
                            }
                            td.num { (count(q, TaskStatus::Running)) }
                            td.num { a href={ "/ui/dlq?queue=" (q.queue) } { (count(q, TaskStatus::Failed)) } }
                            td.num.wide { (q.finished_last_minute) }
                            @if full {
                                td.wide {
                                    @if let Some(max) = q.max_running { "≤ " (max) " running " }
                                    @if let Some(rate) = q.rate_per_sec { "≤ " (rate) "/s" }
                                    @if q.max_running.is_none() && q.rate_per_sec.is_none() { span.muted { "none" } }
                                }
                            }
                            td {
                                @if q.paused { (view::badge("paused")) }
                                @else if unserved(q) { span.badge.st-retrying title="ready tasks, and no live worker takes this queue (taskd --queues)" { "no worker" } }
                                @else { (view::badge("active")) }
                            }
                            @if full && admin {
                                td.actions {
                                    @if q.paused {
                                        (action("Resume", format!("/api/v1/queues/{}/resume", q.queue), format!("Resume queue {}? Workers start taking its tasks again.", q.queue)))
                                    } @else {
                                        (Action { label: "Pause", url: format!("/api/v1/queues/{}/pause", q.queue),
                                            confirm: format!("Pause queue {}? Running tasks finish; no new ones start until it is resumed.", q.queue),
                                            body: None, danger: true, then: None }.render())
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn worker_table(workers: &[WorkerInfo], now: DateTime<Utc>) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr { th { "Worker" } th.wide { "Queues" } th { "Busy" } th.num { "Heartbeat" } } }
                tbody {
                    @if workers.is_empty() { (view::empty_row(4, "No live workers.")) }
                    @for w in workers {
                        tr {
                            td {
                                code title={ (w.host) " pid " (w.pid) } { (w.id) }
                                @if w.remote { " " span.pill { "remote" } }
                            }
                            td.wide { (w.queues.join(", ")) }
                            td {
                                meter min="0" max=(w.concurrency.max(1)) value=(w.busy) title={ (w.busy) " of " (w.concurrency) " slots busy" } {}
                                " " (w.busy) "/" (w.concurrency)
                            }
                            td.num { (when(w.last_heartbeat, now)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/tasks`: filters, search by id, a page of tasks, and the submit form.
pub async fn tasks(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(viewer): Extension<Viewer>,
    uri: Uri,
) -> Response {
    done(task_list_page(state, ui, viewer, uri, false).await)
}

/// `GET /ui/dlq`: the dead-letter set (failed tasks), with retry and purge.
pub async fn dlq(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(viewer): Extension<Viewer>,
    uri: Uri,
) -> Response {
    done(task_list_page(state, ui, viewer, uri, true).await)
}

async fn task_list_page(
    state: AppState,
    ui: Arc<Ui>,
    viewer: Viewer,
    uri: Uri,
    dead: bool,
) -> Page {
    let filter = Filter::parse(&viewer, &uri).map_err(|r| *r)?;
    let mut problem: Option<String> = None;
    if let Some(id) = &filter.id {
        match Uuid::parse_str(id) {
            Ok(id) => return Err(Redirect::to(&format!("/ui/tasks/{id}")).into_response()),
            Err(_) => problem = Some(format!("'{id}' is not a task id (a UUID)")),
        }
    }
    let status = if dead {
        Some(TaskStatus::Failed)
    } else {
        match filter.status.as_deref().map(str::parse::<TaskStatus>) {
            Some(Ok(status)) => Some(status),
            Some(Err(e)) => {
                problem = Some(e.to_string());
                None
            }
            None => None,
        }
    };
    let labels: Vec<String> = filter
        .label
        .as_deref()
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let query = ListQuery {
        status,
        queue: filter.queue.clone(),
        kind: filter.kind.clone(),
        limit: Some(PAGE),
        cursor: filter.cursor.clone(),
        label: labels,
    };
    // A filter that could not be read lists nothing (not everything).
    let listed = match &problem {
        Some(_) => Ok(Json(taskplane_api::TaskList::default())),
        None => tasks::list(State(state.clone()), QueryParams(query)).await,
    };
    let (list, next) = match listed {
        Ok(Json(list)) => (list.tasks, list.next_cursor),
        Err(e) if e.status.is_client_error() => {
            problem = Some(e.message);
            (Vec::new(), None)
        }
        Err(e) => return Err(failed(&viewer, e)),
    };
    // How many a purge of this filter deletes, as far as this page can tell (it leaves
    // workflow steps).
    let dead_count = (dead && filter.cursor.is_none()).then(|| {
        let purged = list.iter().filter(|t| t.workflow_id.is_none()).count();
        match &next {
            None => purged.to_string(),
            Some(_) => format!("at least {purged}"),
        }
    });
    let kinds = match leases::kinds(State(state.clone())).await {
        Ok(Json(kinds)) => kinds.kinds,
        Err(_) => Vec::new(),
    };
    let queue_names = ui.queue_names(&state).await;
    let now = now();
    let path = if dead { "/ui/dlq" } else { "/ui/tasks" };
    let base = [
        (
            "status",
            if dead {
                String::new()
            } else {
                Filter::text(&filter.status)
            },
        ),
        ("queue", Filter::text(&filter.queue)),
        ("kind", Filter::text(&filter.kind)),
        ("label", Filter::text(&filter.label)),
    ];
    let body = html! {
        form.filters method="get" action=(path) role="search" {
            @if !dead {
                label { "Status "
                    select name="status" {
                        option value="" { "any" }
                        @for s in TaskStatus::ALL {
                            option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                        }
                    }
                }
            }
            label { "Queue " input name="queue" list="queue-names" value=(Filter::text(&filter.queue)) size="12"; }
            label { "Kind " input name="kind" list="kind-names" value=(Filter::text(&filter.kind)) size="10"; }
            label { "Labels " input name="label" value=(Filter::text(&filter.label)) placeholder="team=ops,env!=dev" size="16"; }
            @if !dead {
                label { "Id " input name="id" placeholder="task id" size="14" data-search; }
            }
            button type="submit" { "Apply" }
            a href=(path) { "Clear" }
            datalist #queue-names { @for q in &queue_names { option value=(q) {} } }
            datalist #kind-names { @for k in &kinds { option value=(k.name) {} } }
        }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        @if dead && viewer.can(Scope::Write) && filter.label.is_some() {
            p.muted { "Retry and purge all take a queue and a kind; clear the label filter to use them." }
        }
        @if dead && viewer.can(Scope::Write) && filter.label.is_none() {
            div.bulk {
                (Action { label: "Retry all matching", url: "/api/v1/dlq/retry".into(),
                    confirm: format!("Retry every dead letter{}? They run again from their first attempt.{}", scope_text(&filter),
                        if viewer.can(Scope::Admin) { "" } else { " Those of the shell, salt and kubectl kinds need an admin token and stay." }),
                    body: Some(json!({"queue": filter.queue, "kind": filter.kind}).to_string()),
                    danger: false, then: None }.render())
                @if viewer.can(Scope::Admin) {
                    (Action { label: "Purge all matching", url: "/api/v1/dlq/purge".into(),
                        confirm: format!("Delete every dead letter{} for good? This cannot be undone; workflow steps stay with their workflow.{}", scope_text(&filter),
                            dead_count.map(|n| format!(" ({n} now.)")).unwrap_or_default()),
                        body: Some(json!({"queue": filter.queue, "kind": filter.kind, "older_than_secs": 0}).to_string()),
                        danger: true, then: None }.render())
                }
            }
        }
        section #list .panel data-live {
            (task_table(&viewer, &list, now, dead))
            (view::pager(path, &base, filter.cursor.is_some(), next.as_deref()))
        }
        @if !dead && viewer.can(Scope::Write) {
            (submit_form(&viewer, &kinds))
        }
    };
    // Only the first page follows events: rows moving under a reader of page three would
    // lose their place.
    let live = if filter.cursor.is_none() {
        let mut events = Vec::new();
        if let Some(q) = &filter.queue {
            events.push(("queue", q.as_str()));
        }
        if let Some(k) = &filter.kind {
            events.push(("kind", k.as_str()));
        }
        Live::events(serde_html_form::to_string(&events).unwrap_or_default())
    } else {
        Live::default()
    };
    Ok(view::page(
        &viewer,
        path,
        if dead { "Dead letters" } else { "Tasks" },
        live,
        body,
    ))
}

/// " in queue q of kind k" for a confirmation.
fn scope_text(filter: &Filter) -> String {
    let mut text = String::new();
    if let Some(q) = &filter.queue {
        text.push_str(&format!(" in queue {q}"));
    }
    if let Some(k) = &filter.kind {
        text.push_str(&format!(" of kind {k}"));
    }
    text
}

/// Labels taskd sets itself (a workflow step's, a schedule's fire): shown on the task's page,
/// left out of lists, where they would crowd out the ones people set.
fn own_label(key: &str) -> bool {
    key == "workflow"
        || key.starts_with("workflow.")
        || key == "schedule"
        || key.starts_with("schedule.")
}

fn task_table(viewer: &Viewer, list: &[Task], now: DateTime<Utc>, dead: bool) -> Markup {
    let retry = dead && viewer.can(Scope::Write);
    // Dead letters are all failed: their error says more than their status.
    html! {
        div.scroll {
            table.tasks {
                thead { tr {
                    th { "Task" } th { "Kind" } th.wide { "Queue" }
                    @if dead { th { "Error" } } @else { th { "Status" } }
                    th.num.wide { "Attempts" } th { "Created" } th.num.wide { "Took" } th.wide { "Labels" }
                    @if retry { th { span.sr { "Actions" } } }
                } }
                tbody {
                    @if list.is_empty() { (view::empty_row(8 + u32::from(retry), if dead { "No dead letters." } else { "No tasks match." })) }
                    @for t in list {
                        tr data-task=(t.id) {
                            td { a href={ "/ui/tasks/" (t.id) } { (view::short_id(&t.id)) } }
                            td { (t.kind) }
                            td.wide { (t.queue) }
                            @if dead {
                                td.error-text { (t.last_error.as_deref().map(|e| first_line(e, 80)).unwrap_or_default()) }
                            } @else {
                                td { (view::status(t.status)) }
                            }
                            td.num.wide { (t.attempts) "/" (t.max_attempts) }
                            td { (when(t.created_at, now)) }
                            td.num.wide { (took_live(t)) }
                            td.wide { @for (k, v) in t.labels.iter().filter(|(k, _)| !own_label(k)) { span.label { (k) "=" (v) } " " } }
                            @if retry {
                                td.actions {
                                    @if !kind_needs_admin(&t.kind) || viewer.can(Scope::Admin) {
                                        (action("Retry", format!("/api/v1/tasks/{}/retry", t.id), format!("Retry task {}?", t.id)))
                                    } @else {
                                        span.muted title="the shell, salt and kubectl kinds need an admin token" { "admin" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How long a task's last attempt ran (so far, while it runs).
fn took(task: &Task) -> String {
    match (task.started_at, task.finished_at) {
        (Some(start), Some(end)) => {
            view::short_duration((end - start).num_milliseconds().max(0) as u64)
        }
        _ => "—".to_owned(),
    }
}

/// [`took`], kept current by the script while the task runs.
fn took_live(task: &Task) -> Markup {
    match (task.started_at, task.finished_at) {
        (Some(start), None) if task.status == TaskStatus::Running => {
            view::running_for(start, now())
        }
        _ => html! { (took(task)) },
    }
}

/// The first line of `text`, cut to `max` characters.
fn first_line(text: &str, max: usize) -> String {
    view::truncate(text.lines().next().unwrap_or(""), max)
}

fn submit_form(viewer: &Viewer, kinds: &[KindInfo]) -> Markup {
    let usable: Vec<&KindInfo> = kinds
        .iter()
        .filter(|k| k.enabled && (!k.admin || viewer.can(Scope::Admin)))
        .collect();
    html! {
        details.panel #new {
            summary { "Submit a task" }
            form #submit-task data-submit-task {
                div.grid {
                    label { "Kind"
                        select name="kind" required {
                            @for k in &usable { option value=(k.name) title=[k.about.as_deref()] { (k.name) } }
                        }
                    }
                    label { "Queue" input name="queue" value="default" list="queue-names" required; }
                    label { "Priority" input name="priority" type="number" value="0" min="-1000" max="1000"; }
                    label { "Max attempts" input name="max_attempts" type="number" value="3" min="1" max="100"; }
                    label { "Delay (s)" input name="delay" type="number" value="0" min="0"; }
                    label { "Labels" input name="labels" placeholder="team=ops,env=dev"; }
                }
                label.block { "Payload (JSON)" textarea name="payload" rows="5" spellcheck="false" { "{}" } }
                p.error #submit-error role="alert" hidden {}
                button type="submit" { "Submit" }
            }
        }
    }
}

/// `GET /ui/tasks/{id}`: everything about one task, and its log as it is written.
pub async fn task(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
) -> Response {
    done(task_page(state, viewer, raw).await)
}

async fn task_page(state: AppState, viewer: Viewer, raw: String) -> Page {
    let id = Uuid::parse_str(&raw).map_err(|_| {
        view::problem(
            &viewer,
            StatusCode::BAD_REQUEST,
            "Bad task id",
            &format!("'{raw}' is not a task id (a UUID)"),
        )
    })?;
    let Json(t) = tasks::get_one(State(state.clone()), TaskId(id))
        .await
        .map_err(|e| failed(&viewer, e))?;
    let lines = state
        .store
        .logs(id, 0, 1000)
        .await
        .map_err(|e| failed(&viewer, e.into()))?;
    let now = now();
    let may_run = !kind_needs_admin(&t.kind) || viewer.can(Scope::Admin);
    let last = lines.last().map_or(0, |l| l.seq);
    let lines: Vec<taskplane_api::LogLine> = lines
        .into_iter()
        .map(crate::http::convert::log_line)
        .collect();
    // A rule before the first line of each attempt.
    let mut attempt = 0;
    let rows: Vec<(Option<u32>, &taskplane_api::LogLine)> = lines
        .iter()
        .map(|line| {
            let mark = (line.attempt != attempt).then_some(line.attempt);
            attempt = line.attempt;
            (mark, line)
        })
        .collect();
    let body = html! {
        section #head .panel data-live data-finished=[t.status.is_terminal().then_some("1")] {
            div.headline {
                (view::status(t.status))
                code.id { (t.id) }
                div.actions {
                    @if viewer.can(Scope::Write) && !t.status.is_terminal() {
                        (Action { label: "Cancel", url: format!("/api/v1/tasks/{}/cancel", t.id),
                            confirm: format!("Cancel task {}? A running attempt is stopped.", t.id),
                            body: None, danger: true, then: None }.render())
                    }
                    @if viewer.can(Scope::Write) && may_run && matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled) {
                        (action("Retry", format!("/api/v1/tasks/{}/retry", t.id), format!("Retry task {}? It runs again from its first attempt.", t.id)))
                    }
                }
            }
            dl.facts {
                dt { "Kind" } dd { (t.kind) }
                dt { "Queue" } dd { a href={ "/ui/tasks?queue=" (t.queue) } { (t.queue) } }
                dt { "Priority" } dd { (t.priority) }
                dt { "Attempts" } dd { (t.attempts) " of " (t.max_attempts) }
                dt { "Worker" } dd { (t.worker.as_deref().unwrap_or("—")) }
                dt { "Created" } dd { (when(t.created_at, now)) }
                dt { "Run at" } dd { (when(t.run_at, now)) }
                dt { "Started" } dd { (when_opt(t.started_at, now)) }
                dt { "Finished" } dd { (when_opt(t.finished_at, now)) }
                dt { "Took" } dd { (took_live(&t)) }
                dt { "Timeout" } dd { (view::short_duration(t.timeout_secs * 1000)) }
                @if !t.labels.is_empty() {
                    dt { "Labels" } dd { @for (k, v) in &t.labels { a.label href={ "/ui/tasks?" (serde_html_form::to_string([("label", format!("{k}={v}"))]).unwrap_or_default()) } { (k) "=" (v) } " " } }
                }
                @if let Some(key) = &t.idempotency_key { dt { "Idempotency key" } dd { code { (key) } } }
                @if let Some(key) = &t.concurrency_key { dt { "Concurrency" } dd { code { (key) } " ≤ " (t.concurrency_limit.unwrap_or(1)) } }
                @if !t.depends_on.is_empty() {
                    dt { "Depends on" } dd { @for d in &t.depends_on { a href={ "/ui/tasks/" (d) } { (view::short_id(d)) } " " } }
                }
                @if let Some(w) = t.workflow_id {
                    dt { "Workflow" } dd { a href={ "/ui/workflows/" (w) } { (view::short_id(&w)) } @if let Some(step) = &t.step { " step " code { (step) } } }
                }
                @if t.cancel_requested && !t.status.is_terminal() { dt { "Cancel" } dd { "requested" } }
            }
        }
        section #outcome data-live {
            @if let Some(error) = &t.last_error {
                div.panel {
                    // A failed or cancelled task's error is why it ended; otherwise it is an
                    // earlier attempt's (the task goes on, or succeeded after it).
                    h2 { @if matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled) { "Error" } @else { "An earlier attempt's error" } }
                    pre.error-text { (error) }
                }
            }
            @if let Some(result) = &t.result { div.panel { h2 { "Result" } (view::json_block(result)) } }
        }
        section.panel {
            h2 { "Log" }
            pre #log .log data-task=(t.id) data-after=(last) data-attempt=(attempt) tabindex="0" aria-label="The task's output" {
                @for (mark, line) in &rows {
                    @if let Some(n) = mark { span.attempt { "── attempt " (n) " · " (line.ts.format("%H:%M:%S UTC")) " ──\n" } }
                    span class={ "ln s-" (line.stream.as_str()) } { (line.line) "\n" }
                }
                @if lines.is_empty() { span.muted.placeholder { (if t.status.is_terminal() { "No output." } else { "No output yet." }) } }
            }
        }
        section.panel {
            h2 { "Payload" }
            (view::json_block(&t.payload))
        }
    };
    Ok(view::page(
        &viewer,
        "/ui/tasks",
        &format!("Task …{}", view::short(&t.id)),
        Live::events(format!("tasks={}", t.id)),
        body,
    ))
}

/// `GET /ui/queues`: every queue's counts, limits and state, with pause and resume.
pub async fn queues(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let fleet = match ui.fleet(&state).await {
        Ok(fleet) => fleet,
        Err(e) => return failed(&viewer, e),
    };
    let queues = &fleet.queues;
    let served = served_queues(&fleet.workers.workers);
    let body = html! {
        section #queues .panel data-live { (queue_table(&ui, &viewer, &queues.queues, served.as_ref(), true)) }
    };
    view::page(
        &viewer,
        "/ui/queues",
        "Queues",
        Live::events("").every(5_000).gap(1_000),
        body,
    )
}

/// `GET /ui/schedules`: every schedule with its next and last run; pause, resume, run now.
pub async fn schedules(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    uri: Uri,
) -> Response {
    let filter = match Filter::parse(&viewer, &uri) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let query = ScheduleQuery {
        limit: Some(PAGE),
        cursor: filter.cursor.clone(),
    };
    let Json(list) = match schedules::list(State(state), QueryParams(query)).await {
        Ok(l) => l,
        Err(e) => return failed(&viewer, e),
    };
    let now = now();
    let write = viewer.can(Scope::Write);
    let body = html! {
        section #schedules .panel data-live {
            div.scroll {
                table {
                    thead { tr {
                        th { "Schedule" } th { "When" } th.wide { "Kind" } th.wide { "Queue" }
                        th { "Next run" } th.wide { "Last run" } th { "Last status" } th { "State" }
                        @if write { th { span.sr { "Actions" } } }
                    } }
                    tbody {
                        @if list.schedules.is_empty() { (view::empty_row(8 + u32::from(write), "No schedules: create one with taskctl schedule create.")) }
                        @for s in &list.schedules {
                            tr {
                                td { (s.name) }
                                td { code { (s.timing_text()) } }
                                td.wide { (s.task.kind) }
                                td.wide { (s.task.queue.as_deref().unwrap_or("default")) }
                                td { @if s.paused { span.muted { "paused" } } @else { (when_opt(s.next_run_at, now)) } }
                                td.wide { (when_opt(s.last_run_at, now)) }
                                td {
                                    @match (s.last_status, s.last_task_id) {
                                        (Some(status), Some(id)) => a href={ "/ui/tasks/" (id) } { (view::status(status)) },
                                        _ => span.muted { "—" },
                                    }
                                }
                                td { @if s.paused { (view::badge("paused")) } @else { (view::badge("active")) } }
                                @if write {
                                    td.actions {
                                      @if !kind_needs_admin(&s.task.kind) || viewer.can(Scope::Admin) {
                                        @if s.paused {
                                            (action("Resume", format!("/api/v1/schedules/{}/resume", s.name), format!("Resume schedule {}?", s.name)))
                                        } @else {
                                            (action("Pause", format!("/api/v1/schedules/{}/pause", s.name), format!("Pause schedule {}? It fires no more until resumed.", s.name)))
                                        }
                                        (action("Run now", format!("/api/v1/schedules/{}/trigger", s.name), format!("Submit schedule {}'s task now?", s.name)))
                                      }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (view::pager("/ui/schedules", &[], filter.cursor.is_some(), list.next_cursor.as_deref()))
        }
    };
    view::page(
        &viewer,
        "/ui/schedules",
        "Schedules",
        Live::default().every(5_000),
        body,
    )
}

/// `GET /ui/workflows`: workflows, newest first, by name.
pub async fn workflows(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    uri: Uri,
) -> Response {
    let filter = match Filter::parse(&viewer, &uri) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let cursor = match filter.cursor.as_deref().map(Uuid::parse_str) {
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            return view::problem(
                &viewer,
                StatusCode::BAD_REQUEST,
                "Bad cursor",
                "the cursor is not a workflow id",
            );
        }
        None => None,
    };
    let query = WorkflowQuery {
        name: filter.name.clone(),
        limit: Some(PAGE),
        cursor,
    };
    let (list, next, problem) = match workflows::list(State(state), QueryParams(query)).await {
        Ok(Json(l)) => (l.workflows, l.next_cursor, None),
        Err(e) if e.status.is_client_error() => (Vec::new(), None, Some(e.message)),
        Err(e) => return failed(&viewer, e),
    };
    let now = now();
    let body = html! {
        form.filters method="get" action="/ui/workflows" role="search" {
            label { "Name " input name="name" value=(Filter::text(&filter.name)) size="16"; }
            button type="submit" { "Apply" }
            a href="/ui/workflows" { "Clear" }
        }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        section #workflows .panel data-live {
            div.scroll {
                table {
                    thead { tr { th { "Workflow" } th { "Name" } th { "Status" } th { "Steps" } th { "Created" } th.wide { "Finished" } } }
                    tbody {
                        @if list.is_empty() { (view::empty_row(6, "No workflows: run one with taskctl workflow run -f FILE.")) }
                        @for w in &list {
                            tr {
                                td { a href={ "/ui/workflows/" (w.id) } { (view::short_id(&w.id)) } }
                                td { (w.name) }
                                td { (view::badge(w.status.as_str())) }
                                td { @for (status, n) in &w.counts { @if *n > 0 { span class={ "badge st-" (status) } { (n) " " (status) } " " } } }
                                td { (when(w.created_at, now)) }
                                td.wide { (when_opt(w.finished_at, now)) }
                            }
                        }
                    }
                }
            }
            (view::pager("/ui/workflows", &[("name", Filter::text(&filter.name))], filter.cursor.is_some(), next.as_deref()))
        }
    };
    view::page(
        &viewer,
        "/ui/workflows",
        "Workflows",
        if filter.cursor.is_none() {
            Live::events("").every(10_000)
        } else {
            Live::default()
        },
        body,
    )
}

/// `GET /ui/workflows/{id}`: the DAG, coloured by status, and every step.
pub async fn workflow(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&raw) else {
        return view::problem(
            &viewer,
            StatusCode::BAD_REQUEST,
            "Bad workflow id",
            &format!("'{raw}' is not a workflow id (a UUID)"),
        );
    };
    let Json(w) = match workflows::get_one(State(state), WorkflowId(id)).await {
        Ok(w) => w,
        Err(e) => return failed(&viewer, e),
    };
    let now = now();
    let write = viewer.can(Scope::Write);
    let again: Vec<_> = w
        .steps
        .iter()
        .filter(|s| matches!(s.status, TaskStatus::Failed | TaskStatus::Cancelled))
        .collect();
    // As the API: running a privileged kind's step again needs admin.
    let retryable = !again.is_empty()
        && again
            .iter()
            .all(|s| !kind_needs_admin(&s.kind) || viewer.can(Scope::Admin));
    let body = html! {
        section #head .panel data-live {
            div.headline {
                (view::badge(w.status.as_str()))
                strong { (w.name) }
                code.id { (w.id) }
                div.actions {
                    @if write && w.status == WorkflowStatus::Running {
                        (Action { label: "Cancel", url: format!("/api/v1/workflows/{}/cancel", w.id),
                            confirm: format!("Cancel workflow {}? Every step not yet finished is cancelled.", w.name),
                            body: None, danger: true, then: None }.render())
                    }
                    @if write && retryable {
                        (action("Retry", format!("/api/v1/workflows/{}/retry", w.id), format!("Retry the failed and cancelled steps of {}?", w.name)))
                    }
                }
            }
            p.muted { "Created " (when(w.created_at, now)) @if let Some(f) = w.finished_at { " · finished " (when(f, now)) } }
        }
        section #dag .panel data-live {
            h2 { "Steps" }
            div.scroll.dag-box { (chart::dag(&w.steps)) }
        }
        section #steps .panel data-live {
            div.scroll {
                table {
                    thead { tr { th { "Step" } th { "Status" } th.wide { "Kind" } th.wide { "Needs" } th.num { "Attempts" } th.wide { "Started" } th.wide { "Finished" } th.wide { "Error" } } }
                    tbody {
                        @for s in &w.steps {
                            tr {
                                td { a href={ "/ui/tasks/" (s.task_id) } { (s.id) } }
                                td { (view::status(s.status)) }
                                td.wide { (s.kind) }
                                td.wide { (s.needs.join(", ")) }
                                td.num { (s.attempts) "/" (s.max_attempts) }
                                td.wide { (when_opt(s.started_at, now)) }
                                td.wide { (when_opt(s.finished_at, now)) }
                                td.wide.error-text { (s.last_error.as_deref().map(|e| first_line(e, 60)).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    };
    view::page(
        &viewer,
        "/ui/workflows",
        &format!("Workflow {}", w.name),
        Live::events(format!("workflow={}", w.id)),
        body,
    )
}

/// `GET /ui/audit`: operator actions, newest first (admin tokens only, as the API).
pub async fn audit(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    uri: Uri,
) -> Response {
    if !viewer.allows(Scope::Admin) {
        return view::problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "Audit log",
            "The audit log needs a token with the admin scope.",
        );
    }
    let filter = match Filter::parse(&viewer, &uri) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let query = AuditQuery {
        since: None,
        actor: filter.actor.clone(),
        action: filter.action.clone(),
        limit: Some(PAGE),
        cursor: filter.cursor.clone(),
    };
    let (entries, next, problem) = match controls::audit(State(state), QueryParams(query)).await {
        Ok(Json(l)) => (l.entries, l.next_cursor, None),
        Err(e) if e.status.is_client_error() => (Vec::new(), None, Some(e.message)),
        Err(e) => return failed(&viewer, e),
    };
    let now = now();
    let body = html! {
        form.filters method="get" action="/ui/audit" role="search" {
            label { "Actor " input name="actor" value=(Filter::text(&filter.actor)) size="14"; }
            label { "Action " input name="action" value=(Filter::text(&filter.action)) placeholder="cancel, queue, dlq" size="14"; }
            button type="submit" { "Apply" }
            a href="/ui/audit" { "Clear" }
        }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        section #entries .panel data-live {
            div.scroll {
                table {
                    thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th.wide { "Details" } } }
                    tbody {
                        @if entries.is_empty() { (view::empty_row(5, "No operator actions recorded.")) }
                        @for e in &entries {
                            tr {
                                td { (when(e.at, now)) }
                                td { (e.actor) }
                                td { code { (e.action) } }
                                td { (audit_target(&e.action, &e.target)) }
                                td.wide { code.details { (e.details.to_string()) } }
                            }
                        }
                    }
                }
            }
            (view::pager("/ui/audit", &[("actor", Filter::text(&filter.actor)), ("action", Filter::text(&filter.action))], filter.cursor.is_some(), next.as_deref()))
        }
    };
    view::page(
        &viewer,
        "/ui/audit",
        "Audit log",
        Live::default().every(10_000),
        body,
    )
}

/// An audit entry's target, linked to its page where it has one.
fn audit_target(action: &str, target: &str) -> Markup {
    let href = if action.starts_with("workflow") {
        Uuid::parse_str(target)
            .ok()
            .map(|id| format!("/ui/workflows/{id}"))
    } else if action.starts_with("queue") {
        Some(format!(
            "/ui/tasks?{}",
            serde_html_form::to_string([("queue", target)]).unwrap_or_default()
        ))
    } else if action.starts_with("schedule") {
        Some("/ui/schedules".to_owned())
    } else {
        Uuid::parse_str(target)
            .ok()
            .map(|id| format!("/ui/tasks/{id}"))
    };
    html! {
        @match href {
            Some(href) => a href=(href) { code { (target) } },
            None => code { (target) },
        }
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: asks for a token (auth on).
pub async fn login(
    Extension(viewer): Extension<Viewer>,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    // Only a page of the dashboard, never another site (`//host`).
    let next = query
        .next
        .filter(|n| n.starts_with("/ui/") && !n.chars().any(char::is_control))
        .unwrap_or_else(|| "/ui/".to_owned());
    if !viewer.auth {
        return Redirect::to(&next).into_response();
    }
    let body = html! {
        form #login .panel.narrow data-next=(next) {
            p { "This taskd requires a token. Paste one (" code { "taskd token issue --scope tasks.read" } " makes one); it is kept for this browser session only, where scripts cannot read it." }
            label.block { "Token" input name="token" type="password" autocomplete="off" required autofocus; }
            p.error #login-error role="alert" hidden {}
            button type="submit" { "Sign in" }
        }
    };
    view::page(&viewer, "", "Sign in", Live::default(), body)
}

/// Any other `/ui/…` path.
pub async fn not_found(Extension(viewer): Extension<Viewer>, uri: Uri) -> Response {
    view::problem(
        &viewer,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no dashboard page at {}.", uri.path()),
    )
}
