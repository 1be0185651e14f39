//! The task state machine: which event moves a task from which status to which.
//!
//! The store applies each transition as a guarded update whose `WHERE status …` clause is the
//! `from` set that [`transition`] accepts, so a duplicate or stale report changes nothing.

use taskplane_api::TaskStatus;

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its `run_at` has come (scheduled or retrying → queued).
    Due,
    /// A worker claimed it.
    Claim,
    /// The handler returned a result.
    Succeed,
    /// The handler failed and attempts remain.
    FailRetryable,
    /// The handler failed on its last attempt.
    FailFinal,
    /// A user cancelled it. A waiting task is cancelled at once; a running one keeps running
    /// until its worker stops the handler and reports [`Event::Stopped`].
    Cancel,
    /// The worker stopped a handler because of a cancel request.
    Stopped,
    /// The worker was shut down before the handler finished: back to ready, attempt not counted.
    Requeue,
    /// The worker's lease ran out (it died): ready again if attempts remain, cancelled if a
    /// cancel was pending.
    LeaseExpired {
        attempts_left: bool,
        cancel_requested: bool,
    },
    /// The worker exited without a drain (a second signal) and handed the task back:
    /// ready again without counting the attempt, or cancelled if a cancel was pending.
    Released { cancel_requested: bool },
    /// A user asked for another round of a failed or cancelled task: ready again, or
    /// waiting again while a task it depends on has not succeeded.
    Retry { parents_pending: bool },
    /// The last task it depends on succeeded.
    ParentsSucceeded,
    /// A task it depends on failed or was cancelled (`dependency_failed`).
    ParentFailed,
}

/// The event is not allowed in the task's current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot take {event:?}")]
pub struct IllegalTransition {
    pub from: TaskStatus,
    pub event: Event,
}

/// The status a task reaches when `event` happens to it in status `from`.
pub fn transition(from: TaskStatus, event: Event) -> Result<TaskStatus, IllegalTransition> {
    use TaskStatus::*;
    let to = match (from, event) {
        (Scheduled | Retrying, Event::Due) => Queued,
        (Queued, Event::Claim) => Running,
        (Running, Event::Succeed) => Succeeded,
        (Running, Event::FailRetryable) => Retrying,
        (Running, Event::FailFinal) => Failed,
        (Waiting | Scheduled | Queued | Retrying, Event::Cancel) => Cancelled,
        (Waiting, Event::ParentsSucceeded) => Queued,
        (Waiting, Event::ParentFailed) => Cancelled,
        (Running, Event::Cancel) => Running,
        (Running, Event::Stopped) => Cancelled,
        (Running, Event::Requeue) => Queued,
        (
            Running,
            Event::LeaseExpired {
                cancel_requested: true,
                ..
            },
        ) => Cancelled,
        (
            Running,
            Event::LeaseExpired {
                attempts_left: true,
                ..
            },
        ) => Queued,
        (
            Running,
            Event::LeaseExpired {
                attempts_left: false,
                ..
            },
        ) => Failed,
        (
            Running,
            Event::Released {
                cancel_requested: true,
            },
        ) => Cancelled,
        (Running, Event::Released { .. }) => Queued,
        (
            Failed | Cancelled,
            Event::Retry {
                parents_pending: true,
            },
        ) => Waiting,
        (Failed | Cancelled, Event::Retry { .. }) => Queued,
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

/// How one attempt of a handler ended, as the worker saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The handler's result, as JSON text.
    Succeeded(String),
    /// The handler failed (including a timeout); the message becomes `last_error`.
    Failed(String),
    /// The task cannot run as it is (a workflow step's payload names a field an earlier
    /// step's result lacks): it fails at once, since another attempt would fail the same way.
    Rejected(String),
    /// Stopped because a user cancelled the task.
    Cancelled,
    /// Stopped because this worker is shutting down.
    Interrupted,
}

/// What the store must write after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Succeeded { result: String },
    Retrying { error: String, run_at_ms: i64 },
    Failed { error: String },
    Cancelled,
    Requeued,
}

impl Settlement {
    /// The status the task ends the transition in.
    pub fn status(&self) -> TaskStatus {
        match self {
            Settlement::Succeeded { .. } => TaskStatus::Succeeded,
            Settlement::Retrying { .. } => TaskStatus::Retrying,
            Settlement::Failed { .. } => TaskStatus::Failed,
            Settlement::Cancelled => TaskStatus::Cancelled,
            Settlement::Requeued => TaskStatus::Queued,
        }
    }
}

