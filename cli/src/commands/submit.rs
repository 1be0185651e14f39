//! `taskctl submit KIND …`

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Map, Value};
use taskplane_api::{Client, SubmitTask, Task, TaskStatus};

use crate::error::CliError;
use crate::output::Ui;

/// Submit a task of KIND (noop, echo, sleep, shell, http, …).
///
/// The payload is built from --payload and any number of -p pairs, like httpie:
/// `-p name=value` sets a string, `-p count:=3` sets raw JSON. For shell tasks, everything
/// after `--` is the command: `taskctl submit shell -- ls -l /tmp`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    taskctl submit echo -p msg=hello --wait\n  \
    taskctl submit sleep -p ms:=2000 --queue slow --priority 5\n  \
    taskctl submit http --payload '{\"url\": \"https://example.com\"}'\n  \
    taskctl submit shell --timeout 1m -- ./backup.sh --full\n  \
    id=$(taskctl submit noop -q) && taskctl watch \"$id\"")]
pub struct SubmitArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Run no earlier than this long from now (e.g. 10s, 1h).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,

    /// Run no earlier than this time (RFC 3339, e.g. 2030-01-01T09:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,

    /// Submitting again with the same key returns the first task instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Run only after these tasks have succeeded (comma-separated or repeated ids); if one
    /// fails or is cancelled, this task is cancelled.
    #[arg(long, value_name = "ID", value_delimiter = ',', value_parser = crate::commands::parse_id, add = clap_complete::ArgValueCandidates::new(crate::complete::task_ids))]
    pub after: Vec<uuid::Uuid>,

    /// Wait for the task to finish; exit 0 if it succeeded, 3 if it failed, 4 if cancelled.
    #[arg(short, long)]
    pub wait: bool,

    /// Print only the task id.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What a task is: its kind, payload and settings (`submit` and `schedule create` share
/// them).
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task kind.
    #[arg(value_name = "KIND", add = clap_complete::ArgValueCandidates::new(crate::complete::kinds))]
    pub kind: String,

    /// The payload as JSON; `@FILE` reads a file, `-` reads stdin.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,

    /// A payload field: `key=value` (a string) or `key:=JSON` (raw JSON). Repeatable.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// The queue to submit to.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(crate::complete::queues))]
    pub queue: Option<String>,

    /// Higher runs first among ready tasks of a queue (-1000 to 1000).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,

    /// How many attempts before the task is failed for good.
    #[arg(long)]
    pub max_attempts: Option<u32>,

    /// How long one attempt may run (e.g. 30s, 5m).
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,

    /// The shortest backoff between attempts of this task (overrides the daemon's).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub retry_base: Option<Duration>,

    /// The longest backoff between attempts of this task (overrides the daemon's).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub retry_max: Option<Duration>,

    /// At most --concurrency-limit tasks with this key run at once, across queues and
    /// workers (e.g. host=web1). salt and kubectl tasks have a default key per target.
    #[arg(long, value_name = "KEY")]
    pub concurrency_key: Option<String>,

    /// How many tasks with --concurrency-key may run at once (default 1).
    #[arg(long, value_name = "N", requires = "concurrency_key")]
    pub concurrency_limit: Option<u32>,

    /// A label `key=value`. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// For shell tasks: the command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(client: &Client, ui: &Ui, args: SubmitArgs) -> Result<(), CliError> {
    let (request, wait, quiet) = build(args)?;
    send(client, ui, &request, wait, quiet).await
}

/// Submits `request`, then reports it, or with `wait` follows it to the end and exits as
/// it ended (`taskctl provision … --submit` shares this).
pub async fn send(
    client: &Client,
    ui: &Ui,
    request: &SubmitTask,
    wait: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let (task, created) = client.submit(request).await?;
    if !wait {
        return report(ui, &task, created, quiet);
    }
    if quiet {
        ui.line(&task.id.to_string())?;
    } else {
        warn_without_workers(client, &task.queue).await;
    }
    // The task exists now: if following it fails, say which task it is, so that a retry
    // does not submit it twice.
    let mut finished = super::watch::follow(client, ui, &[task.id], false)
        .await
        .map_err(|error| match error {
            CliError::Api(api) => CliError::Other(format!(
                "task {} was submitted, but following it failed: {}",
                task.id,
                crate::error::describe(&api)
            )),
            other => other,
        })?;
    let task = finished.pop().unwrap_or(task);
    if !ui.json() && !quiet && task.kind == "shell" {
        print_output(client, ui, &task).await?;
    }
    if ui.json() && !quiet {
        ui.print_json(&task)?;
    } else if !quiet
        && task.status == TaskStatus::Succeeded
        && let Some(result) = &task.result
        && !result.is_null()
    {
        let text = serde_json::to_string_pretty(result).unwrap_or_default();
        ui.line(&text)?;
    }
    super::watch::outcome(std::slice::from_ref(&task))
}

