//! What a process knows of the queue controls and keyed tasks, so that its claims run the
//! gated claim ([`Controls::claim_gated`]) only when there may be something for it.
//!
//! The claims of ungated work pass over gated queues and keyed tasks in their own
//! statements, so this knowledge may be late without breaking a limit: it only decides
//! whether to look. It is read again at most a second after the last read, and at once
//! after a change made in this process (a queue's settings, a keyed submit).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::log_gate::worth_logging;
use crate::store::{ClaimedTask, GateState, Store};
use crate::util::now_ms;

/// How old what a process knows of the gates may be.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// The shortest pause between two gated claims of one taker after one that found nothing
/// (a claim that found something is followed at once: there may be more).
const CALM: Duration = Duration::from_millis(25);
/// The longest a taker waits for a rate's next token before it looks again (other gated
/// queues and keyed tasks may have become ready meanwhile).
const RATE_LOOK: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct Gates {
    known: Mutex<Option<(Instant, Arc<GateState>)>>,
    wake: Notify,
    /// Counts the changes made here, so that a taker waiting for its next look looks at once.
    generation: std::sync::atomic::AtomicU64,
}

impl Gates {
    /// Something changed here: read the gates again before the next claim, and wake the
    /// workers waiting for work.
    pub fn touch(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.wake.notify_waiters();
    }

    /// Fires on [`Gates::touch`].
    pub async fn touched(&self) {
        self.wake.notified().await;
    }

    /// Whether a gated claim over `queues` may find something: one of them is gated and
    /// open (not paused), or some ready task has a concurrency key.
    pub async fn worth_a_look(&self, store: &dyn Store, queues: &[String]) -> bool {
        let Some(state) = self.current(store).await else {
            return false;
        };
        state.keyed
            || queues
                .iter()
                .any(|queue| state.gated.get(queue).is_some_and(|paused| !paused))
    }

    /// Whether `queue` is gated, as far as this process knows (without reading again).
    pub fn holds(&self, queue: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(_, state)| state.gated.contains_key(queue))
    }

    /// What this process knows of the gates, read again when it is older than a second;
    /// None when it cannot be read. Shared, not copied: every submit with RabbitMQ asks.
    pub async fn current(&self, store: &dyn Store) -> Option<Arc<GateState>> {
        let cached = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, state)| state.clone());
        match cached {
            Some(state) => Some(state),
            None => match store.gate_state().await {
                Ok(state) => {
                    let state = Arc::new(state);
                    *self.known.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), state.clone()));
                    Some(state)
                }
                Err(error) => {
                    if worth_logging("gates", &error) {
                        tracing::warn!(%error, "reading the queue controls failed; will retry");
                    }
                    None
                }
            },
        }
    }
}

/// One claimant's gated claims: when it may look again.
#[derive(Debug)]
pub struct GatedTaker {
    next: Instant,
    /// The [`Gates`] generation its `next` was set under.
    seen: u64,
    /// When a rate-limited queue it looked at has its next start to give.
    rate_wake: Option<Instant>,
}

impl Default for GatedTaker {
    fn default() -> Self {
        GatedTaker {
            next: Instant::now(),
            seen: 0,
            rate_wake: None,
        }
    }
}

impl GatedTaker {
    /// Runs the gated claim for up to `limit` tasks when it may find something and it is
    /// time; failures are logged and answer nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn take(
        &mut self,
        gates: &Gates,
        store: &dyn Store,
        worker: &str,
        queues: &[String],
        kinds: Option<&[String]>,
        limit: u32,
        lease: Duration,
    ) -> Vec<ClaimedTask> {
        let generation = gates.generation.load(std::sync::atomic::Ordering::Acquire);
        if generation != self.seen {
            // Something changed here (a keyed submit, a queue's settings): look at once.
            self.seen = generation;
            self.next = Instant::now();
        }
        if limit == 0 || Instant::now() < self.next {
            return Vec::new();
        }
        if !gates.worth_a_look(store, queues).await {
            return Vec::new();
        }
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        match store
            .claim_gated(worker, queues, kinds, limit, now, until)
            .await
        {
            Ok(claim) => {
                self.rate_wake = claim
                    .wake_at
                    .map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64));
                let calm = if claim.tasks.is_empty() {
                    Instant::now() + CALM
                } else {
                    Instant::now()
                };
                // A rate's next start comes at its own time, and no earlier look helps.
                self.next = match claim.wake_at {
                    Some(at) if claim.tasks.len() < limit as usize => {
                        let wait = Duration::from_millis((at - now).max(0) as u64);
                        (Instant::now() + wait.min(RATE_LOOK)).max(calm)
                    }
                    _ => calm,
                };
                claim.tasks
            }
            Err(error) => {
                if worth_logging("gated claim", &error) {
                    tracing::warn!(%error, "the gated claim failed; will retry");
                }
                self.next = Instant::now() + Duration::from_millis(500);
                Vec::new()
            }
        }
    }

    /// When a rate-limited queue it saw has its next start (for a loop that sleeps until
    /// then).
    pub fn rate_wake(&self) -> Option<Instant> {
        self.rate_wake
    }
}
