//! Taskplane's wire contract: the JSON types that cross between `taskd`, `taskctl` and the
//! dashboard, and a typed HTTP client for the API.
//!
//! Only the types in this crate are serialized on the wire. The daemon converts its database
//! rows into them; the CLI and the dashboard never see anything else.

mod client;
mod controls;
mod error;
pub mod kinds;
mod lease;
mod schedule;
mod stream;
pub mod text;
mod types;
mod workflow;

pub use client::{Client, Timeouts, error_chain, new_traceparent, valid_traceparent};
pub use controls::*;
pub use error::Error;
pub use lease::*;
pub use schedule::*;
pub use stream::{EventStream, LogTail, SseMessage, SseParser};
pub use types::*;
pub use workflow::*;

/// The largest serialized payload a single task may carry (1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The most tasks a single batch request may carry.
pub const MAX_BATCH_TASKS: usize = 10_000;
