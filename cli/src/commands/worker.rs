//! `taskctl worker --kind K[,K] [--queue Q] [--concurrency N] [--grace DUR] -- CMD ARGS…`:
//! a remote worker over the lease protocol. Each task runs CMD in a process group of its own
//! (the provisioning crate's runner), its payload on stdin; its output goes to the task's log,
//! heartbeats keep the lease and bring cancellations, and the exit status says how it ended.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use signals::Stop;
use taskplane_api::{
    Client, Complete, Error as ApiError, Fail, Heartbeat, LeaseRequest, LeasedTask, LogReport,
    LogStream, MAX_LEASE_TASKS, ReportedLine,
};
use taskplane_provisioning::runner::{self, Invocation, StdoutMode, Stream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::CliError;
use crate::output::Ui;

/// Serve declared kinds from this host: lease their tasks from taskd and run a command for
/// each.
///
/// Per task, CMD runs in its own process group with the payload as JSON on stdin and
/// TASKPLANE_TASK_ID, TASKPLANE_KIND, TASKPLANE_ATTEMPT and TASKPLANE_QUEUE in its
/// environment. Its stdout and stderr go to the task's log; the last stdout line, if it is
/// JSON, is the task's result. Exit 0 completes the task; anything else fails it with the
/// status and the last stderr line (retried while attempts are left). A cancel kills the
/// process group within one heartbeat (5 s at most); the task's timeout is enforced.
/// SIGTERM or Ctrl-C stops leasing and lets running tasks finish for --grace, then kills
/// them and hands them back (the attempt is not counted); a second one does that at once.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    taskd --kinds resize &\n  \
    taskctl worker --kind resize -- python3 resize.py\n  \
    taskctl worker --kind report,export --queue reports --concurrency 8 -- ./handle.sh")]
pub struct WorkerArgs {
    /// The kinds to serve, comma-separated (declared with `taskd --kinds`).
    #[arg(
        long = "kind",
        required = true,
        value_delimiter = ',',
        value_name = "KIND",
        add = clap_complete::ArgValueCandidates::new(crate::complete::declared_kinds)
    )]
    pub kinds: Vec<String>,
    /// The queues to take tasks from, comma-separated.
    #[arg(
        long = "queue",
        value_delimiter = ',',
        default_value = "default",
        value_name = "QUEUE"
    )]
    pub queues: Vec<String>,
    /// How many tasks run at once.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// How long SIGTERM lets running tasks finish before they are killed and handed back.
    #[arg(long, default_value = "30s", value_parser = super::submit::parse_duration)]
    pub grace: Duration,
    /// This worker's id in `taskctl workers` [default: HOST-PID-RANDOM].
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    /// Print nothing but errors (no line per task).
    #[arg(short, long)]
    pub quiet: bool,
    /// The command to run for each task, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How long a lease request waits for work.
const POLL_WAIT_MS: u64 = 25_000;
/// The longest pause between retries of a request taskd did not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often captured output is sent, at most.
const LOG_EVERY: Duration = Duration::from_millis(250);
/// The most time between heartbeats.
const MAX_BEAT: Duration = Duration::from_secs(5);

