//! Checks a submit request and turns it into a [`NewTask`] ready to insert.
//!
//! Everything a user can get wrong is caught here, before any I/O, with a message that says
//! what to change.

use std::collections::BTreeMap;

use serde_json::Value;
use taskplane_api::{MAX_DEPENDENCIES, MAX_PAYLOAD_BYTES, SubmitTask, TaskStatus};
use uuid::Uuid;

use super::kinds::Gate;

pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
const MAX_LABELS: usize = 32;

/// A validated task, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i32,
    /// The payload as JSON text, stored and delivered as it is.
    pub payload: String,
    pub status: TaskStatus,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub run_at_ms: i64,
    pub created_at_ms: i64,
    pub idempotency_key: Option<String>,
    /// The labels as a JSON object text.
    pub labels: String,
    /// The same labels as pairs, in key order (the store writes a row for each).
    pub label_pairs: Vec<(String, String)>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    /// The row's outbox mark (`published_at`, see the schema): 0 (nobody publishes it; the
    /// database is the queue) unless the submitting process stamps its publisher's mark, or
    /// None to leave it to the dispatcher.
    pub published_at: Option<i64>,
    /// The tasks that must succeed first (the task is inserted `waiting` while one has
    /// not; see [`Store::insert_graph`](crate::store::Store::insert_graph)).
    pub depends_on: Vec<Uuid>,
    /// The workflow this task is a step of, and the step's id there.
    pub workflow_id: Option<Uuid>,
    pub step: Option<String>,
    /// At most `concurrency_limit` (1 when not given) tasks with this key run at once,
    /// across queues and processes.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<u32>,
    /// The audit entry its insert records (a submit of an admin-only kind).
    pub audit: Option<crate::store::AuditEntry>,
    /// The W3C `traceparent` it is submitted in (see [`crate::telemetry::submitted_in`]).
    pub trace_parent: Option<String>,
}

/// Why a submit was refused. `code` is the API's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new("invalid_request", format!("{field}: {message}"))
    }
}

/// The kinds this daemon accepts: the built-in ones ([`super::kinds::BUILTIN`]), gated by
/// their flags, and the declared ones remote workers serve (`--kinds`).
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    pub shell_enabled: bool,
    /// `salt` and `kubectl`.
    pub provisioning_enabled: bool,
    /// Served by remote workers over the lease protocol; any JSON payload.
    pub declared: Vec<String>,
}

impl Kinds {
    pub fn new(shell_enabled: bool, provisioning_enabled: bool, declared: Vec<String>) -> Kinds {
        Kinds {
            shell_enabled,
            provisioning_enabled,
            declared,
        }
    }

    /// Whether remote workers serve `kind` (it was declared with `--kinds`).
    pub fn is_declared(&self, kind: &str) -> bool {
        self.declared.iter().any(|k| k == kind)
    }

    /// Whether `kind`'s flag is on (declared kinds have none).
    pub fn enabled(&self, kind: &super::kinds::Builtin) -> bool {
        match kind.gate {
            Gate::Always => true,
            Gate::Shell => self.shell_enabled,
            Gate::Provisioning => self.provisioning_enabled,
        }
    }

    fn check(&self, kind: &str) -> Result<(), ValidationError> {
        let Some(builtin) = super::kinds::builtin(kind) else {
            if self.is_declared(kind) {
                return Ok(());
            }
            let mut known: Vec<&str> = super::kinds::BUILTIN.iter().map(|k| k.name).collect();
            known.extend(self.declared.iter().map(String::as_str));
            return Err(ValidationError::new(
                "unknown_kind",
                format!(
                    "unknown kind '{kind}' (known kinds: {}; taskd --kinds declares the kinds remote workers serve)",
                    known.join(", ")
                ),
            ));
        };
        if self.enabled(builtin) {
            return Ok(());
        }
        let flag = match builtin.gate {
            Gate::Shell => "--enable-shell",
            _ => "--enable-provisioning",
        };
        Err(ValidationError::new(
            "kind_disabled",
            format!("the {kind} kind is disabled on this taskd; start it with {flag}"),
        ))
    }
}

