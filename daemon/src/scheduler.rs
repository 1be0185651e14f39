//! The scheduler: in every taskd process, a loop that submits the tasks of the schedules
//! whose time has come. No process leads: each fire is one transaction guarded by the
//! schedule's `next_run_at` (see [`crate::store::Fire`]), so however many processes see a
//! fire time come, one makes its task and the others change nothing. Every task also
//! carries the idempotency key `schedule:NAME:FIRE_MS`, so a fire time can never make two.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use taskplane_api::{FIRE_AT_LABEL, Overlap, SCHEDULE_LABEL, ScheduleSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::Broker;
use crate::domain::schedule::{
    self, MAX_EVERY_SECS, MIN_EVERY_SECS, Plan, Timing, parse_cron, parse_zone,
};
use crate::domain::validate::{self, Kinds, NewTask, ValidationError};
use crate::events::EventHub;
use crate::log_gate::LogGate;
use crate::metrics::Metrics;
use crate::store::{Fire, ScheduleRow, Store, StoreError, StoredTask};
use crate::util::now_ms;

/// The longest a round waits: a schedule another process created or changed is seen this
/// soon.
const ROUND_AT_MOST: Duration = Duration::from_secs(1);
/// The most schedules one round fires.
const ROUND_SCHEDULES: u32 = 100;

/// Why a schedule was refused. `code` is the API's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
}

impl SpecError {
    fn invalid(field: &str, message: impl std::fmt::Display) -> SpecError {
        SpecError {
            code: "invalid_request",
            message: format!("{field}: {message}"),
        }
    }
}

pub use crate::domain::validate::valid_name;

/// The answer for a name that is not one.
pub fn name_error(field: &str, name: &str) -> SpecError {
    SpecError {
        code: "invalid_name",
        message: format!(
            "{field}: '{name}' is not a schedule name: 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
        ),
    }
}

/// A schedule's spec, checked, with its timing.
#[derive(Debug, Clone)]
pub struct Checked {
    /// As stored: the name and the pause state are columns of their own, and a cron
    /// expression's zone is always written out.
    pub spec: ScheduleSpec,
    pub timing: Timing,
}

impl Checked {
    /// The spec as the store keeps it.
    pub fn spec_json(&self) -> String {
        serde_json::to_string(&self.spec).unwrap_or_default()
    }

    /// The first fire time after `now`.
    pub fn first_after(&self, now: i64) -> Option<i64> {
        self.timing.next_after(now)
    }

    /// Whether `other` fires at other times than this.
    pub fn retimes(&self, other: &ScheduleSpec) -> bool {
        self.spec.cron != other.cron
            || self.spec.every_secs != other.every_secs
            || self.spec.timezone != other.timezone
    }
}

/// The timing a stored spec describes.
pub fn timing(spec: &ScheduleSpec) -> Result<Timing, SpecError> {
    match (&spec.cron, spec.every_secs) {
        (Some(cron), None) => {
            let zone = spec.timezone.as_deref().unwrap_or("UTC");
            Ok(Timing::Cron {
                cron: Box::new(parse_cron(cron).map_err(|e| SpecError::invalid("cron", e))?),
                zone: parse_zone(zone).map_err(|e| SpecError::invalid("timezone", e))?,
            })
        }
        (None, Some(secs)) => {
            if !(MIN_EVERY_SECS..=MAX_EVERY_SECS).contains(&secs) {
                return Err(SpecError::invalid(
                    "every_secs",
                    format!("must be {MIN_EVERY_SECS} to {MAX_EVERY_SECS} seconds, not {secs}"),
                ));
            }
            if spec.timezone.is_some() {
                return Err(SpecError::invalid(
                    "timezone",
                    "only a cron expression is read in a time zone; an interval has none",
                ));
            }
            Ok(Timing::Every {
                every_ms: secs as i64 * 1000,
            })
        }
        (Some(_), Some(_)) => Err(SpecError::invalid(
            "cron",
            "give either cron or every_secs, not both",
        )),
        (None, None) => Err(SpecError::invalid(
            "cron",
            "a schedule needs cron (an expression) or every_secs (an interval)",
        )),
    }
}

