//! Recurring schedules: the bodies of `/api/v1/schedules…` and `/api/v1/cron/next`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{SubmitTask, TaskStatus};

/// The label every task a schedule made carries, with the schedule's name as its value.
pub const SCHEDULE_LABEL: &str = "schedule";
/// The label with the fire time (RFC 3339, UTC) a schedule's task was made for.
pub const FIRE_AT_LABEL: &str = "schedule.fire_at";

/// What a fire does while the previous task of the same schedule is unfinished.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Fire anyway: tasks of one schedule may run side by side.
    #[default]
    Allow,
    /// Do not fire (the fire counts as `skipped`).
    Skip,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
        }
    }
}

/// What happens to the fire times that passed while no taskd was running.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// They are skipped; the schedule goes on at its next time.
    #[default]
    None,
    /// One task runs for all of them.
    One,
    /// A task runs for each, oldest first (the latest 100 at most).
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }
}

/// A schedule as it is written: the body of `POST /api/v1/schedules` and of
/// `PUT /api/v1/schedules/{name}`, and one entry of a file for `taskctl schedule apply`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`. In a PUT it may be left out (the path names it).
    #[serde(default)]
    #[schema(example = "nightly-backup")]
    pub name: String,
    /// A cron expression: 5 fields, or 6 with seconds first; `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`; ranges, lists, steps, `L`, `W`, `#` and names of days and
    /// months. Exactly one of `cron` and `every_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "0 2 * * *")]
    pub cron: Option<String>,
    /// An interval in seconds (at least 1): fires every this many seconds from the schedule's
    /// creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub every_secs: Option<u64>,
    /// The IANA time zone a cron expression is read in; defaults to `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Absent in a PUT keeps the schedule's current state (a pause survives an apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The task each fire submits: everything a submit takes but `run_at`, `delay_ms` and
    /// `idempotency_key`.
    pub task: SubmitTask,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    pub timezone: String,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub task: SubmitTask,
    /// The next fire time (null when the expression has none left). A paused schedule keeps
    /// it and skips the times that pass while paused.
    pub next_run_at: Option<DateTime<Utc>>,
    /// When it last fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task of its last fire (or trigger).
    pub last_task_id: Option<Uuid>,
    /// That task's status now (null once it is deleted by retention).
    pub last_status: Option<TaskStatus>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The spec this schedule was written with (what `apply` compares with a file).
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            every_secs: self.every_secs,
            timezone: self.cron.as_ref().map(|_| self.timezone.clone()),
            overlap: self.overlap,
            catch_up: self.catch_up,
            paused: Some(self.paused),
            task: self.task.clone(),
        }
    }

    /// `cron 0 2 * * * (Europe/Berlin)` or `every 5m`.
    pub fn timing_text(&self) -> String {
        match (&self.cron, self.every_secs) {
            (Some(cron), _) if self.timezone == "UTC" => cron.clone(),
            (Some(cron), _) => format!("{cron} ({})", self.timezone),
            (None, Some(secs)) => format!("every {}", humanize_secs(secs)),
            (None, None) => String::new(),
        }
    }
}

/// `90` → `1m30s`, `86400` → `1d`.
pub fn humanize_secs(secs: u64) -> String {
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// The answer to `GET /api/v1/schedules`, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query parameters of `GET /api/v1/schedules`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScheduleQuery {
    /// At most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 50)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (the last name it held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "nightly-backup")]
    pub cursor: Option<String>,
}

/// Query parameters of `GET /api/v1/schedules/{name}/next`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// How many fire times (default 5, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 3)]
    pub count: Option<u32>,
}

/// Query parameters of `GET /api/v1/cron/next`.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CronQuery {
    /// The expression (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "@daily")]
    pub cron: Option<String>,
    /// Its time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// How many fire times (default 5, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 3)]
    pub count: Option<u32>,
}

/// The next fire times of a schedule or an expression.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextFires {
    /// The zone the expression is read in.
    pub timezone: String,
    /// Fire times, RFC 3339 in UTC, earliest first.
    pub fire_times: Vec<DateTime<Utc>>,
    /// The same times on the zone's wall clock, RFC 3339 with its offset.
    #[serde(default)]
    pub local_times: Vec<String>,
}