/// Says once, on stderr, when no live worker consumes `queue`: the wait may be long (one may
/// still start, so it goes on). Silent when the workers cannot be read (a write-only token).
async fn warn_without_workers(client: &Client, queue: &str) {
    let Ok(list) = client.workers().await else {
        return;
    };
    if !list
        .workers
        .iter()
        .any(|w| w.queues.iter().any(|q| q == queue))
    {
        eprintln!(
            "taskctl: no live worker consumes queue '{}'; waiting anyway (start one with: taskd --role worker --queues {})",
            crate::output::inline(queue),
            crate::output::inline(queue)
        );
    }
}

/// What a waited shell task printed (its last attempt), as `taskctl logs` would show it.
async fn print_output(client: &Client, ui: &Ui, task: &Task) -> Result<(), CliError> {
    const LINES: u32 = 1000;
    let query = taskplane_api::LogQuery {
        limit: Some(LINES),
        ..Default::default()
    };
    let Ok(page) = client.logs(task.id, &query).await else {
        eprintln!("taskctl: its output: taskctl logs {}", task.id);
        return Ok(());
    };
    for line in page
        .lines
        .iter()
        .filter(|l| l.attempt == task.attempts && l.stream != taskplane_api::LogStream::System)
    {
        ui.line(&line.line)?;
    }
    if page.lines.len() == LINES as usize {
        eprintln!("taskctl: more output: taskctl logs {}", task.id);
    }
    Ok(())
}

fn report(ui: &Ui, task: &Task, created: bool, quiet: bool) -> Result<(), CliError> {
    if quiet {
        return ui.line(&task.id.to_string());
    }
    if ui.json() {
        return ui.print_json(task);
    }
    if created {
        ui.line(&format!(
            "{} submitted ({} on queue {}, {})",
            task.id,
            crate::output::inline(&task.kind),
            crate::output::inline(&task.queue),
            task.status
        ))
    } else {
        ui.line(&format!(
            "{} already exists for this idempotency key ({})",
            task.id, task.status
        ))
    }
}

/// Turns the arguments into a request, checking everything that can be checked locally.
fn build(args: SubmitArgs) -> Result<(SubmitTask, bool, bool), CliError> {
    let mut request = args.task.request()?;
    request.run_at = args.at;
    request.delay_ms = args.delay.map(|d| d.as_millis() as u64);
    request.idempotency_key = args.idempotency_key;
    request.depends_on = args.after;
    Ok((request, args.wait, args.quiet))
}

impl TaskArgs {
    /// The submit these flags describe (without a time or a key).
    pub fn request(self) -> Result<SubmitTask, CliError> {
        let usage = CliError::Usage;
        let mut payload = payload_of(self.payload.as_deref(), &self.params)?;
        if !self.command.is_empty() {
            let Value::Object(map) = &mut payload else {
                return Err(usage(
                    "`-- CMD` needs the payload to be a JSON object".into(),
                ));
            };
            if self.kind != "shell" {
                return Err(usage(format!(
                    "`-- CMD…` is for shell tasks; use --payload or -p for {} tasks",
                    self.kind
                )));
            }
            if map.contains_key("argv") {
                return Err(usage(
                    "give the command either after `--` or as argv, not both".into(),
                ));
            }
            map.insert(
                "argv".into(),
                Value::Array(self.command.iter().cloned().map(Value::String).collect()),
            );
        }
        let timeout_secs = self
            .timeout
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|secs| secs.max(1));
        Ok(SubmitTask {
            kind: self.kind,
            payload: Some(payload),
            queue: self.queue,
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_secs,
            run_at: None,
            delay_ms: None,
            idempotency_key: None,
            labels: self.labels.into_iter().collect::<BTreeMap<_, _>>(),
            retry_base_ms: self.retry_base.map(|d| d.as_millis() as u64),
            retry_max_ms: self.retry_max.map(|d| d.as_millis() as u64),
            depends_on: Vec::new(),
            concurrency_key: self.concurrency_key,
            concurrency_limit: self.concurrency_limit,
        })
    }
}

/// The payload `--payload` and the `-p` pairs give (`submit` and `bench` take both).
pub fn payload_of(payload: Option<&str>, params: &[String]) -> Result<Value, CliError> {
    let mut payload = match payload {
        Some(text) => parse_payload(text)?,
        None => Value::Object(Map::new()),
    };
    if !params.is_empty() {
        let Value::Object(map) = &mut payload else {
            return Err(CliError::Usage(
                "-p needs the payload to be a JSON object".into(),
            ));
        };
        for param in params {
            let (key, value) = parse_param("-p", param).map_err(CliError::Usage)?;
            map.insert(key, value);
        }
    }
    Ok(payload)
}