/// Checks a schedule's spec as the API receives it: its timing, and its task as a submit
/// of it would be checked (with the labels a fire adds).
pub fn check(mut spec: ScheduleSpec, kinds: &Kinds, now: i64) -> Result<Checked, SpecError> {
    if !valid_name(&spec.name) {
        return Err(name_error("name", &spec.name));
    }
    if spec.cron.is_some() && spec.timezone.is_none() {
        spec.timezone = Some("UTC".to_owned());
    }
    let timing = timing(&spec)?;
    for (field, set) in [
        ("run_at", spec.task.run_at.is_some()),
        ("delay_ms", spec.task.delay_ms.is_some()),
        ("idempotency_key", spec.task.idempotency_key.is_some()),
    ] {
        if set {
            return Err(SpecError::invalid(
                &format!("task.{field}"),
                "a schedule's task runs at its fire time, with a key of its own; leave it out",
            ));
        }
    }
    let mut probe = spec.task.clone();
    add_fire_labels(&mut probe, &spec.name, now);
    validate::submit(probe, kinds, Uuid::nil(), now).map_err(|e| task_error(&e))?;
    if timing.next_after(now).is_none() {
        return Err(SpecError::invalid(
            "cron",
            format!(
                "'{}' never matches a date to come",
                spec.cron.as_deref().unwrap_or_default()
            ),
        ));
    }
    spec.name = String::new();
    spec.paused = None;
    Ok(Checked { spec, timing })
}

fn task_error(error: &ValidationError) -> SpecError {
    SpecError {
        code: error.code,
        message: format!("task.{}", error.message),
    }
}

fn add_fire_labels(task: &mut taskplane_api::SubmitTask, name: &str, fire_at: i64) {
    task.labels
        .insert(SCHEDULE_LABEL.to_owned(), name.to_owned());
    task.labels
        .insert(FIRE_AT_LABEL.to_owned(), rfc3339(fire_at));
}

pub fn rfc3339(at: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The spec a stored row holds, and its timing.
pub fn stored(row: &ScheduleRow) -> Result<(ScheduleSpec, Timing), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("schedule {}", row.name),
        reason,
    };
    let spec: ScheduleSpec = serde_json::from_str(&row.spec).map_err(|e| corrupt(e.to_string()))?;
    let timing = timing(&spec).map_err(|e| corrupt(e.message))?;
    Ok((spec, timing))
}

/// What a scheduler round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// The earliest fire time of any schedule that is not paused, after the round.
    pub next: Option<i64>,
    /// The round fired as many schedules as one round does: more may be due.
    pub more: bool,
}

/// What became of a manual trigger.
pub enum Triggered {
    Submitted(Box<StoredTask>),
    NotFound,
    /// The template no longer passes this process's checks (a kind disabled here).
    Refused(ValidationError),
}

