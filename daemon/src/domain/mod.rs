//! Pure task logic: the state machine, retry backoff and submit validation.
//!
//! Nothing in here does I/O or reads the clock; callers pass `now` in. That keeps every rule
//! exhaustively testable.

pub mod backoff;
pub mod labels;
pub mod lifecycle;
pub mod validate;
