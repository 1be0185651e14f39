//! What the dashboard remembers between requests: recent queue depths (for the sparklines,
//! sampled while someone looks) and the finished counts of past minutes (for the chart, read
//! from the store once per minute rather than once per refresh).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use taskplane_api::TaskStatus;

use super::chart::Minute;
use crate::store::{Result, Store};

/// Samples kept per queue (at one per [`SAMPLE_EVERY_MS`], a quarter of an hour).
const SAMPLES: usize = 60;
/// The least time between two samples of a queue.
pub const SAMPLE_EVERY_MS: i64 = 15_000;
/// Queues are sampled in the background only this long after a page was last viewed.
pub const LOOKED_AT_WITHIN_MS: i64 = 10 * 60_000;
/// The chart's span.
pub const CHART_MINUTES: i64 = 60;

#[derive(Default)]
pub struct History {
    depths: Mutex<HashMap<String, VecDeque<(i64, u64)>>>,
    /// Past minutes' counts (their start → succeeded, failed); the minute in progress is
    /// always read afresh.
    minutes: Mutex<BTreeMap<i64, (u64, u64)>>,
    last_view: AtomicI64,
}

impl History {
    /// Notes that a page was shown (background sampling runs while pages are being looked at).
    pub fn viewed(&self, now: i64) {
        self.last_view.store(now, Ordering::Relaxed);
    }

    pub fn looked_at_since(&self, since: i64) -> bool {
        self.last_view.load(Ordering::Relaxed) >= since
    }

    /// Records queue depths seen at `now` (a queue sampled less than [`SAMPLE_EVERY_MS`] ago
    /// keeps its last sample).
    pub fn record(&self, now: i64, depths: impl IntoIterator<Item = (String, u64)>) {
        let Ok(mut all) = self.depths.lock() else {
            return;
        };
        for (queue, depth) in depths {
            let samples = all.entry(queue).or_default();
            if samples
                .back()
                .is_some_and(|(at, _)| now - at < SAMPLE_EVERY_MS)
            {
                continue;
            }
            samples.push_back((now, depth));
            while samples.len() > SAMPLES {
                samples.pop_front();
            }
        }
    }

    /// A queue's recent depths, oldest first.
    pub fn depths(&self, queue: &str) -> Vec<u64> {
        self.depths
            .lock()
            .ok()
            .and_then(|all| all.get(queue).map(|s| s.iter().map(|(_, d)| *d).collect()))
            .unwrap_or_default()
    }

    /// Finished tasks per minute over the last hour up to `now`, oldest first: past minutes
    /// from memory once read, the rest from the store.
    pub async fn minutes(&self, store: &dyn Store, now: i64) -> Result<Vec<Minute>> {
        let current = now - now.rem_euclid(60_000);
        let first = current - (CHART_MINUTES - 1) * 60_000;
        // A minute is final once the next one has passed too (a settle committing just after
        // a minute ends may carry a time inside it). Read from the oldest minute not yet
        // known (a fresh process reads the hour).
        let settled = current - 60_000;
        let read_from = match self.minutes.lock() {
            Ok(known) => (first..settled)
                .step_by(60_000)
                .find(|m| !known.contains_key(m))
                .unwrap_or(settled),
            Err(_) => first,
        };
        let rows = store.finished_by_minute(read_from).await?;
        let mut fresh: BTreeMap<i64, (u64, u64)> = (read_from..=current)
            .step_by(60_000)
            .map(|m| (m, (0, 0)))
            .collect();
        for row in rows {
            let entry = fresh.entry(row.minute).or_default();
            match row.status {
                TaskStatus::Succeeded => entry.0 += row.count,
                TaskStatus::Failed => entry.1 += row.count,
                _ => {}
            }
        }
        let Ok(mut known) = self.minutes.lock() else {
            return Ok(Vec::new());
        };
        for (&minute, &counts) in &fresh {
            if minute < settled {
                known.insert(minute, counts);
            }
        }
        known.retain(|&m, _| m >= first);
        Ok((first..=current)
            .step_by(60_000)
            .map(|at| {
                let (succeeded, failed) = if at >= settled {
                    fresh.get(&at).copied().unwrap_or_default()
                } else {
                    known.get(&at).copied().unwrap_or_default()
                };
                Minute {
                    at,
                    succeeded,
                    failed,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_one_sample_per_interval_and_the_last_sixty() {
        let history = History::default();
        history.record(0, [("q".to_owned(), 5)]);
        history.record(1_000, [("q".to_owned(), 9)]);
        assert_eq!(history.depths("q"), [5], "too soon for a second sample");
        for i in 1..=100 {
            history.record(i * SAMPLE_EVERY_MS, [("q".to_owned(), i as u64)]);
        }
        let depths = history.depths("q");
        assert_eq!(depths.len(), SAMPLES);
        assert_eq!(depths.last(), Some(&100));
        assert!(history.depths("other").is_empty());
    }
}