/// Fires schedules: the loop every process runs, and the manual trigger.
pub struct Scheduler {
    pub store: Arc<dyn Store>,
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<EventHub>,
    pub kinds: Arc<Kinds>,
    /// Wakes the loop when this process changed a schedule.
    pub wake: Notify,
    failed_line: LogGate,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
        events: Arc<EventHub>,
        kinds: Arc<Kinds>,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            store,
            broker,
            metrics,
            events,
            kinds,
            wake: Notify::new(),
            failed_line: LogGate::new(60_000),
        })
    }

    /// Fires due schedules until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = match self.round(now_ms()).await {
                Ok(Round { more: true, .. }) => Duration::ZERO,
                Ok(Round {
                    next: Some(next), ..
                }) => {
                    // A schedule still due after the round is one this process cannot fire
                    // (its task is refused here): the next round is soon enough.
                    let until = u64::try_from(next - now_ms()).unwrap_or(0);
                    match Duration::from_millis(until) {
                        Duration::ZERO => ROUND_AT_MOST,
                        until => until.min(ROUND_AT_MOST),
                    }
                }
                Ok(Round { next: None, .. }) => ROUND_AT_MOST,
                Err(error) => {
                    if self.failed_line.open() {
                        tracing::warn!(%error, "a scheduler round failed; the next one retries");
                    }
                    ROUND_AT_MOST
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One round: fires what is due at `now`.
    pub async fn round(&self, now: i64) -> Result<Round, StoreError> {
        let due = self.store.due_schedules(now, ROUND_SCHEDULES).await?;
        let more = due.len() == ROUND_SCHEDULES as usize;
        for row in due {
            let name = row.name.clone();
            if let Err(error) = self.fire_due(row, now).await {
                tracing::warn!(schedule = %name, %error, "firing a schedule failed; the next round retries");
            }
        }
        Ok(Round {
            next: self.store.next_due().await?,
            more,
        })
    }

    /// Fires one due schedule as its plan says.
    async fn fire_due(&self, row: ScheduleRow, now: i64) -> Result<(), StoreError> {
        let (spec, timing) = stored(&row)?;
        let Some(expect) = row.next_run_at else {
            return Ok(());
        };
        let Plan {
            mut fire,
            missed,
            next,
        } = schedule::plan(&timing, spec.catch_up, expect, now);
        let mut skipped = 0;
        if spec.overlap == Overlap::Skip {
            // At most one at a time: of several due, the latest; none while the last runs.
            let unfinished = row.last_status.is_some_and(|s| !s.is_terminal());
            let keep = usize::from(!unfinished && !fire.is_empty());
            skipped = fire.len() - keep;
            fire.drain(..fire.len() - keep);
        }
        self.broker.know_gates(self.store.as_ref()).await;
        let mark = self.broker.submit_mark();
        let mut tasks = Vec::with_capacity(fire.len());
        for at in &fire {
            match self.task_for(&spec, &row.name, *at, now, mark, true) {
                Ok(task) => tasks.push(task),
                Err(error) => {
                    // Refused by this process (a kind it does not enable): the fire is left
                    // to a process that takes it, and the schedule's lag shows meanwhile.
                    self.metrics.schedule_fires(&row.name, "invalid", 1);
                    if self.failed_line.open() {
                        tracing::warn!(schedule = %row.name, %error, "this process refuses a schedule's task and leaves its fire to another (the schedule lags until one fires it)");
                    }
                    return Ok(());
                }
            }
        }
        let events = fired_events(&row.name, &tasks, now);
        let committed = self
            .store
            .fire(Fire {
                name: row.name.clone(),
                expect_next: Some(expect),
                next,
                now,
                tasks,
                events,
                audit: None,
            })
            .await?;
        let Some(stored) = committed else {
            // Another process fired it first.
            return Ok(());
        };
        let created = self.accepted(&stored, mark);
        let name = row.name.as_str();
        self.metrics.schedule_fires(name, "fired", created as u64);
        self.metrics.schedule_fires(name, "skipped", skipped as u64);
        self.metrics.schedule_fires(name, "missed", missed);
        let next = next.map_or_else(|| "none".to_owned(), rfc3339);
        if missed > 0 || skipped > 0 {
            tracing::info!(schedule = name, fired = created, skipped, missed, %next, "schedule fired, passing over some of its times");
        } else if created > 0 {
            tracing::debug!(schedule = name, fired = created, %next, "schedule fired");
        }
        Ok(())
    }

    /// Submits one task of the schedule `name` now, paused or not.
    pub async fn trigger(
        &self,
        name: &str,
        audit: Option<crate::store::AuditEntry>,
    ) -> Result<Triggered, StoreError> {
        let Some(row) = self.store.schedule(name).await? else {
            return Ok(Triggered::NotFound);
        };
        let (spec, _) = stored(&row)?;
        let now = now_ms();
        self.broker.know_gates(self.store.as_ref()).await;
        let mark = self.broker.submit_mark();
        let task = match self.task_for(&spec, name, now, now, mark, false) {
            Ok(task) => task,
            Err(error) => return Ok(Triggered::Refused(error)),
        };
        let events = fired_events(name, std::slice::from_ref(&task), now);
        let committed = self
            .store
            .fire(Fire {
                name: name.to_owned(),
                expect_next: None,
                next: None,
                now,
                tasks: vec![task],
                events,
                audit,
            })
            .await?;
        let Some(mut stored) = committed else {
            return Ok(Triggered::NotFound);
        };
        self.accepted(&stored, mark);
        self.metrics.schedule_fires(name, "triggered", 1);
        match stored.pop() {
            Some((task, _)) => Ok(Triggered::Submitted(Box::new(task))),
            None => Ok(Triggered::NotFound),
        }
    }

    /// The task of one fire time.
    fn task_for(
        &self,
        spec: &ScheduleSpec,
        name: &str,
        fire_at: i64,
        now: i64,
        mark: Option<i64>,
        keyed: bool,
    ) -> Result<NewTask, ValidationError> {
        let mut request = spec.task.clone();
        add_fire_labels(&mut request, name, fire_at);
        if keyed {
            request.idempotency_key = Some(format!("schedule:{name}:{fire_at}"));
        }
        let mut task = validate::submit(request, &self.kinds, Uuid::now_v7(), now)?;
        task.published_at = self.broker.stamp(&task, mark);
        Ok(task)
    }

    /// What follows a committed fire, as after a submit: count its tasks, hand them to the
    /// broker, read the event feed now. Answers how many it created.
    fn accepted(&self, stored: &[(StoredTask, bool)], mark: Option<i64>) -> usize {
        let created: Vec<&StoredTask> = stored
            .iter()
            .filter(|(_, created)| *created)
            .map(|(task, _)| task)
            .collect();
        for task in &created {
            self.metrics.submitted(&task.queue, &task.kind);
        }
        if !created.is_empty() {
            self.broker.submitted(&created, mark);
            self.events.poke();
        }
        created.len()
    }
}

