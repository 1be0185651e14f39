//! The end-to-end suites of `taskd` and `taskctl`, one module per area, in one test binary
//! (so the shared harness in `common` compiles once and the suites link once). Run one area
//! with `cargo test -p taskctl --test it live::`. The suite that restarts PostgreSQL and
//! RabbitMQ is a binary of its own (`tests/production`), so no restart hits a neighbour.

#[macro_use]
mod common;

mod bad_input;
mod contexts;
mod dashboard;
mod dependencies;
mod embedded;
mod hardening;
mod hardening_cli;
mod hardening_http;
mod hardening_shell;
mod hostile;
mod lifecycle;
mod live;
mod observability;
mod provision;
mod python_sdk;
mod queue_controls;
mod remote_workers;
mod rough_edges;
mod schedules;
mod scripting;
mod security;
mod top;
mod workflows;