pub async fn run(client: &Client, _ui: &Ui, args: WorkerArgs) -> Result<(), CliError> {
    if args.command.first().is_none_or(|c| c.is_empty()) {
        return Err(CliError::Usage(
            "give the command to run after --, e.g. taskctl worker --kind resize -- ./resize.sh"
                .into(),
        ));
    }
    if runner::find_program(&args.command[0]).is_none() {
        return Err(CliError::Usage(format!(
            "'{}' is not an executable file or on PATH",
            args.command[0]
        )));
    }
    let id = args.name.clone().unwrap_or_else(default_id);
    let agent = Arc::new(Agent {
        client: client.clone(),
        id,
        command: args.command.clone(),
        quiet: args.quiet,
    });
    let stop = Stop::install()?;
    if !args.quiet {
        eprintln!(
            "worker {} serving {} from {} with {} slot{} on {}",
            agent.id,
            args.kinds.join(","),
            args.queues.join(","),
            args.concurrency,
            if args.concurrency == 1 { "" } else { "s" },
            client.base_url()
        );
    }
    let hard_stop = signals::Flag::default();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut backoff = Backoff::default();
    while !stop.draining() {
        while running.try_join_next().is_some() {}
        let free = args.concurrency as usize - running.len();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.wait_drain() => {}
            }
            continue;
        }
        let request = LeaseRequest {
            worker: agent.id.clone(),
            kinds: args.kinds.clone(),
            queues: args.queues.clone(),
            max: Some(
                u32::try_from(free)
                    .unwrap_or(MAX_LEASE_TASKS)
                    .min(MAX_LEASE_TASKS),
            ),
            wait_ms: Some(POLL_WAIT_MS),
            concurrency: Some(args.concurrency),
        };
        let leased = tokio::select! {
            leased = client.lease(&request) => leased,
            _ = stop.wait_drain() => break,
        };
        match leased {
            Ok(list) => {
                backoff.reset(&agent);
                for task in list.tasks {
                    running.spawn(agent.clone().run_task(task, hard_stop.clone()));
                }
            }
            Err(error) if retryable(&error) => {
                let pause = backoff.failed(&error);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_drain() => break,
                }
            }
            // Refused for good (an undeclared kind, a bad token): nothing to retry.
            Err(error) => return Err(error.into()),
        }
    }
    while running.try_join_next().is_some() {}
    if !running.is_empty() {
        if !args.quiet {
            eprintln!(
                "stopping: no new tasks; waiting up to {} for {} running",
                humantime::format_duration(args.grace),
                running.len()
            );
        }
        let grace = tokio::time::sleep(args.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut grace, if !hard_stop.is_set() => hard_stop.set(),
                _ = stop.wait_hard(), if !hard_stop.is_set() => hard_stop.set(),
            }
        }
    }
    if !args.quiet {
        eprintln!("worker {} stopped", agent.id);
    }
    Ok(())
}

/// Answers that mean "taskd is away or busy now": worth another try.
fn retryable(error: &ApiError) -> bool {
    match error {
        ApiError::Unreachable { .. } | ApiError::TimedOut { .. } => true,
        other => other.status().is_some_and(|s| s == 429 || s >= 500),
    }
}

/// `HOST-PID-RANDOM`, as taskd names its own workers.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && taskplane_api::text::neutralize(h) == *h)
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// Doubling pauses while taskd is unreachable, with one line when it goes and one when it
/// is back.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn failed(&mut self, error: &ApiError) -> Duration {
        let pause = self.next.unwrap_or(Duration::from_millis(500));
        if self.next.is_none() {
            eprintln!(
                "taskctl worker: {}; retrying",
                crate::error::describe(error)
            );
        }
        self.next = Some((pause * 2).min(MAX_BACKOFF));
        pause
    }

    fn reset(&mut self, agent: &Agent) {
        if self.next.take().is_some() && !agent.quiet {
            eprintln!("taskd answers again");
        }
    }
}

struct Agent {
    client: Client,
    id: String,
    command: Vec<String>,
    quiet: bool,
}

/// How an attempt ended, as the agent reports it.
enum Ending {
    Complete(serde_json::Value),
    Fail {
        error: String,
        retry: bool,
        interrupted: bool,
    },
    /// The lease is gone (someone else has the task): nothing to report.
    Lost,
}

/// Output not sent yet, and the last stdout line (the result, if it is JSON).
#[derive(Default)]
struct Captured {
    lines: Vec<ReportedLine>,
    last_stdout: Option<String>,
}