/// The change-feed row of a fire's `fired` events (None when it made no task): each event
/// as the feed's triggers write them, and the schedule's name twelfth.
fn fired_events(name: &str, tasks: &[NewTask], now: i64) -> Option<String> {
    if tasks.is_empty() {
        return None;
    }
    let events: Vec<serde_json::Value> = tasks
        .iter()
        .map(|task| {
            serde_json::json!([
                task.id.to_string(),
                "fired",
                task.status.as_str(),
                0,
                null,
                now,
                task.kind,
                task.queue,
                task.priority,
                task.max_attempts,
                task.created_at_ms,
                name,
            ])
        })
        .collect();
    serde_json::to_string(&events).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Kinds {
        Kinds::new(false, false, Vec::new())
    }

    fn spec(name: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: name.to_owned(),
            cron: Some("*/5 * * * *".to_owned()),
            task: taskplane_api::SubmitTask {
                kind: "noop".to_owned(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn refused(spec: ScheduleSpec) -> SpecError {
        check(spec, &kinds(), 1_700_000_000_000).expect_err("refused")
    }

    #[test]
    fn names_follow_the_contract() {
        for good in ["nightly", "a", "db.backup:eu-1_x", &"n".repeat(128)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "with space",
            "-leading",
            ".x",
            "a/b",
            &"n".repeat(129),
            "é",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(refused(spec("with space")).code, "invalid_name");
    }

    #[test]
    fn bad_timing_names_its_field() {
        let mut bad_cron = spec("s");
        bad_cron.cron = Some("61 * * * *".to_owned());
        assert!(refused(bad_cron).message.starts_with("cron: "));
        let mut bad_zone = spec("s");
        bad_zone.timezone = Some("Mars/Olympus".to_owned());
        assert!(refused(bad_zone).message.starts_with("timezone: "));
        let mut zero = spec("s");
        zero.cron = None;
        zero.every_secs = Some(0);
        assert!(refused(zero).message.starts_with("every_secs: "));
        let mut both = spec("s");
        both.every_secs = Some(60);
        assert!(refused(both).message.contains("not both"));
        let mut never = spec("s");
        never.cron = Some("0 0 30 2 *".to_owned());
        assert!(refused(never).message.contains("never matches"));
    }

    #[test]
    fn the_template_is_checked_as_a_submit() {
        let mut unknown = spec("s");
        unknown.task.kind = "nope".to_owned();
        let error = refused(unknown);
        assert_eq!(error.code, "unknown_kind");
        assert!(error.message.starts_with("task."), "{}", error.message);
        let mut keyed = spec("s");
        keyed.task.idempotency_key = Some("k".to_owned());
        assert!(refused(keyed).message.starts_with("task.idempotency_key: "));
        let checked = check(spec("s"), &kinds(), 0).expect("valid");
        assert_eq!(checked.spec.timezone.as_deref(), Some("UTC"));
        assert_eq!(checked.spec.name, "", "the name is a column of its own");
    }

    #[test]
    fn fired_events_read_back_as_the_feed_reads_them() {
        let task = validate::submit(
            taskplane_api::SubmitTask {
                kind: "noop".to_owned(),
                ..Default::default()
            },
            &kinds(),
            Uuid::now_v7(),
            5,
        )
        .expect("valid");
        let json = fired_events("nightly", std::slice::from_ref(&task), 7).expect("a row");
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
        assert_eq!(parsed[0][1], "fired");
        assert_eq!(parsed[0][11], "nightly");
        assert!(fired_events("nightly", &[], 7).is_none());
    }
}
