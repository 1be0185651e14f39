//! The live endpoints: `/api/v1/events` (Server-Sent Events), following a task's output,
//! `/api/v1/queues` and `/api/v1/workers`.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use super::openapi::Refused;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
#[allow(unused_imports)]
use taskplane_api::ErrorBody;
use taskplane_api::{
    EventQuery, QueueList, QueueStats, TaskEvent, TaskStatus, WorkerInfo, WorkerList,
};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::AppState;
use super::convert;
use super::convert::instant;
use super::error::ApiError;
use super::extract::QueryParams;
use crate::util::now_ms;

/// How many events a resuming client may be sent from the database.
const REPLAY_LIMIT: u32 = 10_000;
/// How often a follower of a task's output looks for more: at first, and after new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between looks while a task prints nothing.
const FOLLOW_SLOWEST: Duration = Duration::from_secs(1);
/// A follower sends an empty line after this much silence: a client that has gone is
/// noticed when the write fails, and clients can tell a quiet task from a dead server.
const FOLLOW_HEARTBEAT: Duration = Duration::from_secs(5);

/// Turns a channel into the stream a response body wants.
fn channel_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

struct EventFilter {
    queue: Option<String>,
    kind: Option<String>,
    tasks: Option<HashSet<Uuid>>,
    workflow: Option<Uuid>,
}

impl EventFilter {
    fn parse(query: EventQuery) -> Result<EventFilter, ApiError> {
        let tasks = query
            .tasks
            .map(|list| {
                list.split(',')
                    .filter(|id| !id.is_empty())
                    .map(|id| {
                        Uuid::parse_str(id).map_err(|_| {
                            ApiError::bad_request(
                                "invalid_query",
                                format!("tasks: '{id}' is not a task id"),
                            )
                        })
                    })
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        Ok(EventFilter {
            queue: query.queue,
            kind: query.kind,
            tasks,
            workflow: query.workflow,
        })
    }

    fn matches(&self, event: &TaskEvent) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == event.task.queue)
            && self.kind.as_ref().is_none_or(|k| *k == event.task.kind)
            && self
                .tasks
                .as_ref()
                .is_none_or(|t| t.contains(&event.task.id))
            && self.workflow.is_none_or(|w| event.workflow == Some(w))
    }
}

fn sse_event(event: &TaskEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .data(data)
}