impl Agent {
    async fn run_task(self: Arc<Self>, task: LeasedTask, hard_stop: signals::Flag) {
        let started = Instant::now();
        if !self.quiet {
            eprintln!(
                "task {} {} attempt {}: started",
                task.id, task.kind, task.attempt
            );
        }
        let lease = task.lease.clone();
        let mut expires = lease_deadline(&task.lease_expires_at);
        let mut env = BTreeMap::new();
        env.insert("TASKPLANE_TASK_ID".to_owned(), task.id.to_string());
        env.insert("TASKPLANE_KIND".to_owned(), task.kind.clone());
        env.insert("TASKPLANE_ATTEMPT".to_owned(), task.attempt.to_string());
        env.insert("TASKPLANE_QUEUE".to_owned(), task.queue.clone());
        // The program joins the task's trace (W3C's variable).
        if let Some(traceparent) = &task.traceparent {
            env.insert("TRACEPARENT".to_owned(), traceparent.clone());
        }
        let mut invocation = Invocation::new(self.command[0].clone()).args(&self.command[1..]);
        invocation.env = env;
        invocation.stdin = Some(task.payload.to_string().into_bytes());
        let captured = Arc::new(Mutex::new(Captured::default()));
        let sink = captured.clone();
        let mut run = Box::pin(runner::run(
            &invocation,
            StdoutMode::Lines,
            "install it or give its path",
            move |stream, line| {
                if let Ok(mut captured) = sink.lock() {
                    if stream == Stream::Stdout && !line.trim().is_empty() {
                        captured.last_stdout = Some(line.clone());
                    }
                    captured.lines.push(ReportedLine {
                        stream: match stream {
                            Stream::Stdout => LogStream::Stdout,
                            Stream::Stderr => LogStream::Stderr,
                        },
                        line,
                    });
                }
                std::future::ready(())
            },
        ));
        let timeout = tokio::time::sleep(Duration::from_secs(task.timeout_secs));
        tokio::pin!(timeout);
        let mut beat = tokio::time::interval(beat_every(&task.lease_expires_at));
        beat.tick().await;
        let mut ship = tokio::time::interval(LOG_EVERY);
        let ending = loop {
            tokio::select! {
                finished = run.as_mut() => break match finished {
                    Ok(finished) if finished.status.success() => {
                        let last = captured.lock().ok().and_then(|c| c.last_stdout.clone());
                        let result = last
                            .and_then(|line| serde_json::from_str(line.trim()).ok())
                            .unwrap_or(serde_json::Value::Null);
                        Ending::Complete(result)
                    }
                    Ok(finished) => Ending::Fail { error: finished.failure(), retry: true, interrupted: false },
                    Err(error) => Ending::Fail { error: error.to_string(), retry: false, interrupted: false },
                },
                _ = &mut timeout => break Ending::Fail {
                    error: format!("timed out after {}s", task.timeout_secs),
                    retry: true,
                    interrupted: false,
                },
                _ = hard_stop.wait() => break Ending::Fail {
                    error: "the worker is shutting down".into(),
                    retry: true,
                    interrupted: true,
                },
                _ = ship.tick() => self.ship(&task, &lease, &captured).await,
                _ = beat.tick() => {
                    match self.client.heartbeat(task.id, &Heartbeat { lease: lease.clone(), progress: None }).await {
                        Ok(answer) => {
                            expires = lease_deadline(&answer.lease_expires_at);
                            if answer.cancel_requested {
                                break Ending::Fail { error: "cancelled".into(), retry: false, interrupted: false };
                            }
                        }
                        Err(ApiError::Api { status: 409 | 404, .. }) => break Ending::Lost,
                        Err(error) => {
                            if Instant::now() >= expires {
                                eprintln!("task {}: the lease ran out while taskd was unreachable ({}); stopping it", task.id, crate::error::describe(&error));
                                break Ending::Lost;
                            }
                        }
                    }
                }
            }
        };
        // Dropping the run kills its process group, if it still runs.
        drop(run);
        self.ship(&task, &lease, &captured).await;
        let took = started.elapsed();
        let (done, what) = match ending {
            Ending::Lost => {
                eprintln!("task {}: lost its lease; it runs again elsewhere", task.id);
                return;
            }
            Ending::Complete(result) => (
                self.report(task.id, expires, |c| {
                    let body = Complete {
                        lease: lease.clone(),
                        result: Some(result.clone()),
                    };
                    async move { c.complete(task.id, &body).await }
                })
                .await,
                String::new(),
            ),
            Ending::Fail {
                error,
                retry,
                interrupted,
            } => {
                let what = if interrupted {
                    "handed back".to_owned()
                } else {
                    format!("failed: {error}")
                };
                (
                    self.report(task.id, expires, |c| {
                        let body = Fail {
                            lease: lease.clone(),
                            error: error.clone(),
                            retry,
                            interrupted,
                        };
                        async move { c.fail(task.id, &body).await }
                    })
                    .await,
                    what,
                )
            }
        };
        if let Some(status) = done
            && !self.quiet
        {
            let what = if what.is_empty() {
                String::new()
            } else {
                format!(" ({})", taskplane_api::text::neutralize(&what))
            };
            eprintln!(
                "task {} {} attempt {}: {}{what} in {:.1}s",
                task.id,
                task.kind,
                task.attempt,
                status.as_str(),
                took.as_secs_f64()
            );
        }
    }

