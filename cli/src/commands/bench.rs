//! `taskctl bench`: a load generator and latency report against a running taskd.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use taskplane_api::{Client, EventKind, EventQuery, SubmitTask};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::CliError;
use crate::output::Ui;

/// Submit N tasks from C concurrent submitters (one by one, or in batches), follow them to
/// the end through the event stream, and report throughput and latency percentiles: submit
/// (one request), queue wait (created → started) and end to end (created → finished), both
/// measured on the server's clock.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many tasks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,
    /// The kind to submit.
    #[arg(long, default_value = "noop")]
    pub kind: String,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Tasks per request (1: one submit per task; more: the batch endpoint).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// The payload as JSON, as for `submit` (`@FILE` reads a file, `-` reads stdin).
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// A payload field, as for `submit`: `key=value` or `key:=JSON`. Repeatable.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Bytes of padding added to each payload as a `pad` field (0: none; only kinds that
    /// accept any payload, such as noop and echo, take it).
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// The queue to submit to.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Give up if the tasks have not all finished by then.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = super::submit::parse_duration)]
    pub timeout: Duration,
    /// Instead: run one workflow of N steps in a chain (each needs the one before) and
    /// report the delay from a step's end to the start of the step that needs it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..=1000), conflicts_with_all = ["concurrency", "batch"])]
    pub chain: Option<u64>,
}

/// What `bench --chain` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub steps: u64,
    /// From a step's end to the start of the next, on the server's clock (ms resolution).
    pub hop_ms: Percentiles,
    /// From the workflow's creation to its last step's end.
    pub total_ms: f64,
}

/// Runs a chain of `steps` tasks as one workflow and measures each hop.
async fn chain(client: &Client, ui: &Ui, args: &BenchArgs, steps: u64) -> Result<(), CliError> {
    let payload = super::submit::payload_of(args.payload.as_deref(), &args.params)?;
    let spec = taskplane_api::WorkflowSpec {
        name: "bench-chain".to_owned(),
        steps: (0..steps)
            .map(|i| taskplane_api::WorkflowStep {
                id: format!("s{i}"),
                kind: args.kind.clone(),
                payload: Some(payload.clone()),
                needs: if i == 0 {
                    Vec::new()
                } else {
                    vec![format!("s{}", i - 1)]
                },
                queue: Some(args.queue.clone()),
                ..Default::default()
            })
            .collect(),
    };
    let created = client.create_workflow(&spec).await?;
    let quiet = Ui {
        format: crate::cli::OutputFormat::Id,
        ..*ui
    };
    tokio::time::timeout(
        args.timeout,
        super::workflow::wait(client, &quiet, created.id, false),
    )
    .await
    .map_err(|_| {
        CliError::Other(format!(
            "the chain did not finish within {}",
            humantime::format_duration(args.timeout)
        ))
    })??;
    let done = client.workflow(created.id).await?;
    let ms = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).num_milliseconds() as f64
    };
    let mut hops: Vec<f64> = done
        .steps
        .windows(2)
        .filter_map(|pair| Some(ms(pair[0].finished_at?, pair[1].started_at?)))
        .collect();
    let report = ChainReport {
        steps,
        hop_ms: Percentiles::of(&mut hops),
        total_ms: done.finished_at.map_or(0.0, |end| ms(done.created_at, end)),
    };
    if ui.json() {
        return ui.print_json(&report);
    }
    ui.line(&format!(
        "a chain of {steps} {} steps ran in {:.1}s",
        args.kind,
        report.total_ms / 1000.0
    ))?;
    let mut table = ui.table(&["PARENT END → CHILD START (ms)", "P50", "P90", "P99", "MAX"]);
    let p = report.hop_ms;
    table.add_row(vec![
        "hop".to_owned(),
        format!("{:.1}", p.p50),
        format!("{:.1}", p.p90),
        format!("{:.1}", p.p99),
        format!("{:.1}", p.max),
    ]);
    ui.print_table(&table)
}

/// Percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (any order).
    pub fn of(samples: &mut [f64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index]
        };
        Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub submitted_per_sec: f64,
    pub completed_per_sec: f64,
    pub submit_ms: Percentiles,
    pub queue_wait_ms: Percentiles,
    pub end_to_end_ms: Percentiles,
}

#[derive(Default)]
struct Seen {
    started: Option<i64>,
    finished: Option<(i64, bool)>,
    created: i64,
}

