//! Live task events. Every state change lands in the `task_events` change feed (written by
//! database triggers in the same transaction as the change, whichever process made it); each
//! API process polls the feed and fans the events out to its `/api/v1/events` subscribers.
//! Because the feed is in the database, events from every api and worker process reach every
//! api process, and a client can resume from the database with `Last-Event-ID`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use taskplane_api::{EventKind, TaskEvent, TaskSummary};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoredEvent};

/// How often the feed is read when nothing pokes the hub.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long a change-feed row may take to appear after rows numbered after it (PostgreSQL
/// assigns numbers before commit, so commits can land out of order).
const GAP_WINDOW: Duration = Duration::from_secs(3);
/// How often the window is checked for rows that appeared late.
const GAP_CHECK_EVERY: Duration = Duration::from_millis(500);
/// The most rows one read takes.
const BATCH: u32 = 2000;
/// The most unseen spans one gap check reads again.
const MAX_GAPS: usize = 64;
/// Gaps closer than this many numbers are read again as one span.
const MERGE_GAPS: i64 = 512;

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

    /// Events after `after` from the database, for a client resuming with `Last-Event-ID`.
    pub async fn replay(&self, after: i64, limit: u32) -> crate::store::Result<Vec<TaskEvent>> {
        let rows = self.store.events(after, i64::MAX, limit).await?;
        Ok(rows.into_iter().map(to_wire).collect())
    }

    /// Reads the feed until `shutdown`, broadcasting each event once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut feed = Feed::default();
        loop {
            match self.store.latest_event().await {
                Ok(seq) => {
                    feed.high = seq;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the event feed yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let mut last_gap_check = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
            let now = Instant::now();
            feed.mark(now);
            match self.store.events(feed.high, i64::MAX, BATCH).await {
                Ok(rows) => {
                    for row in rows {
                        if feed.accept(row.seq) {
                            let _ = self.tx.send(Arc::new(to_wire(row)));
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "reading the event feed failed");
                    continue;
                }
            }
            if now.duration_since(last_gap_check) >= GAP_CHECK_EVERY {
                last_gap_check = now;
                // Only the numbers not seen yet are read again: under load the window holds
                // tens of thousands of rows, and a late one can be anywhere in it.
                'spans: for (first, last) in feed.gaps(MAX_GAPS) {
                    let mut after = first - 1;
                    loop {
                        match self.store.events(after, last, BATCH).await {
                            Ok(rows) => {
                                let full = rows.len() == BATCH as usize;
                                for row in rows {
                                    after = row.seq;
                                    if feed.accept(row.seq) {
                                        let _ = self.tx.send(Arc::new(to_wire(row)));
                                    }
                                }
                                if !full {
                                    break;
                                }
                            }
                            Err(error) => {
                                tracing::debug!(%error, "re-reading the event feed failed");
                                break 'spans;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Which feed rows have been broadcast. Pure, so the late-row logic is testable.
#[derive(Debug, Default)]
struct Feed {
    /// The highest `seq` broadcast.
    high: i64,
    /// `(when, high then)` for each read in the gap window.
    marks: VecDeque<(Instant, i64)>,
    /// Rows broadcast above the window's start.
    seen: BTreeSet<i64>,
}

impl Feed {
    /// Notes a read at `now`, and forgets what has left the window.
    fn mark(&mut self, now: Instant) {
        self.marks.push_back((now, self.high));
        while self
            .marks
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > GAP_WINDOW)
        {
            self.marks.pop_front();
        }
        self.seen = self.seen.split_off(&(self.window_start() + 1));
    }

    /// The `seq` after which rows may still appear late.
    fn window_start(&self) -> i64 {
        self.marks.front().map_or(self.high, |(_, high)| *high)
    }

    /// The spans of the window (after its start, up to `high`) that hold numbers not seen
    /// yet: rows that may still commit late, or numbers no row will ever use (a rolled-back
    /// transaction). Concurrent transactions interleave their numbers row by row, so gaps
    /// closer than [`MERGE_GAPS`] are read as one span. At most `max` spans, oldest first.
    fn gaps(&self, max: usize) -> Vec<(i64, i64)> {
        let mut gaps: Vec<(i64, i64)> = Vec::new();
        let mut push = |gap: (i64, i64)| match gaps.last_mut() {
            Some(last) if gap.0 - last.1 <= MERGE_GAPS => last.1 = gap.1,
            _ => gaps.push(gap),
        };
        let mut expected = self.window_start() + 1;
        for &seq in self.seen.range(expected..) {
            if seq > expected {
                push((expected, seq - 1));
            }
            expected = seq + 1;
        }
        if expected <= self.high {
            push((expected, self.high));
        }
        gaps.truncate(max);
        gaps
    }

    /// True the first time `seq` is offered.
    fn accept(&mut self, seq: i64) -> bool {
        if seq <= self.window_start() && !self.marks.is_empty() {
            return false;
        }
        if !self.seen.insert(seq) {
            return false;
        }
        self.high = self.high.max(seq);
        true
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_accepted_once() {
        let mut feed = Feed::default();
        let t0 = Instant::now();
        feed.mark(t0);
        assert!(feed.accept(1));
        assert!(feed.accept(2));
        assert!(!feed.accept(2));
        assert_eq!(feed.high, 2);
    }

    #[test]
    fn a_late_row_inside_the_window_is_still_accepted() {
        let mut feed = Feed::default();
        let t0 = Instant::now();
        feed.mark(t0);
        assert!(feed.accept(1));
        assert!(feed.accept(3)); // 2 is not committed yet
        feed.mark(t0 + Duration::from_millis(500));
        assert_eq!(feed.window_start(), 0);
        assert!(feed.accept(2), "2 committed late but inside the window");
        assert!(!feed.accept(2));
    }

    #[test]
    fn gaps_are_the_numbers_not_seen_in_the_window() {
        let mut feed = Feed::default();
        let t0 = Instant::now();
        feed.mark(t0);
        for seq in [1, 2, 5, 6, 9] {
            assert!(feed.accept(seq));
        }
        // Close gaps (interleaved transactions) make one span.
        assert_eq!(feed.gaps(10), [(3, 8)]);
        assert!(feed.accept(3) && feed.accept(4));
        assert_eq!(feed.gaps(10), [(7, 8)]);
        // Gaps with many seen rows between them stay apart; the oldest come first.
        for seq in 2000..=2600 {
            assert!(feed.accept(seq));
        }
        assert!(feed.accept(5000));
        assert_eq!(feed.gaps(10), [(7, 1999), (2601, 4999)]);
        assert_eq!(feed.gaps(1), [(7, 1999)]);
    }

    #[test]
    fn the_window_slides() {
        let mut feed = Feed::default();
        let t0 = Instant::now();
        feed.mark(t0);
        assert!(feed.accept(5));
        feed.mark(t0 + Duration::from_secs(1));
        feed.mark(t0 + GAP_WINDOW + Duration::from_secs(2));
        // Only the last mark is left: the window starts at 5 now.
        assert_eq!(feed.window_start(), 5);
        assert!(!feed.accept(4), "too late");
        assert!(feed.accept(6));
    }
}