    /// Sends the captured lines not sent yet (kept for the next try if taskd is away).
    async fn ship(&self, task: &LeasedTask, lease: &str, captured: &Mutex<Captured>) {
        let lines = match captured.lock() {
            Ok(mut c) if !c.lines.is_empty() => std::mem::take(&mut c.lines),
            _ => return,
        };
        for chunk in lines.chunks(taskplane_api::MAX_REPORT_LINES) {
            let report = LogReport {
                lease: lease.to_owned(),
                lines: chunk.to_vec(),
            };
            if let Err(error) = self.client.report_logs(task.id, &report).await {
                if retryable(&error)
                    && let Ok(mut c) = captured.lock()
                {
                    let mut back = chunk.to_vec();
                    back.append(&mut c.lines);
                    c.lines = back;
                }
                return;
            }
        }
    }

    /// Reports an ending, again and again while taskd is away and the lease lasts.
    async fn report<F, Fut>(
        &self,
        id: uuid::Uuid,
        expires: Instant,
        send: F,
    ) -> Option<taskplane_api::TaskStatus>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<taskplane_api::ReportAnswer, ApiError>>,
    {
        let mut pause = Duration::from_millis(200);
        loop {
            match send(self.client.clone()).await {
                Ok(answer) => return Some(answer.status),
                Err(error) if retryable(&error) && Instant::now() + pause < expires => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    eprintln!(
                        "task {id}: reporting its end failed: {}",
                        crate::error::describe(&error)
                    );
                    return None;
                }
            }
        }
    }
}

/// When a lease that ends at `at` (taskd's clock) ends here.
fn lease_deadline(at: &chrono::DateTime<chrono::Utc>) -> Instant {
    let left = (*at - chrono::Utc::now()).to_std().unwrap_or_default();
    Instant::now() + left
}

/// A third of the lease left, at most [`MAX_BEAT`] (a cancel reaches a task that fast).
fn beat_every(at: &chrono::DateTime<chrono::Utc>) -> Duration {
    let left = (*at - chrono::Utc::now()).to_std().unwrap_or_default();
    (left / 3).clamp(Duration::from_millis(200), MAX_BEAT)
}

/// Signals and flags without another dependency.
mod signals {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::Notify;

    use crate::error::CliError;

    /// A flag that can be waited on.
    #[derive(Clone, Default)]
    pub struct Flag(Arc<(AtomicBool, Notify)>);

    impl Flag {
        pub fn set(&self) {
            self.0.0.store(true, Ordering::SeqCst);
            self.0.1.notify_waiters();
        }

        pub fn is_set(&self) -> bool {
            self.0.0.load(Ordering::SeqCst)
        }

        pub async fn wait(&self) {
            loop {
                let notified = self.0.1.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.is_set() {
                    return;
                }
                notified.await;
            }
        }
    }

    /// SIGTERM and SIGINT: the first asks for a drain, the second for a hard stop.
    pub struct Stop {
        drain: Flag,
        hard: Flag,
    }

    impl Stop {
        pub fn install() -> Result<Stop, CliError> {
            use tokio::signal::unix::{SignalKind, signal};
            let cannot = |e: std::io::Error| CliError::Other(format!("cannot handle signals: {e}"));
            let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
            let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
            let stop = Stop {
                drain: Flag::default(),
                hard: Flag::default(),
            };
            let (drain, hard) = (stop.drain.clone(), stop.hard.clone());
            tokio::spawn(async move {
                let mut seen = 0;
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    seen += 1;
                    if seen == 1 {
                        drain.set();
                    } else {
                        hard.set();
                    }
                }
            });
            Ok(stop)
        }

        pub fn draining(&self) -> bool {
            self.drain.is_set()
        }

        pub async fn wait_drain(&self) {
            self.drain.wait().await;
        }

        pub async fn wait_hard(&self) {
            self.hard.wait().await;
        }
    }
}