/// Decides where a task goes after attempt number `attempt` (1-based) of `max_attempts`.
/// `retry_delay_ms` is the backoff to wait before the next attempt, if there is one.
pub fn settle(
    outcome: AttemptOutcome,
    attempt: u32,
    max_attempts: u32,
    now_ms: i64,
    retry_delay_ms: u64,
) -> Settlement {
    match outcome {
        AttemptOutcome::Succeeded(result) => Settlement::Succeeded { result },
        AttemptOutcome::Cancelled => Settlement::Cancelled,
        AttemptOutcome::Interrupted => Settlement::Requeued,
        AttemptOutcome::Failed(error) if attempt < max_attempts => Settlement::Retrying {
            error,
            run_at_ms: now_ms.saturating_add(i64::try_from(retry_delay_ms).unwrap_or(i64::MAX)),
        },
        AttemptOutcome::Failed(error) | AttemptOutcome::Rejected(error) => {
            Settlement::Failed { error }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    const EVENTS: [Event; 18] = [
        Event::Due,
        Event::Claim,
        Event::Succeed,
        Event::FailRetryable,
        Event::FailFinal,
        Event::Cancel,
        Event::Stopped,
        Event::Requeue,
        Event::LeaseExpired {
            attempts_left: true,
            cancel_requested: false,
        },
        Event::LeaseExpired {
            attempts_left: false,
            cancel_requested: false,
        },
        Event::LeaseExpired {
            attempts_left: true,
            cancel_requested: true,
        },
        Event::LeaseExpired {
            attempts_left: false,
            cancel_requested: true,
        },
        Event::Released {
            cancel_requested: false,
        },
        Event::Released {
            cancel_requested: true,
        },
        Event::Retry {
            parents_pending: false,
        },
        Event::Retry {
            parents_pending: true,
        },
        Event::ParentsSucceeded,
        Event::ParentFailed,
    ];

    /// The whole table, written out: every (status, event) pair that is allowed and where it
    /// leads. Everything not listed must be refused.
    const ALLOWED: &[(TaskStatus, Event, TaskStatus)] = &[
        (Scheduled, Event::Due, Queued),
        (Retrying, Event::Due, Queued),
        (Queued, Event::Claim, Running),
        (Running, Event::Succeed, Succeeded),
        (Running, Event::FailRetryable, Retrying),
        (Running, Event::FailFinal, Failed),
        (Scheduled, Event::Cancel, Cancelled),
        (Queued, Event::Cancel, Cancelled),
        (Retrying, Event::Cancel, Cancelled),
        (Running, Event::Cancel, Running),
        (Running, Event::Stopped, Cancelled),
        (Running, Event::Requeue, Queued),
        (
            Running,
            Event::LeaseExpired {
                attempts_left: true,
                cancel_requested: false,
            },
            Queued,
        ),
        (
            Running,
            Event::LeaseExpired {
                attempts_left: false,
                cancel_requested: false,
            },
            Failed,
        ),
        (
            Running,
            Event::LeaseExpired {
                attempts_left: true,
                cancel_requested: true,
            },
            Cancelled,
        ),
        (
            Running,
            Event::LeaseExpired {
                attempts_left: false,
                cancel_requested: true,
            },
            Cancelled,
        ),
        (
            Running,
            Event::Released {
                cancel_requested: false,
            },
            Queued,
        ),
        (
            Running,
            Event::Released {
                cancel_requested: true,
            },
            Cancelled,
        ),
        (Waiting, Event::ParentsSucceeded, Queued),
        (Waiting, Event::ParentFailed, Cancelled),
        (Waiting, Event::Cancel, Cancelled),
        (
            Failed,
            Event::Retry {
                parents_pending: false,
            },
            Queued,
        ),
        (
            Cancelled,
            Event::Retry {
                parents_pending: false,
            },
            Queued,
        ),
        (
            Failed,
            Event::Retry {
                parents_pending: true,
            },
            Waiting,
        ),
        (
            Cancelled,
            Event::Retry {
                parents_pending: true,
            },
            Waiting,
        ),
    ];

    #[test]
    fn every_status_event_pair_matches_the_table() {
        for from in TaskStatus::ALL {
            for event in EVENTS {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event:?}"),
                    (Err(err), None) => {
                        assert_eq!(err.from, from);
                        assert!(err.to_string().contains(from.as_str()));
                    }
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn terminal_statuses_only_leave_by_manual_retry() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in EVENTS {
                if let Ok(to) = transition(from, event) {
                    let Event::Retry { parents_pending } = event else {
                        panic!("{from} left by {event:?}");
                    };
                    assert_eq!(to, if parents_pending { Waiting } else { Queued });
                }
            }
        }
    }

    #[test]
    fn failure_retries_until_the_last_attempt() {
        let failed = || AttemptOutcome::Failed("exit status 1".into());
        assert_eq!(
            settle(failed(), 1, 3, 1_000, 500),
            Settlement::Retrying {
                error: "exit status 1".into(),
                run_at_ms: 1_500
            }
        );
        assert_eq!(
            settle(failed(), 2, 3, 1_000, 500).status(),
            TaskStatus::Retrying
        );
        assert_eq!(
            settle(failed(), 3, 3, 1_000, 500),
            Settlement::Failed {
                error: "exit status 1".into()
            }
        );
        assert_eq!(settle(failed(), 1, 1, 0, 0).status(), TaskStatus::Failed);
    }

    #[test]
    fn a_rejected_attempt_fails_with_attempts_left() {
        assert_eq!(
            settle(AttemptOutcome::Rejected("no field".into()), 1, 3, 0, 0),
            Settlement::Failed {
                error: "no field".into()
            }
        );
    }

    #[test]
    fn other_outcomes_settle_without_counting() {
        assert_eq!(
            settle(AttemptOutcome::Succeeded("{}".into()), 3, 3, 0, 0),
            Settlement::Succeeded {
                result: "{}".into()
            }
        );
        assert_eq!(
            settle(AttemptOutcome::Cancelled, 1, 3, 0, 0),
            Settlement::Cancelled
        );
        assert_eq!(
            settle(AttemptOutcome::Interrupted, 3, 3, 0, 0),
            Settlement::Requeued
        );
    }

    #[test]
    fn settlement_statuses_agree_with_the_state_machine() {
        let cases = [
            (Settlement::Succeeded { result: "1".into() }, Event::Succeed),
            (
                Settlement::Retrying {
                    error: String::new(),
                    run_at_ms: 0,
                },
                Event::FailRetryable,
            ),
            (
                Settlement::Failed {
                    error: String::new(),
                },
                Event::FailFinal,
            ),
            (Settlement::Cancelled, Event::Stopped),
            (Settlement::Requeued, Event::Requeue),
        ];
        for (settlement, event) in cases {
            assert_eq!(Ok(settlement.status()), transition(Running, event));
        }
    }
}