/// Validates `request` at instant `now_ms`, giving the new task id `id`.
pub fn submit(
    request: SubmitTask,
    kinds: &Kinds,
    id: Uuid,
    now_ms: i64,
) -> Result<NewTask, ValidationError> {
    validate(request, kinds, id, now_ms, false)
}

/// Validates a workflow step's task like [`submit`], except that a payload which takes
/// the results of earlier steps (`${steps.…}`) has its shape checked when the step starts,
/// once they are filled in.
pub fn step(
    request: SubmitTask,
    kinds: &Kinds,
    id: Uuid,
    now_ms: i64,
) -> Result<NewTask, ValidationError> {
    validate(request, kinds, id, now_ms, true)
}

fn validate(
    request: SubmitTask,
    kinds: &Kinds,
    id: Uuid,
    now_ms: i64,
    step: bool,
) -> Result<NewTask, ValidationError> {
    kinds.check(&request.kind)?;
    let payload = request
        .payload
        .unwrap_or_else(|| Value::Object(Default::default()));
    let payload_text = payload.to_string();
    if !(step && super::workflow::has_references(&payload_text)) {
        check_payload(&request.kind, &payload)?;
    }
    if payload_text.len() > MAX_PAYLOAD_BYTES {
        return Err(ValidationError::new(
            "payload_too_large",
            format!(
                "the payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
                payload_text.len()
            ),
        ));
    }

    let queue = request.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    check_name("queue", &queue, 64)?;

    let priority = request.priority.unwrap_or(0);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(ValidationError::invalid(
            "priority",
            format!(
                "{priority} is outside {}..={}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        ));
    }

    let max_attempts = request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(ValidationError::invalid(
            "max_attempts",
            format!("{max_attempts} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
        ));
    }

    let timeout_secs = request.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(ValidationError::invalid(
            "timeout_secs",
            format!("{timeout_secs} is outside 1..={MAX_TIMEOUT_SECS} (7 days)"),
        ));
    }

    let run_at_ms = match (request.run_at, request.delay_ms) {
        (Some(_), Some(_)) => {
            return Err(ValidationError::invalid(
                "run_at",
                "give run_at or delay_ms, not both",
            ));
        }
        (Some(at), None) => {
            // A year far off is a bug in the caller (an unset date, a typo), not a plan.
            let at = at.timestamp_millis();
            if at < now_ms - MAX_RUN_AT_PAST_MS || at > now_ms + MAX_RUN_AT_AHEAD_MS {
                return Err(ValidationError::invalid(
                    "run_at",
                    "must be within a year before now and a hundred years after",
                ));
            }
            at
        }
        (None, Some(delay)) => {
            let delay = i64::try_from(delay)
                .ok()
                .filter(|d| *d <= MAX_TIMEOUT_SECS as i64 * 1000 * 52)
                .ok_or_else(|| ValidationError::invalid("delay_ms", "more than a year"))?;
            now_ms + delay
        }
        (None, None) => now_ms,
    };
    let status = if run_at_ms > now_ms {
        TaskStatus::Scheduled
    } else {
        TaskStatus::Queued
    };

    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(ValidationError::invalid(
            "idempotency_key",
            "must be 1 to 255 bytes",
        ));
    }

    for (field, value) in [
        ("retry_base_ms", request.retry_base_ms),
        ("retry_max_ms", request.retry_max_ms),
    ] {
        if value.is_some_and(|ms| ms > MAX_TIMEOUT_SECS * 1000) {
            return Err(ValidationError::invalid(field, "more than 7 days"));
        }
    }
    if let (Some(base), Some(max)) = (request.retry_base_ms, request.retry_max_ms)
        && base > max
    {
        return Err(ValidationError::invalid(
            "retry_base_ms",
            format!("{base} is more than retry_max_ms ({max})"),
        ));
    }

    let mut depends_on = request.depends_on;
    depends_on.sort();
    depends_on.dedup();
    if depends_on.len() > MAX_DEPENDENCIES {
        return Err(ValidationError::invalid(
            "depends_on",
            format!("{} tasks; at most {MAX_DEPENDENCIES}", depends_on.len()),
        ));
    }
    if !depends_on.is_empty() && request.idempotency_key.is_some() {
        return Err(ValidationError::invalid(
            "depends_on",
            "a task with dependencies cannot also have an idempotency key",
        ));
    }

    let (concurrency_key, concurrency_limit) = concurrency(
        request.concurrency_key,
        request.concurrency_limit,
        &request.kind,
        &payload,
    )?;

    check_labels(&request.labels)?;
    let labels = serde_json::to_string(&request.labels)
        .map_err(|e| ValidationError::invalid("labels", e))?;

    Ok(NewTask {
        id,
        kind: request.kind,
        queue,
        priority,
        payload: payload_text,
        status,
        max_attempts,
        timeout_secs,
        run_at_ms,
        created_at_ms: now_ms,
        idempotency_key: request.idempotency_key,
        labels,
        label_pairs: request.labels.into_iter().collect(),
        retry_base_ms: request.retry_base_ms,
        retry_max_ms: request.retry_max_ms,
        published_at: Some(0),
        depends_on,
        workflow_id: None,
        step: None,
        concurrency_key,
        concurrency_limit,
        audit: None,
        trace_parent: None,
    })
}

