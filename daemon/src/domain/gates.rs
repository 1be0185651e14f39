//! Queue controls and concurrency keys: which ready tasks a gated claim may start.
//!
//! A queue is *gated* while it is paused, has a running limit or has a rate; a task is
//! *keyed* when it carries a concurrency key. Neither is taken by the claims of ungated work
//! (the statements pass over them); the gated claim reads the gates, what is running and the
//! ready candidates in one transaction, one process at a time, and this module decides which
//! candidates start.

use std::collections::HashMap;

/// A gated queue's settings and its rate's token bucket, as the store holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub queue: String,
    pub paused: bool,
    pub max_running: Option<u32>,
    /// Starts per 1000 seconds (the rate per second times 1000).
    pub rate_milli: Option<i64>,
    /// The bucket, in thousandths of a start, as of `refilled_at`.
    pub tokens_milli: i64,
    pub refilled_at: i64,
    pub updated_at: i64,
}

/// One whole start, in the bucket's unit.
pub const TOKEN: i64 = 1000;

/// The most a bucket of `rate_milli` holds: a second's worth (the burst), at least one start.
pub fn capacity(rate_milli: i64) -> i64 {
    rate_milli.max(TOKEN)
}

impl Gate {
    /// The bucket at `now`: refilled at the rate since `refilled_at`, up to its capacity.
    pub fn tokens_at(&self, now: i64) -> i64 {
        let Some(rate) = self.rate_milli else {
            return 0;
        };
        let elapsed = (now - self.refilled_at).max(0);
        // rate_milli thousandths of a start per second = rate_milli thousandths per 1000 ms.
        let refill = elapsed.saturating_mul(rate) / 1000;
        self.tokens_milli.saturating_add(refill).min(capacity(rate))
    }

    /// How many more of this queue's tasks may start now, with `running` of them running.
    fn allowance(&self, running: u64, now: i64) -> u64 {
        if self.paused {
            return 0;
        }
        let by_limit = self
            .max_running
            .map_or(u64::MAX, |max| u64::from(max).saturating_sub(running));
        let by_rate = match self.rate_milli {
            Some(_) => (self.tokens_at(now) / TOKEN).max(0) as u64,
            None => u64::MAX,
        };
        by_limit.min(by_rate)
    }

    /// When the bucket next holds a whole start, if it has a rate.
    fn next_token_at(&self, now: i64) -> Option<i64> {
        let rate = self.rate_milli?;
        let missing = TOKEN - self.tokens_at(now) % TOKEN;
        // ceil(missing / rate seconds), in ms.
        Some(now + (missing * 1000 + rate - 1) / rate.max(1))
    }
}

/// A ready task the gated claim may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub key: Option<String>,
    pub key_limit: u32,
    pub priority: i32,
    pub run_at: i64,
}

/// What runs now: by queue, and by concurrency key (across queues).
#[derive(Debug, Default, Clone)]
pub struct Running {
    pub by_queue: HashMap<String, u64>,
    pub by_key: HashMap<String, u64>,
    /// The smallest limit among the running tasks of each key: a task that allows more
    /// does not start beside one that allows fewer.
    pub key_limit: HashMap<String, u32>,
}

/// The gated claim's decision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pick {
    /// The candidates to start, most urgent first.
    pub ids: Vec<String>,
    /// How many starts each rate-limited queue spent, with its bucket after them.
    pub spent: Vec<(String, i64)>,
    /// When a rate-limited queue with ready tasks next has a start to give (the claim
    /// should look again then).
    pub wake_at: Option<i64>,
}

