//! The Taskplane daemon as a library: `main.rs` is a thin shell around [`app`], and the
//! integration tests reach the store and the domain through here.

pub mod app;
pub mod auth;
pub mod broker;
pub mod config;
pub mod domain;
pub mod events;
pub mod executors;
pub mod http;
pub mod log_gate;
pub mod metrics;
pub mod output;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod worker;