/// The most tasks one concurrency key may let run at once.
pub const MAX_CONCURRENCY_LIMIT: u32 = 1000;

/// A submit's concurrency key and limit: as given (checked), or the kind's default key.
fn concurrency(
    key: Option<String>,
    limit: Option<u32>,
    kind: &str,
    payload: &Value,
) -> Result<(Option<String>, Option<u32>), ValidationError> {
    if let Some(limit) = limit
        && !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit)
    {
        return Err(ValidationError::invalid(
            "concurrency_limit",
            format!("{limit} is outside 1..={MAX_CONCURRENCY_LIMIT}"),
        ));
    }
    let key = match key {
        Some(key) => {
            if key.is_empty()
                || key.len() > 255
                || key.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ValidationError::invalid(
                    "concurrency_key",
                    "must be 1 to 255 characters, without spaces or control characters",
                ));
            }
            Some(key)
        }
        None => super::kinds::default_concurrency_key(kind, payload),
    };
    if key.is_none() && limit.is_some() {
        return Err(ValidationError::invalid(
            "concurrency_limit",
            "needs a concurrency_key",
        ));
    }
    Ok((key, limit))
}

/// Checks the payload's shape for kinds that read it (declared kinds take any JSON).
pub(crate) fn check_payload(kind: &str, payload: &Value) -> Result<(), ValidationError> {
    match super::kinds::builtin(kind) {
        Some(builtin) => builtin.check(payload),
        None => Ok(()),
    }
}