/// Picks up to `limit` of `candidates` (any order) to start at `now`: the most urgent first
/// (priority, then ready time, then id), never more of a gated queue than its allowance,
/// nor more of a concurrency key than its limit allows beside those running. A paused
/// queue's tasks never start.
pub fn pick(
    gates: &HashMap<String, Gate>,
    running: &Running,
    mut candidates: Vec<Candidate>,
    limit: usize,
    now: i64,
) -> Pick {
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    candidates.dedup_by(|a, b| a.id == b.id);
    let mut allowance: HashMap<&str, u64> = HashMap::new();
    let mut taken: HashMap<&str, u64> = HashMap::new();
    let mut by_key: HashMap<&str, u64> = HashMap::new();
    let mut key_limit: HashMap<&str, u32> = HashMap::new();
    let mut starved: Vec<&Gate> = Vec::new();
    let mut ids = Vec::new();
    for candidate in &candidates {
        if ids.len() >= limit {
            break;
        }
        let gate = gates.get(&candidate.queue);
        if let Some(gate) = gate {
            let left = allowance.entry(&gate.queue).or_insert_with(|| {
                let running = running.by_queue.get(&gate.queue).copied().unwrap_or(0);
                gate.allowance(running, now)
            });
            if *left == 0 {
                if !gate.paused && !starved.iter().any(|g| g.queue == gate.queue) {
                    starved.push(gate);
                }
                continue;
            }
        }
        if let Some(key) = &candidate.key {
            let running_now = running.by_key.get(key).copied().unwrap_or(0);
            let starting = by_key.get(key.as_str()).copied().unwrap_or(0);
            let limit = [
                Some(candidate.key_limit.max(1)),
                running.key_limit.get(key).copied(),
                key_limit.get(key.as_str()).copied(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(1);
            if running_now + starting >= u64::from(limit) {
                continue;
            }
            *by_key.entry(key).or_insert(0) += 1;
            let least = key_limit.entry(key).or_insert(u32::MAX);
            *least = (*least).min(candidate.key_limit.max(1));
        }
        if let Some(gate) = gate {
            if let Some(left) = allowance.get_mut(gate.queue.as_str()) {
                *left -= 1;
            }
            *taken.entry(&gate.queue).or_insert(0) += 1;
        }
        ids.push(candidate.id.clone());
    }
    let spent = taken
        .iter()
        .filter_map(|(queue, count)| {
            let gate = gates.get(*queue)?;
            gate.rate_milli?;
            Some((
                (*queue).to_owned(),
                gate.tokens_at(now) - (*count as i64) * TOKEN,
            ))
        })
        .collect();
    // A queue held back by its rate (not by its running limit) has a start to give later.
    let wake_at = starved
        .iter()
        .filter(|gate| {
            let running = running.by_queue.get(&gate.queue).copied().unwrap_or(0);
            let taken = taken.get(gate.queue.as_str()).copied().unwrap_or(0);
            gate.max_running
                .is_none_or(|max| running + taken < u64::from(max))
        })
        .filter_map(|gate| gate.next_token_at(now))
        .min();
    Pick {
        ids,
        spent,
        wake_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(queue: &str) -> Gate {
        Gate {
            queue: queue.into(),
            paused: false,
            max_running: None,
            rate_milli: None,
            tokens_milli: 0,
            refilled_at: 0,
            updated_at: 0,
        }
    }

    fn task(id: &str, queue: &str, key: Option<&str>, priority: i32) -> Candidate {
        Candidate {
            id: id.into(),
            queue: queue.into(),
            kind: "noop".into(),
            key: key.map(str::to_owned),
            key_limit: 1,
            priority,
            run_at: 0,
        }
    }

    fn gates(list: Vec<Gate>) -> HashMap<String, Gate> {
        list.into_iter().map(|g| (g.queue.clone(), g)).collect()
    }

    #[test]
    fn a_running_limit_counts_what_runs() {
        let limited = Gate {
            max_running: Some(2),
            ..gate("q")
        };
        let candidates = (0..5)
            .map(|i| task(&format!("t{i}"), "q", None, 0))
            .collect();
        let mut running = Running::default();
        running.by_queue.insert("q".into(), 1);
        let pick = pick(&gates(vec![limited]), &running, candidates, 10, 0);
        assert_eq!(pick.ids, vec!["t0"]);
        assert_eq!(pick.wake_at, None, "held by its limit, not its rate");
    }

    #[test]
    fn a_paused_queue_starts_nothing() {
        let paused = Gate {
            paused: true,
            ..gate("q")
        };
        let candidates = vec![task("a", "q", None, 0), task("b", "other", None, 0)];
        let pick = pick(&gates(vec![paused]), &Running::default(), candidates, 10, 0);
        assert_eq!(pick.ids, vec!["b"]);
    }

    #[test]
    fn a_rate_spends_its_bucket_and_says_when_the_next_start_comes() {
        let rated = Gate {
            rate_milli: Some(5000),
            tokens_milli: 5000,
            refilled_at: 1_000,
            ..gate("q")
        };
        let candidates = (0..8)
            .map(|i| task(&format!("t{i}"), "q", None, 0))
            .collect();
        let first = pick(
            &gates(vec![rated.clone()]),
            &Running::default(),
            candidates,
            10,
            1_000,
        );
        assert_eq!(first.ids.len(), 5, "the burst");
        assert_eq!(first.spent, vec![("q".to_owned(), 0)]);
        assert_eq!(first.wake_at, Some(1_200), "a start every 200 ms at 5/s");
        // 300 ms later: one and a half starts refilled.
        let later = Gate {
            tokens_milli: 0,
            ..rated
        };
        assert_eq!(later.tokens_at(1_300), 1_500);
        let candidates = (0..3)
            .map(|i| task(&format!("u{i}"), "q", None, 0))
            .collect();
        let second = pick(
            &gates(vec![later]),
            &Running::default(),
            candidates,
            10,
            1_300,
        );
        assert_eq!(second.ids.len(), 1);
        assert_eq!(second.spent, vec![("q".to_owned(), 500)]);
        assert_eq!(second.wake_at, Some(1_400));
    }

    #[test]
    fn a_bucket_never_holds_more_than_a_second() {
        let rated = Gate {
            rate_milli: Some(2000),
            tokens_milli: 0,
            refilled_at: 0,
            ..gate("q")
        };
        assert_eq!(rated.tokens_at(60_000), 2000);
        let slow = Gate {
            rate_milli: Some(500),
            ..rated
        };
        assert_eq!(slow.tokens_at(60_000), TOKEN, "at least one start");
        assert_eq!(slow.tokens_at(1_000), 500);
    }

    #[test]
    fn a_key_never_runs_past_its_limit_across_queues() {
        let mut running = Running::default();
        running.by_key.insert("host=web1".into(), 1);
        let candidates = vec![
            task("a", "q1", Some("host=web1"), 5),
            task("b", "q2", Some("host=web2"), 4),
            task("c", "q2", Some("host=web2"), 3),
            task("d", "q1", None, 0),
        ];
        let pick = pick(&HashMap::new(), &running, candidates, 10, 0);
        assert_eq!(pick.ids, vec!["b", "d"]);
        // A task that allows 5 does not start beside a running one that allows 1.
        let mut running = Running::default();
        running.by_key.insert("salt:web1".into(), 1);
        running.key_limit.insert("salt:web1".into(), 1);
        let mut wide = task("w", "q1", Some("salt:web1"), 0);
        wide.key_limit = 5;
        assert!(
            super::pick(&HashMap::new(), &running, vec![wide], 10, 0)
                .ids
                .is_empty()
        );
        let mut two = task("e", "q1", Some("k"), 0);
        two.key_limit = 2;
        let mut also = two.clone();
        also.id = "f".into();
        let mut third = two.clone();
        third.id = "g".into();
        let pick = super::pick(
            &HashMap::new(),
            &Running::default(),
            vec![two, also, third],
            10,
            0,
        );
        assert_eq!(pick.ids, vec!["e", "f"]);
    }

    #[test]
    fn the_most_urgent_start_first_and_the_limit_holds() {
        let candidates = vec![
            task("low", "q", None, 0),
            task("high", "q", None, 9),
            task("mid", "q", None, 5),
        ];
        let pick = pick(&HashMap::new(), &Running::default(), candidates, 2, 0);
        assert_eq!(pick.ids, vec!["high", "mid"]);
    }
}