fn parse_payload(text: &str) -> Result<Value, CliError> {
    let (source, json) = if text == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| CliError::Usage(format!("--payload -: cannot read stdin: {e}")))?;
        ("stdin".to_owned(), buf)
    } else if let Some(path) = text.strip_prefix('@') {
        let json = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--payload @{path}: {e}")))?;
        (path.to_owned(), json)
    } else {
        ("--payload".to_owned(), text.to_owned())
    };
    serde_json::from_str(&json)
        .map_err(|e| CliError::Usage(format!("{source} is not valid JSON: {e}")))
}

/// `key=value` → a string; `key:=json` → raw JSON.
pub fn parse_param(flag: &str, text: &str) -> Result<(String, Value), String> {
    let Some(eq) = text.find('=') else {
        return Err(format!(
            "{flag} {text}: expected key=value (a string) or key:=JSON"
        ));
    };
    let (key, raw) = if text[..eq].ends_with(':') {
        let key = &text[..eq - 1];
        let raw = &text[eq + 1..];
        let value = serde_json::from_str(raw)
            .map_err(|e| format!("{flag} {text}: the value after := is not JSON ({e})"))?;
        (key, value)
    } else {
        (&text[..eq], Value::String(text[eq + 1..].to_owned()))
    };
    if key.is_empty() {
        return Err(format!("{flag} {text}: the key is empty"));
    }
    Ok((key.to_owned(), raw))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not key=value")),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}); try 30s, 5m or 1h"))
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{text}' is not an RFC 3339 time ({e}); e.g. 2030-01-01T09:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn build_from(argv: &[&str]) -> Result<SubmitTask, CliError> {
        let harness =
            Harness::try_parse_from(std::iter::once("submit").chain(argv.iter().copied()))
                .map_err(|e| CliError::Usage(e.to_string()))?;
        build(harness.args).map(|(request, _, _)| request)
    }

    #[test]
    fn params_work_like_httpie() {
        assert_eq!(parse_param("-p", "a=1"), Ok(("a".into(), json!("1"))));
        assert_eq!(parse_param("-p", "a:=1"), Ok(("a".into(), json!(1))));
        assert_eq!(
            parse_param("-p", "a:=[1,2]"),
            Ok(("a".into(), json!([1, 2])))
        );
        assert_eq!(
            parse_param("-p", "url=http://x/?q=1"),
            Ok(("url".into(), json!("http://x/?q=1")))
        );
        assert_eq!(parse_param("-p", "empty="), Ok(("empty".into(), json!(""))));
        assert!(parse_param("-p", "novalue").is_err());
        assert!(parse_param("-p", "=x").is_err());
        assert!(parse_param("-p", "a:=not json").is_err());
    }

    #[test]
    fn payload_merges_params_into_the_json() {
        let request = build_from(&[
            "echo",
            "--payload",
            r#"{"a":1}"#,
            "-p",
            "b=two",
            "-p",
            "c:=true",
        ])
        .expect("valid");
        assert_eq!(
            request.payload,
            Some(json!({"a": 1, "b": "two", "c": true}))
        );
    }

    #[test]
    fn shell_command_after_double_dash() {
        let request = build_from(&["shell", "--", "ls", "-l", "/tmp"]).expect("valid");
        assert_eq!(request.payload, Some(json!({"argv": ["ls", "-l", "/tmp"]})));
        let err = build_from(&["echo", "--", "ls"]).expect_err("not shell");
        assert!(err.to_string().contains("shell"));
    }

    #[test]
    fn flags_become_fields() {
        let request = build_from(&[
            "sleep",
            "-p",
            "ms:=5",
            "--queue",
            "q1",
            "--priority",
            "-5",
            "--max-attempts",
            "7",
            "--timeout",
            "1500ms",
            "--delay",
            "2s",
            "--label",
            "team=ops",
            "--idempotency-key",
            "k1",
            "--retry-base",
            "100ms",
            "--retry-max",
            "2s",
        ])
        .expect("valid");
        assert_eq!(request.queue.as_deref(), Some("q1"));
        assert_eq!(request.priority, Some(-5));
        assert_eq!(request.max_attempts, Some(7));
        assert_eq!(request.timeout_secs, Some(2), "rounded up");
        assert_eq!(request.delay_ms, Some(2000));
        assert_eq!(request.labels.get("team").map(String::as_str), Some("ops"));
        assert_eq!(request.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(
            (request.retry_base_ms, request.retry_max_ms),
            (Some(100), Some(2000))
        );
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for argv in [
            &["echo", "--payload", "{not json"][..],
            &["echo", "--payload", "[1]", "-p", "a=b"][..],
            &["echo", "--timeout", "soon"][..],
            &["echo", "--timeout", "0s"][..],
            &["echo", "--at", "tomorrow"][..],
            &["echo", "--delay", "1s", "--at", "2030-01-01T00:00:00Z"][..],
            &["echo", "--label", "nokey"][..],
        ] {
            let err = build_from(argv).expect_err("usage error");
            assert_eq!(err.exit_code(), crate::error::code::USAGE, "{argv:?}");
        }
    }
}