/// Whether `name` is a name by the API's rule for names (queues, schedules, workflows and
/// their steps): 1 to 128 letters, digits, `.`, `_`, `:` or `-`, starting with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::invalid(
            field,
            format!("'{value}' must be 1 to {max} characters of letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// How far in the past a `run_at` may be (it then runs at once).
const MAX_RUN_AT_PAST_MS: i64 = 366 * 24 * 3600 * 1000;
/// How far ahead a `run_at` may be.
const MAX_RUN_AT_AHEAD_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// Characters that change how text around them is shown: controls (NUL, ESC, C1) and the
/// bidirectional overrides and isolates (which make `txt.exe` of `exe.txt`).
fn is_display_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in labels {
        if !super::labels::valid_key(key) {
            return Err(ValidationError::invalid(
                "labels",
                format!(
                    "key '{key}' must be 1 to 63 characters of letters, digits, '-', '_', '.' or '/'"
                ),
            ));
        }
        if value.len() > 255 {
            return Err(ValidationError::invalid(
                "labels",
                format!("the value of '{key}' is longer than 255 bytes"),
            ));
        }
        if let Some(c) = value.chars().find(|c| is_display_control(*c)) {
            return Err(ValidationError::invalid(
                "labels",
                format!(
                    "the value of '{key}' holds U+{:04X}, a control or text-direction character",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_refuse_controls_and_direction_overrides() {
        for bad in [
            "a\u{0}b",
            "\u{1b}]52;c;x\u{7}",
            "\u{9b}2J",
            "abc\u{202E}txt",
            "\u{2066}x",
            "\u{7f}",
        ] {
            let labels = [("k".to_owned(), bad.to_owned())].into();
            let error = super::check_labels(&labels).expect_err(bad);
            assert!(error.message.starts_with("labels: "), "{}", error.message);
        }
        let fine = [("k".to_owned(), "ünïcode ok 🙂".to_owned())].into();
        assert!(super::check_labels(&fine).is_ok());
    }

    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn kinds(shell: bool) -> Kinds {
        Kinds::new(shell, shell, vec!["resize".into()])
    }

    fn request(kind: &str, payload: Value) -> SubmitTask {
        SubmitTask {
            kind: kind.into(),
            payload: Some(payload),
            ..Default::default()
        }
    }

    fn check(req: SubmitTask) -> Result<NewTask, ValidationError> {
        submit(req, &kinds(true), Uuid::nil(), NOW)
    }

    #[test]
    fn defaults_fill_in() {
        let task = submit(
            SubmitTask {
                kind: "noop".into(),
                ..Default::default()
            },
            &kinds(false),
            Uuid::nil(),
            NOW,
        )
        .expect("valid");
        assert_eq!(task.queue, "default");
        assert_eq!(task.payload, "{}");
        assert_eq!(task.status, TaskStatus::Queued);
        assert_eq!(task.max_attempts, 3);
        assert_eq!(task.timeout_secs, 300);
        assert_eq!(task.run_at_ms, NOW);
        assert_eq!(task.labels, "{}");
    }

    #[test]
    fn unknown_and_disabled_kinds_are_refused() {
        let err = check(request("frobnicate", json!({}))).expect_err("unknown");
        assert_eq!(err.code, "unknown_kind");
        assert!(err.message.contains("noop, echo"), "{}", err.message);
        assert!(err.message.contains("kubectl, resize"), "{}", err.message);
        let declared = check(request("resize", json!(["any", "json"]))).expect("declared");
        assert_eq!(declared.payload, r#"["any","json"]"#);
        let err = submit(
            request("shell", json!({"argv": ["true"]})),
            &kinds(false),
            Uuid::nil(),
            NOW,
        )
        .expect_err("disabled");
        assert_eq!(err.code, "kind_disabled");
        assert!(err.message.contains("--enable-shell"));
    }

    #[test]
    fn only_a_workflow_step_defers_the_check_of_a_payload_with_references() {
        let templated = || request("sleep", json!({"ms": "${steps.a.result.ms}"}));
        let err = check(templated()).expect_err("a plain submit is checked");
        assert_eq!(err.code, "invalid_payload");
        assert!(step(templated(), &kinds(true), Uuid::nil(), NOW).is_ok());
        let plain = step(
            request("sleep", json!({"ms": "soon"})),
            &kinds(true),
            Uuid::nil(),
            NOW,
        );
        assert!(plain.is_err(), "a step without references is checked");
    }

    #[test]
    fn payload_shapes_are_checked_per_kind() {
        for (kind, payload) in [
            ("sleep", json!({"ms": "soon"})),
            ("sleep", json!({})),
            ("shell", json!({"argv": []})),
            ("shell", json!({"argv": "ls -l"})),
            ("shell", json!({"argv": ["ls"], "shell": true})),
            ("http", json!({"url": "ftp://x"})),
            ("http", json!({"url": "http://x", "method": "GE T"})),
        ] {
            let err = check(request(kind, payload.clone())).expect_err("invalid payload");
            assert_eq!(err.code, "invalid_payload", "{kind} {payload}");
            assert!(err.message.starts_with(kind), "{}", err.message);
        }
        for (kind, payload) in [
            ("sleep", json!({"ms": 5})),
            (
                "shell",
                json!({"argv": ["ls", "-l"], "env": {"A": "1"}, "cwd": "/"}),
            ),
            (
                "http",
                json!({"url": "https://example.com", "method": "POST", "body": {"a": 1}}),
            ),
            ("echo", json!([1, 2, 3])),
        ] {
            check(request(kind, payload)).expect("valid payload");
        }
    }

    #[test]
    fn http_headers_that_frame_the_request_are_refused() {
        for (name, value) in [
            ("Host", "internal.example"),
            ("transfer-encoding", "chunked"),
            ("Content-Length", "0"),
            ("Connection", "close"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Ok", "a\r\nHost: evil"),
            ("X-Ok", "nul\u{0}"),
            ("Bad Name", "x"),
        ] {
            let payload = json!({"url": "http://example.com/", "headers": {name: value}});
            let err = check(request("http", payload)).expect_err(name);
            assert_eq!(err.code, "invalid_payload", "{name}");
            assert!(err.message.starts_with("http: "), "{}", err.message);
            assert!(err.message.contains(name), "{}", err.message);
        }
        let payload =
            json!({"url": "http://example.com/", "headers": {"Authorization": "Bearer t"}});
        check(request("http", payload)).expect("an ordinary header");
    }

    #[test]
    fn huge_payloads_are_refused() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        let err = check(request("echo", json!({ "blob": big }))).expect_err("too large");
        assert_eq!(err.code, "payload_too_large");
    }

    #[test]
    fn bounds_are_enforced() {
        let cases: Vec<(SubmitTask, &str)> = vec![
            (
                SubmitTask {
                    queue: Some("bad queue".into()),
                    ..request("noop", json!({}))
                },
                "queue",
            ),
            (
                SubmitTask {
                    queue: Some(String::new()),
                    ..request("noop", json!({}))
                },
                "queue",
            ),
            (
                SubmitTask {
                    priority: Some(5000),
                    ..request("noop", json!({}))
                },
                "priority",
            ),
            (
                SubmitTask {
                    max_attempts: Some(0),
                    ..request("noop", json!({}))
                },
                "max_attempts",
            ),
            (
                SubmitTask {
                    timeout_secs: Some(0),
                    ..request("noop", json!({}))
                },
                "timeout_secs",
            ),
            (
                SubmitTask {
                    delay_ms: Some(1),
                    run_at: Some(chrono::Utc::now()),
                    ..request("noop", json!({}))
                },
                "run_at",
            ),
            (
                SubmitTask {
                    idempotency_key: Some(String::new()),
                    ..request("noop", json!({}))
                },
                "idempotency_key",
            ),
            (
                SubmitTask {
                    labels: [("bad key".to_owned(), "v".to_owned())].into(),
                    ..request("noop", json!({}))
                },
                "labels",
            ),
            (
                SubmitTask {
                    retry_base_ms: Some(5000),
                    retry_max_ms: Some(100),
                    ..request("noop", json!({}))
                },
                "retry_base_ms",
            ),
            (
                SubmitTask {
                    retry_max_ms: Some(u64::MAX),
                    ..request("noop", json!({}))
                },
                "retry_max_ms",
            ),
        ];
        for (req, field) in cases {
            let err = check(req).expect_err(field);
            assert_eq!(err.code, "invalid_request");
            assert!(err.message.starts_with(field), "{}", err.message);
        }
    }

    #[test]
    fn delays_schedule_the_task() {
        let task = check(SubmitTask {
            delay_ms: Some(1500),
            ..request("noop", json!({}))
        })
        .expect("valid");
        assert_eq!(task.status, TaskStatus::Scheduled);
        assert_eq!(task.run_at_ms, NOW + 1500);

        let past = chrono::DateTime::from_timestamp_millis(NOW - 10).expect("valid instant");
        let task = check(SubmitTask {
            run_at: Some(past),
            ..request("noop", json!({}))
        })
        .expect("valid");
        assert_eq!(
            task.status,
            TaskStatus::Queued,
            "a past run_at is ready now"
        );
        for (label, at) in [
            (
                "year 1",
                chrono::DateTime::from_timestamp(-62_135_596_800, 0),
            ),
            (
                "year 9999",
                chrono::DateTime::from_timestamp(253_402_214_400, 0),
            ),
        ] {
            let error = check(SubmitTask {
                run_at: at,
                ..request("noop", json!({}))
            })
            .expect_err(label);
            assert!(
                error.message.starts_with("run_at: "),
                "{label}: {}",
                error.message
            );
        }
    }
}