/// `GET /api/v1/events`: every task state change, live, as Server-Sent Events; `queue`,
/// `kind` and `tasks` filter; `since_secs` and `last` replay recent events first;
/// `Last-Event-ID` resumes from the database (events are kept for ten minutes); a comment
/// every 15 s keeps proxies from closing the stream.
#[utoipa::path(get, path = "/api/v1/events", tag = "live",
    params(EventQuery, ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses(
        (status = 200, description = "Server-Sent Events; each `data:` is a TaskEvent", body = TaskEvent,
            content_type = "text/event-stream"),
        (status = 400, description = "bad input", body = ErrorBody),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (since_secs, last) = (query.since_secs, query.last);
    if last.is_some_and(|n| n > REPLAY_LIMIT) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("last must be 0 to {REPLAY_LIMIT}"),
        ));
    }
    let filter = EventFilter::parse(query)?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_request",
                    "Last-Event-ID must be the seq of an event",
                )
            })
        })
        .transpose()?;
    // Subscribe before reading the backlog, so nothing falls between the two.
    let mut live = state.events.subscribe();
    // A reconnecting client's Last-Event-ID wins over the replay it first asked for.
    let resume_after = match resume_after {
        Some(after) => Some(after),
        None => replay_start(&state, &filter, since_secs, last).await?,
    };
    // The first page answers now (a bad store shows as an error status); the rest of the
    // backlog streams page by page, since stopping at a page limit would drop the events
    // between its end and the live feed.
    let first_page = match resume_after {
        Some(after) => Some(state.events.replay(after, REPLAY_LIMIT).await?),
        None => None,
    };
    let hub = state.events.clone();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    let open = state.metrics.stream_opened();
    tokio::spawn(async move {
        let _open = open;
        let mut sent: HashSet<i64> = HashSet::new();
        let mut replayed_up_to = None;
        let mut page = first_page;
        while let Some(events) = page.take() {
            for event in &events {
                sent.insert(event.seq);
                if filter.matches(event) && tx.send(Ok(sse_event(event))).await.is_err() {
                    return;
                }
            }
            replayed_up_to = events.last().map(|e| e.seq).or(replayed_up_to);
            if events.len() == REPLAY_LIMIT as usize
                && let Some(after) = replayed_up_to
            {
                // On a store error the stream ends; the client resumes from its last event.
                match hub.replay(after, REPLAY_LIMIT).await {
                    Ok(next) => page = Some(next),
                    Err(_) => return,
                }
            }
        }
        loop {
            // A client that has gone (its stream dropped at a failed heartbeat write) ends
            // this task at once, not at the next matching event.
            let received = tokio::select! {
                received = live.recv() => received,
                _ = tx.closed() => return,
            };
            match received {
                Ok(event) => {
                    if replayed_up_to.is_some_and(|up_to| event.seq <= up_to)
                        && sent.contains(&event.seq)
                    {
                        continue;
                    }
                    if filter.matches(&event) && tx.send(Ok(sse_event(&event))).await.is_err() {
                        return;
                    }
                }
                // A client too slow to keep up is cut off; it resumes with Last-Event-ID.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(channel_stream(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How many kept events `last=N` looks back through at most to find N that match.
const LOOK_BACK_LIMIT: usize = 100_000;

/// Where a stream that asked for `since_secs` or `last` starts: the `seq` to replay after
/// (None: live only).
async fn replay_start(
    state: &AppState,
    filter: &EventFilter,
    since_secs: Option<u64>,
    last: Option<u32>,
) -> Result<Option<i64>, ApiError> {
    let floor = match since_secs {
        Some(secs) => {
            let at = now_ms()
                .saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
            Some(state.events.resume_point_since(at).await?)
        }
        None => None,
    };
    let Some(want) = last else {
        return Ok(floor);
    };
    if want == 0 {
        return Ok(Some(state.events.latest().await?));
    }
    // Walk back from the newest event until `want` of them match (or the floor, or the
    // oldest kept event, or the look-back limit is reached).
    let floor_seq = floor.unwrap_or(0);
    let mut before = i64::MAX;
    let mut matched = 0u32;
    let mut looked = 0usize;
    loop {
        let page = state.events.replay_before(before, 1000).await?;
        for event in &page {
            if event.seq <= floor_seq {
                return Ok(Some(floor_seq));
            }
            if filter.matches(event) {
                matched += 1;
                if matched == want {
                    return Ok(Some(event.seq - 1));
                }
            }
        }
        looked += page.len();
        match page.last() {
            Some(oldest) if page.len() == 1000 && looked < LOOK_BACK_LIMIT => before = oldest.seq,
            Some(oldest) => return Ok(Some(oldest.seq - 1)),
            None => return Ok(Some(floor_seq)),
        }
    }
}

/// Streams a task's output as NDJSON until the task has finished and every line is out.
pub async fn follow_logs(state: AppState, id: Uuid, mut after: i64) -> Result<Response, ApiError> {
    if state.store.get(id).await?.is_none() {
        return Err(ApiError::task_not_found(id));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let open = state.metrics.stream_opened();
    tokio::spawn(async move {
        let _open = open;
        let mut wait = FOLLOW_EVERY;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            if tx.is_closed() {
                return;
            }
            // Status first: terminal, then an empty read, means every line is out.
            let finished = match state.store.get(id).await {
                Ok(Some(task)) => task.status.is_terminal(),
                Ok(None) => true,
                Err(_) => false,
            };
            let lines = state.store.logs(id, after, 1000).await.unwrap_or_default();
            let empty = lines.is_empty();
            for line in lines {
                after = line.seq;
                let mut text = serde_json::to_vec(&convert::log_line(line)).unwrap_or_default();
                text.push(b'\n');
                if tx.send(Ok(Bytes::from(text))).await.is_err() {
                    return;
                }
            }
            if finished && empty {
                return;
            }
            if !empty {
                wait = FOLLOW_EVERY;
                last_sent = tokio::time::Instant::now();
                continue;
            }
            if last_sent.elapsed() >= FOLLOW_HEARTBEAT {
                if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
            // A quiet task is looked at less and less often, down to once a second.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
            wait = (wait * 2).min(FOLLOW_SLOWEST);
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(channel_stream(rx)),
    )
        .into_response())
}

/// The stats of `name`, starting from zero for every status.
fn queue_entry(queues: &mut BTreeMap<String, QueueStats>, name: String) -> &mut QueueStats {
    queues.entry(name).or_insert_with_key(|name| QueueStats {
        queue: name.clone(),
        counts: TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect(),
        depth: 0,
        oldest_ready_secs: None,
        finished_last_minute: 0,
        failed_last_minute: 0,
        throughput_per_sec: 0.0,
        broker: None,
        paused: false,
        max_running: None,
        rate_per_sec: None,
    })
}

/// `GET /api/v1/queues`.
#[utoipa::path(get, path = "/api/v1/queues", tag = "live",
    responses(
        (status = 200, description = "every queue", body = QueueList),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn queues(State(state): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    let now = now_ms();
    let counts = state.store.queue_counts(None).await?;
    let recent = state.store.queue_counts(Some(now - 60_000)).await?;
    let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
    for count in counts {
        let waited = count.oldest_secs(now);
        let stats = queue_entry(&mut queues, count.queue);
        stats.counts.insert(count.status, count.count);
        if count.status == TaskStatus::Queued {
            stats.depth = count.count;
            stats.oldest_ready_secs = waited;
        }
    }
    for count in recent {
        let stats = queue_entry(&mut queues, count.queue);
        stats.finished_last_minute += count.count;
        if count.status == TaskStatus::Failed {
            stats.failed_last_minute += count.count;
        }
    }
    // Settings hold for queues without tasks too.
    for gate in state.store.queue_settings().await? {
        let stats = queue_entry(&mut queues, gate.queue.clone());
        let settings = super::controls::settings(gate);
        stats.paused = settings.paused;
        stats.max_running = settings.max_running;
        stats.rate_per_sec = settings.rate_per_sec;
    }
    for stats in queues.values_mut() {
        stats.throughput_per_sec = stats.finished_last_minute as f64 / 60.0;
        if let Some(broker) = state.broker.transport() {
            stats.broker = broker.queue_stats(&stats.queue).await.ok();
        }
    }
    Ok(Json(QueueList {
        queues: queues.into_values().collect(),
    }))
}

/// `GET /api/v1/workers`: workers whose heartbeat is recent; one that misses three drops out.
#[utoipa::path(get, path = "/api/v1/workers", tag = "live",
    responses(
        (status = 200, description = "live workers", body = WorkerList),
        Refused
    ),
    security(("bearer" = ["tasks.read"])))]
pub async fn workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let rows = super::leases::live_workers(&state).await?;
    Ok(Json(WorkerList {
        workers: rows
            .into_iter()
            .map(|row| WorkerInfo {
                queues: row.queues.split(',').map(str::to_owned).collect(),
                id: row.id,
                host: row.host,
                pid: row.pid,
                concurrency: row.concurrency,
                busy: row.busy,
                started_at: instant(row.started_at),
                last_heartbeat: instant(row.heartbeat_at),
                kinds: row
                    .kinds
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
                remote: row.remote,
            })
            .collect(),
    }))
}