pub async fn run(client: &Client, ui: &Ui, args: BenchArgs) -> Result<(), CliError> {
    if let Some(steps) = args.chain {
        return chain(client, ui, &args, steps).await;
    }
    let mut payload = super::submit::payload_of(args.payload.as_deref(), &args.params)?;
    if args.payload_bytes > 0 {
        let Some(map) = payload.as_object_mut() else {
            return Err(CliError::Usage(
                "--payload-bytes needs the payload to be a JSON object".into(),
            ));
        };
        map.insert("pad".into(), json!("x".repeat(args.payload_bytes)));
    }
    let kind = args.kind.clone();
    // Follow events first, so no completion is missed.
    let query = EventQuery {
        kind: Some(kind.clone()),
        ..EventQuery::default()
    };
    let mut events = client.events(&query, None).await?;
    // A stream the server cut (this client fell behind) is resumed from its last event.
    let mut resumes = 0;
    let progress = if ui.progress {
        let bar = crate::output::progress().add(ProgressBar::new(args.tasks));
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} done  {per_sec}  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };

    let started = Instant::now();
    let submit_ms = Arc::new(Mutex::new(Vec::with_capacity(args.tasks as usize)));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(args.tasks as usize)));
    let mut submitters = tokio::task::JoinSet::new();
    for submitter in 0..args.concurrency {
        let share =
            args.tasks / args.concurrency + u64::from(submitter < args.tasks % args.concurrency);
        let (client, submit_ms, ids, payload) = (
            client.clone(),
            submit_ms.clone(),
            ids.clone(),
            payload.clone(),
        );
        let (kind, queue, batch) = (kind.clone(), args.queue.clone(), args.batch);
        submitters.spawn(async move {
            let task = || SubmitTask {
                kind: kind.clone(),
                payload: Some(payload.clone()),
                queue: Some(queue.clone()),
                ..SubmitTask::default()
            };
            let mut left = share;
            while left > 0 {
                let n = left.min(batch);
                left -= n;
                let at = Instant::now();
                let created: Vec<Uuid> = if batch == 1 {
                    vec![client.submit(&task()).await?.0.id]
                } else {
                    let tasks = (0..n).map(|_| task()).collect();
                    client
                        .submit_batch(tasks)
                        .await?
                        .into_iter()
                        .map(|t| t.id)
                        .collect()
                };
                submit_ms
                    .lock()
                    .await
                    .push(at.elapsed().as_secs_f64() * 1000.0);
                ids.lock().await.extend(created);
            }
            Ok::<_, taskplane_api::Error>(())
        });
    }

    let mut seen: HashMap<Uuid, Seen> = HashMap::new();
    let mut submitting = true;
    let mut submit_elapsed = Duration::ZERO;
    let deadline = tokio::time::sleep(args.timeout);
    tokio::pin!(deadline);
    let mut done = 0u64;
    loop {
        if !submitting && done >= args.tasks {
            break;
        }
        tokio::select! {
            finished = submitters.join_next(), if submitting => match finished {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => return Err(error.into()),
                Some(Err(error)) => return Err(CliError::Other(format!("a submitter failed: {error}"))),
                None => {
                    submitting = false;
                    submit_elapsed = started.elapsed();
                }
            },
            event = events.next() => match event {
                Some(Ok(event)) => {
                    let entry = seen.entry(event.task.id).or_default();
                    entry.created = event.task.created_at.timestamp_millis();
                    let at = event.at.timestamp_millis();
                    match event.kind {
                        EventKind::Started => entry.started = Some(at),
                        EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled
                            if entry.finished.is_none() =>
                        {
                            entry.finished = Some((at, event.kind == EventKind::Succeeded));
                            done += 1;
                            if let Some(bar) = &progress {
                                bar.inc(1);
                            }
                        }
                        _ => {}
                    }
                }
                Some(Err(error)) => return Err(error.into()),
                None if resumes < 10 => {
                    resumes += 1;
                    let last = events.last_seq;
                    events = client.events(&query, last).await?;
                }
                None => return Err(CliError::Other("the event stream ended before the tasks did".into())),
            },
            _ = &mut deadline => {
                return Err(CliError::Other(format!(
                    "only {done} of {} tasks finished within {:?}", args.tasks, args.timeout
                )));
            }
        }
    }
    let total = started.elapsed();
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }

    let ids = ids.lock().await;
    let mut queue_wait = Vec::with_capacity(ids.len());
    let mut end_to_end = Vec::with_capacity(ids.len());
    let (mut succeeded, mut failed) = (0, 0);
    for id in ids.iter() {
        let Some(entry) = seen.get(id) else { continue };
        if let Some(start) = entry.started {
            queue_wait.push((start - entry.created) as f64);
        }
        if let Some((end, ok)) = entry.finished {
            end_to_end.push((end - entry.created) as f64);
            if ok {
                succeeded += 1;
            } else {
                failed += 1;
            }
        }
    }
    let report = Report {
        tasks: args.tasks,
        succeeded,
        failed,
        submitted_per_sec: args.tasks as f64 / submit_elapsed.as_secs_f64().max(1e-9),
        completed_per_sec: args.tasks as f64 / total.as_secs_f64().max(1e-9),
        submit_ms: Percentiles::of(&mut submit_ms.lock().await),
        queue_wait_ms: Percentiles::of(&mut queue_wait),
        end_to_end_ms: Percentiles::of(&mut end_to_end),
    };
    if ui.json() {
        return ui.print_json(&report);
    }
    ui.line(&format!(
        "{} {} tasks ({} succeeded, {} failed) from {} submitters, batch {}",
        report.tasks, args.kind, report.succeeded, report.failed, args.concurrency, args.batch
    ))?;
    ui.line(&format!(
        "submitted {:.0}/s, completed {:.0}/s end to end",
        report.submitted_per_sec, report.completed_per_sec
    ))?;
    let mut table = ui.table(&["LATENCY (ms)", "P50", "P90", "P99", "MAX"]);
    for (name, p) in [
        ("submit", report.submit_ms),
        ("queue wait", report.queue_wait_ms),
        ("end to end", report.end_to_end_ms),
    ] {
        table.add_row(vec![
            name.to_owned(),
            format!("{:.1}", p.p50),
            format!("{:.1}", p.p90),
            format!("{:.1}", p.p99),
            format!("{:.1}", p.max),
        ]);
    }
    ui.print_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        samples.reverse();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut [7.0]).p99, 7.0);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
