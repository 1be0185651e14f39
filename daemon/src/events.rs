//! Live task events. Every state change lands in the `task_events` change feed, in the same
//! transaction as the change, whichever process made it (on PostgreSQL statement triggers
//! write a row per statement with all the events it made; on SQLite the store's writer
//! writes a row per round of submits, claims and settles, and row triggers one per other
//! change); each API process polls the feed and fans the events out to its
//! `/api/v1/events` subscribers.
//! Because the feed is in the database, events from every api and worker process reach every
//! api process, and a client can resume from the database with `Last-Event-ID`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use taskplane_api::{EventKind, TaskEvent, TaskSummary, WorkflowStatus};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{EVENTS_PER_ROW, EventRow, Store, StoredEvent};

/// How often the feed is read when nothing pokes the hub.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long rows wait for a missing number below them before it is given up.
const HOLD: Duration = Duration::from_secs(1);
/// How long after that a row with a given-up number still goes out (late).
const GAP_WINDOW: Duration = Duration::from_secs(3);
/// The most rows one read takes. A row holds a statement's events on PostgreSQL and a write
/// round's on SQLite (tens, typically; one for a change outside the rounds), and the hub
/// reads once per tick unless poked: fewer rows per read would cap the feed (500
/// single-event rows per 50 ms halved the embedded platform's batch throughput when every
/// SQLite change was a row).
const BATCH: u32 = 2000;
/// The most unseen spans one gap check reads again.
const MAX_GAPS: usize = 64;
/// Gaps closer than this many numbers are read again as one span.
const MERGE_GAPS: i64 = 64;
/// How often the missing numbers are read again.
const GAP_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How many workflows the hub follows to their end, and remembers having announced (past
/// that it forgets them all: a workflow running across that is announced late or not at
/// all, one just announced could be announced twice).
const ENDS_KEPT: usize = 10_000;

pub struct EventHub {
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Arc<TaskEvent>>,
    poke: Notify,
}

impl EventHub {
    pub fn new(store: Arc<dyn Store>) -> Arc<EventHub> {
        // A subscriber more than this many events behind is cut off and resumes from the
        // database with Last-Event-ID.
        let (tx, _) = broadcast::channel(16_384);
        Arc::new(EventHub {
            store,
            tx,
            poke: Notify::new(),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TaskEvent>> {
        self.tx.subscribe()
    }

    /// A write just happened in this process: read the feed now rather than at the next tick.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Up to `limit` events after the event `after` from the database, oldest first, for a
    /// client resuming with `Last-Event-ID`.
    pub async fn replay(&self, after: i64, limit: u32) -> crate::store::Result<Vec<TaskEvent>> {
        let mut out = Vec::new();
        // The row holding `after` may hold later events too.
        let mut row_after = after.div_euclid(EVENTS_PER_ROW) - 1;
        while out.len() < limit as usize {
            let rows = self.store.event_rows(row_after, i64::MAX, 100).await?;
            let full = rows.len() == 100;
            for row in rows {
                row_after = row.seq;
                out.extend(
                    row.events
                        .into_iter()
                        .filter(|event| event.seq > after)
                        .map(to_wire),
                );
            }
            if !full {
                break;
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    /// Up to `limit` events before the event `before`, newest first (`last=N` walks back
    /// through these).
    pub async fn replay_before(
        &self,
        before: i64,
        limit: u32,
    ) -> crate::store::Result<Vec<TaskEvent>> {
        let mut out = Vec::new();
        let mut row_before = before.div_euclid(EVENTS_PER_ROW).saturating_add(1);
        while out.len() < limit as usize {
            let rows = self.store.event_rows_before(row_before, 100).await?;
            let full = rows.len() == 100;
            for row in rows {
                row_before = row.seq;
                out.extend(
                    row.events
                        .into_iter()
                        .rev()
                        .filter(|event| event.seq < before)
                        .map(to_wire),
                );
            }
            if !full {
                break;
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    /// The id of the newest event (0 when there is none): a stream resuming after it sees
    /// only what happens from now on.
    pub async fn latest(&self) -> crate::store::Result<i64> {
        let seq = self.store.latest_event().await?;
        Ok(if seq == 0 {
            0
        } else {
            seq * EVENTS_PER_ROW + (EVENTS_PER_ROW - 1)
        })
    }

    /// The event id to resume after so that a client sees every kept event recorded at or
    /// after `at` (the newest when there is none).
    pub async fn resume_point_since(&self, at: i64) -> crate::store::Result<i64> {
        match self.store.first_event_since(at).await? {
            Some(seq) => Ok(seq * EVENTS_PER_ROW - 1),
            None => self.latest().await,
        }
    }

    /// Reads the feed until `shutdown`, broadcasting each event once, in `seq` order.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let latest = loop {
            match self.store.latest_event().await {
                Ok(seq) => break seq,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the event feed yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut feed = Feed::starting_after(latest);
        let mut ends = Ends::default();
        let mut last_gap_check = Instant::now();
        // A full read means more rows are waiting: read again at once.
        let mut behind = false;
        loop {
            if behind {
                if shutdown.is_cancelled() {
                    return;
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.poke.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
            behind = false;
            // New rows, then the numbers still missing below them (each span read whole).
            let mut reads = vec![(feed.read_after(), i64::MAX)];
            let now = Instant::now();
            if now.duration_since(last_gap_check) >= GAP_CHECK_EVERY {
                last_gap_check = now;
                reads.extend(feed.gaps(MAX_GAPS).into_iter().map(|(a, b)| (a - 1, b)));
            }
            'reads: for (after, upto) in reads {
                let mut after = after;
                loop {
                    match self.store.event_rows(after, upto, BATCH).await {
                        Ok(rows) => {
                            let full = rows.len() == BATCH as usize;
                            for row in rows {
                                after = row.seq;
                                if let Some(late) = feed.offer(row) {
                                    self.send(late, &mut ends).await;
                                }
                            }
                            if upto == i64::MAX {
                                behind = full;
                                break;
                            }
                            if !full {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "reading the event feed failed");
                            break 'reads;
                        }
                    }
                }
            }
            for row in feed.release(Instant::now()) {
                self.send(row, &mut ends).await;
            }
        }
    }

    /// Sends a row's events, then the end of each workflow one of them may have finished.
    async fn send(&self, row: EventRow, ends: &mut Ends) {
        // The last finished step of each workflow in this row.
        let mut steps: Vec<Arc<TaskEvent>> = Vec::new();
        for event in row.events {
            let event = Arc::new(to_wire(event));
            if let (Some(workflow), true) = (event.workflow, event.task.status.is_terminal()) {
                ends.finished(workflow, event.task.id);
                steps.retain(|step| step.workflow != event.workflow);
                steps.push(event.clone());
            }
            let _ = self.tx.send(event);
        }
        if self.tx.receiver_count() == 0 {
            return;
        }
        for step in steps {
            self.announce_end(&step, ends).await;
        }
    }

    /// Sends `workflow_succeeded`, `_failed` or `_cancelled` if the workflow of `step` (a
    /// step that just finished) has no unfinished step left, once the end of the step that
    /// finished last has gone out: the feed is read in order after the changes it holds
    /// were committed, so the end follows every step's own, and of the steps that see the
    /// workflow ended, only one announces it (a workflow that ends again after a retry ends
    /// later).
    async fn announce_end(&self, step: &TaskEvent, ends: &mut Ends) {
        let Some(id) = step.workflow else { return };
        let summary = match self.store.workflow_summary(id).await {
            Ok(Some(summary)) => summary,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, workflow = %id, "reading whether a workflow ended failed");
                return;
            }
        };
        let status = WorkflowStatus::of(summary.counts.iter().map(|(status, _)| *status));
        let (Some(kind), Some(at)) = (EventKind::workflow_ended(status), summary.finished_at)
        else {
            return;
        };
        if ends.announced.get(&id) == Some(&at) {
            return;
        }
        let last = match self.store.workflow(id).await {
            Ok(Some(state)) => state
                .steps
                .into_iter()
                .max_by_key(|task| (task.finished_at, task.id)),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(%error, workflow = %id, "reading an ended workflow failed");
                return;
            }
        };
        let Some(last) = last else { return };
        if !ends.seen(id, last.id) {
            // Its end is still to come in the feed; the workflow is checked again then.
            return;
        }
        ends.announce(id, at);
        let instant = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let _ = self.tx.send(Arc::new(TaskEvent {
            kind,
            at: instant(at),
            task: TaskSummary {
                id: last.id,
                kind: last.kind,
                queue: last.queue,
                priority: last.priority,
                status: last.status,
                attempts: last.attempts,
                max_attempts: last.max_attempts,
                created_at: instant(last.created_at),
                worker: last.worker,
            },
            ..step.clone()
        }));
    }
}

/// What the hub knows of workflows' ends: the steps whose end it has sent, by workflow,
/// and the workflows it announced, with the end time it announced.
#[derive(Debug, Default)]
struct Ends {
    finished: HashMap<Uuid, HashSet<Uuid>>,
    announced: HashMap<Uuid, i64>,
}

impl Ends {
    fn finished(&mut self, workflow: Uuid, step: Uuid) {
        if self.finished.len() >= ENDS_KEPT && !self.finished.contains_key(&workflow) {
            self.finished.clear();
        }
        self.finished.entry(workflow).or_default().insert(step);
    }

    fn seen(&self, workflow: Uuid, step: Uuid) -> bool {
        self.finished
            .get(&workflow)
            .is_some_and(|steps| steps.contains(&step))
    }

    fn announce(&mut self, workflow: Uuid, at: i64) {
        self.finished.remove(&workflow);
        if self.announced.len() >= ENDS_KEPT {
            self.announced.clear();
        }
        self.announced.insert(workflow, at);
    }
}

/// Puts the change feed in order. PostgreSQL numbers rows before their transactions commit,
/// so concurrent transactions land out of order, interleaved row by row: a row may show up
/// after rows numbered above it. Rows wait here until every number below them has been
/// seen, so each task's events go out in order; a number missing for [`HOLD`] is given up
/// (a rolled-back transaction leaves numbers nothing will use), and a row that still shows
/// up within [`GAP_WINDOW`] after that goes out late rather than never. Pure, so the
/// ordering is testable.
#[derive(Debug)]
struct Feed {
    /// Every number below this has gone out or been given up.
    next: i64,
    /// Rows read above a missing number, waiting for it.
    pending: BTreeMap<i64, EventRow>,
    /// Since when the lowest missing number has been waited for.
    waiting_since: Option<Instant>,
    /// Numbers given up, with when: a row among them that appears now goes out late.
    given_up: Vec<(i64, i64, Instant)>,
}

impl Feed {
    fn starting_after(seq: i64) -> Feed {
        Feed {
            next: seq + 1,
            pending: BTreeMap::new(),
            waiting_since: None,
            given_up: Vec::new(),
        }
    }

    /// New rows are those above this number.
    fn read_after(&self) -> i64 {
        self.pending
            .last_key_value()
            .map_or(self.next - 1, |(seq, _)| *seq)
    }

    /// Takes a row read from the feed. Answers it back when it must go out now (a late row
    /// among numbers given up); otherwise it waits for [`Feed::release`] (or was a
    /// duplicate).
    fn offer(&mut self, row: EventRow) -> Option<EventRow> {
        if row.seq >= self.next {
            self.pending.entry(row.seq).or_insert(row);
            return None;
        }
        let seq = row.seq;
        let range = self
            .given_up
            .iter()
            .position(|(first, last, _)| (*first..=*last).contains(&seq))?;
        // Split the range around it so it goes out once.
        let (first, last, at) = self.given_up.remove(range);
        if first < seq {
            self.given_up.push((first, seq - 1, at));
        }
        if seq < last {
            self.given_up.push((seq + 1, last, at));
        }
        Some(row)
    }

    /// The rows that can go out now, in order: those with no missing number below them,
    /// waiting at most [`HOLD`] for a missing one.
    fn release(&mut self, now: Instant) -> Vec<EventRow> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq == self.next {
                out.push(entry.remove());
                self.next += 1;
                self.waiting_since = None;
                continue;
            }
            let since = *self.waiting_since.get_or_insert(now);
            if now.duration_since(since) < HOLD {
                break;
            }
            self.given_up.push((self.next, seq - 1, now));
            self.next = seq;
            self.waiting_since = None;
        }
        self.given_up
            .retain(|(_, _, at)| now.duration_since(*at) <= GAP_WINDOW);
        out
    }

    /// The spans of numbers still missing: below the waiting rows, and those given up
    /// recently. Gaps closer than [`MERGE_GAPS`] make one span. At most `max`.
    fn gaps(&self, max: usize) -> Vec<(i64, i64)> {
        let mut spans: Vec<(i64, i64)> = Vec::new();
        let mut push = |gap: (i64, i64)| match spans.last_mut() {
            Some(last) if gap.0 - last.1 <= MERGE_GAPS => last.1 = last.1.max(gap.1),
            _ => spans.push(gap),
        };
        let mut ranges: Vec<(i64, i64)> = self.given_up.iter().map(|(a, b, _)| (*a, *b)).collect();
        let mut expected = self.next;
        for &seq in self.pending.keys() {
            if seq > expected {
                ranges.push((expected, seq - 1));
            }
            expected = seq + 1;
        }
        ranges.sort_unstable();
        for range in ranges {
            push(range);
        }
        spans.truncate(max);
        spans
    }
}

fn event_kind(name: &str) -> EventKind {
    match name {
        "created" => EventKind::Created,
        "queued" => EventKind::Queued,
        "started" => EventKind::Started,
        "retrying" => EventKind::Retrying,
        "succeeded" => EventKind::Succeeded,
        "failed" => EventKind::Failed,
        "cancelled" => EventKind::Cancelled,
        "fired" => EventKind::Fired,
        "waiting" => EventKind::Waiting,
        _ => EventKind::Other,
    }
}

fn to_wire(row: StoredEvent) -> TaskEvent {
    let instant = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    TaskEvent {
        seq: row.seq,
        kind: event_kind(&row.event),
        at: instant(row.at),
        task: TaskSummary {
            id: row.task_id,
            kind: row.kind,
            queue: row.queue,
            priority: row.priority,
            status: row.status,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            created_at: instant(row.created_at),
            worker: row.worker,
        },
        schedule: row.schedule,
        workflow: row.workflow.as_deref().and_then(|id| id.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> EventRow {
        EventRow {
            seq,
            events: vec![event(seq * EVENTS_PER_ROW)],
        }
    }

    fn event(seq: i64) -> StoredEvent {
        StoredEvent {
            seq,
            event: "created".into(),
            status: taskplane_api::TaskStatus::Queued,
            attempts: 0,
            worker: None,
            at: 0,
            task_id: uuid::Uuid::nil(),
            kind: "noop".into(),
            queue: "default".into(),
            priority: 0,
            max_attempts: 3,
            created_at: 0,
            schedule: None,
            workflow: None,
        }
    }

    fn seqs(rows: Vec<EventRow>) -> Vec<i64> {
        rows.into_iter().map(|r| r.seq).collect()
    }

    #[test]
    fn rows_go_out_once_and_in_order() {
        let mut feed = Feed::starting_after(0);
        let t0 = Instant::now();
        for seq in [2, 1, 3, 2] {
            assert!(feed.offer(row(seq)).is_none());
        }
        assert_eq!(seqs(feed.release(t0)), [1, 2, 3]);
        assert!(
            feed.offer(row(3)).is_none(),
            "a duplicate of a row gone out"
        );
        assert!(feed.release(t0).is_empty());
        assert_eq!(feed.read_after(), 3);
    }

    #[test]
    fn rows_above_a_missing_number_wait_for_it() {
        let mut feed = Feed::starting_after(0);
        let t0 = Instant::now();
        feed.offer(row(1));
        feed.offer(row(3)); // 2 is not committed yet
        assert_eq!(seqs(feed.release(t0)), [1]);
        assert_eq!(feed.gaps(10), [(2, 2)]);
        assert_eq!(
            feed.read_after(),
            3,
            "new rows are read above the waiting ones"
        );
        feed.offer(row(2));
        assert_eq!(seqs(feed.release(t0 + Duration::from_millis(10))), [2, 3]);
        assert!(feed.gaps(10).is_empty());
    }

    #[test]
    fn a_number_missing_too_long_is_given_up_and_its_row_still_goes_out_late() {
        let mut feed = Feed::starting_after(0);
        let t0 = Instant::now();
        feed.offer(row(2));
        assert!(feed.release(t0).is_empty());
        assert!(feed.release(t0 + HOLD / 2).is_empty(), "still waiting");
        assert_eq!(seqs(feed.release(t0 + HOLD)), [2], "1 given up");
        assert_eq!(feed.gaps(10), [(1, 1)], "but still looked for");
        let late = feed.offer(row(1)).expect("goes out late");
        assert_eq!(late.seq, 1);
        assert!(feed.offer(row(1)).is_none(), "once");
        // Past the window, a given-up number is forgotten.
        feed.offer(row(4));
        assert!(feed.release(t0 + HOLD * 2).is_empty(), "waiting for 3");
        assert_eq!(seqs(feed.release(t0 + HOLD * 3)), [4], "3 given up");
        feed.release(t0 + HOLD * 3 + GAP_WINDOW + Duration::from_secs(1));
        assert!(feed.offer(row(3)).is_none(), "too late");
    }

    #[test]
    fn close_gaps_are_read_as_one_span() {
        let mut feed = Feed::starting_after(0);
        let t0 = Instant::now();
        for seq in [1, 2, 5, 6, 9] {
            feed.offer(row(seq));
        }
        feed.release(t0);
        assert_eq!(feed.gaps(10), [(3, 8)]);
        for seq in 2000..=2600 {
            feed.offer(row(seq));
        }
        assert_eq!(feed.gaps(10), [(3, 1999)], "one seen row between: one span");
        feed.offer(row(5000));
        assert_eq!(feed.gaps(1).len(), 1);
        assert_eq!(feed.gaps(10).last(), Some(&(2601, 4999)));
    }
}
