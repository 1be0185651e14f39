//! Pure task logic: the state machine, retry backoff, submit validation, schedules' fire
//! times and workflows' graphs.
//!
//! Nothing in here does I/O or reads the clock; callers pass `now` in. That keeps every rule
//! exhaustively testable.

pub mod backoff;
pub mod gates;
pub mod kinds;
pub mod labels;
pub mod lifecycle;
pub mod schedule;
pub mod validate;
pub mod workflow;

/// How often a worker writes its heartbeat; one that misses three is taken for gone.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
