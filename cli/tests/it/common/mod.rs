//! A hermetic harness for end-to-end tests: every test gets its own temp dir, a real `taskd`
//! on a random port, and runs the real `taskctl` with a clean environment.

#![allow(dead_code)]

pub mod tmux;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use taskplane_testkit::{TempDatabase, TempVhost, services_available};

/// The `taskd` binary, built beside `taskctl` by `cargo test --workspace`.
pub fn taskd_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_taskctl")).with_file_name("taskd");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so taskd is built",
        path.display()
    );
    path
}

/// Waits for `check` to hold, polling, and fails the test with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A running taskd.
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `taskd` in `dir` on its own SQLite file, with `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_env(dir, extra, &[])
    }

    /// [`Daemon::start`] with these variables added to its clean environment.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, OsString)]) -> Daemon {
        let db = format!("sqlite://{}", dir.join("taskd.db").display());
        let mut args = vec!["--listen", "127.0.0.1:0", "--database", db.as_str()];
        args.extend_from_slice(extra);
        Daemon::start_with_env(dir, &args, env)
    }

    /// Starts `taskd` with exactly these arguments.
    pub fn start_with(dir: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, args, &[])
    }

    /// Starts `taskd` with exactly these arguments and these variables added to its clean
    /// environment (a PATH here replaces the test's own).
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, OsString)]) -> Daemon {
        Daemon::start_program(dir, &taskd_bin(), args, env)
    }

    /// Starts `program` (taskd, or a wrapper such as `setpriv … taskd`) with these arguments
    /// and variables added to its clean environment.
    pub fn start_program(
        dir: &Path,
        program: &Path,
        args: &[&str],
        env: &[(&str, OsString)],
    ) -> Daemon {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start taskd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    // Text or JSON logs: the address is the run of host:port characters.
                    let addr: String = line[at + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')
                        })
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("taskd did not start listening; its log:\n{log}");
            }
        };
        Daemon {
            child: Some(child),
            url: format!("http://{addr}"),
            addr,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "taskd did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `taskctl` against this daemon.
    pub fn taskctl(&self, args: &[&str]) -> Run {
        taskctl(&self.url, args)
    }

    /// `taskctl submit KIND --max-attempts 1 --wait -o json REST…`: one attempt, waited for.
    pub fn submit_once(&self, kind: &str, rest: &[&str]) -> Run {
        let mut args = vec![
            "submit",
            kind,
            "--max-attempts",
            "1",
            "--wait",
            "-o",
            "json",
        ];
        args.extend_from_slice(rest);
        self.taskctl(&args)
    }

    /// `taskctl submit shell --max-attempts 1 --wait -o json -- sh -c SCRIPT`.
    pub fn shell_wait(&self, script: &str) -> Run {
        self.submit_once("shell", &["--", "sh", "-c", script])
    }

    /// Starts `taskctl` in the background.
    pub fn taskctl_spawn(&self, args: &[&str]) -> Child {
        taskctl_command(&self.url, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start taskctl")
    }

    /// One raw HTTP request, for inputs the typed client would never send.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        raw_http(&self.addr, method, path, body, None)
    }

    /// A raw HTTP request with one extra header.
    pub fn http_with_header(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: (&str, &str),
    ) -> (u16, Value) {
        raw_http(&self.addr, method, path, body, Some(header))
    }

    pub fn task(&self, id: &str) -> Value {
        let (status, task) = self.http("GET", &format!("/api/v1/tasks/{id}"), b"");
        assert_eq!(status, 200, "{task}");
        task
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The outcome of one taskctl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts exit 0 and returns stdout, trimmed.
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stdout.trim().to_owned()
    }

    /// Asserts the exit code and exactly one line on stderr; returns that line.
    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0].to_owned()
    }
}

/// The `taskctl` command with a clean environment pointed at `url`, not yet started.
pub fn taskctl_command(url: &str, args: &[&str]) -> Command {
    let home = std::env::temp_dir().join(format!("taskctl-home-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&home);
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskctl"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("TASKCTL_SERVER", url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Runs `taskctl` with a clean environment pointed at `url`. A run that takes longer than
/// two minutes fails the test instead of hanging it.
pub fn taskctl(url: &str, args: &[&str]) -> Run {
    let child = taskctl_command(url, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskctl");
    wait_child(child, Duration::from_secs(120))
}

/// Runs `taskctl` like [`taskctl`], in `cwd`, with these variables added to its clean
/// environment (a PATH here replaces the test's own).
pub fn taskctl_env(url: &str, args: &[&str], cwd: &Path, env: &[(&str, OsString)]) -> Run {
    let child = taskctl_command(url, args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskctl");
    wait_child(child, Duration::from_secs(120))
}

/// Waits for a background taskctl with a deadline, reading its output meanwhile (so a large
/// output cannot fill the pipe and stall it).
/// A child's output read on a thread of its own, so a test waits for a line with a deadline
/// instead of blocking on the pipe for good.
pub struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    pub fn of(pipe: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, or a failure after `timeout` (or when the pipe closed first).
    pub fn next(&self, timeout: Duration) -> String {
        self.0
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line within {timeout:?}: {e}"))
    }

    /// Every line until the pipe closes, or a failure after `timeout`.
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the output did not end within {timeout:?}: {lines:?}")
                }
            }
        }
    }
}

pub fn wait_child(mut child: Child, timeout: Duration) -> Run {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("taskctl did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A minimal HTTP/1.1 request over a fresh connection.
pub fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    header: Option<(&str, &str)>,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = header.into_iter().collect();
    let (status, _, json) = raw_http_full(addr, method, path, body, &headers);
    (status, json)
}

/// A raw HTTP request with any extra headers; answers the status, the response's header
/// block (lower-cased) and its body as JSON (or a JSON string when it is not JSON).
pub fn raw_http_full(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut all = vec![("Host", addr), ("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    raw_request(addr, method, path, &all, body)
}

/// An HTTP/1.1 request with exactly these headers (and `Content-Length`, `Connection:
/// close`): for requests a client would never make, such as a foreign `Host`.
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect to taskd");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, head.to_ascii_lowercase(), json)
}

impl Daemon {
    /// Every task, paging through the API.
    pub fn all_tasks(&self) -> Vec<Value> {
        let run = self.taskctl(&["list", "--limit", "1000000", "-o", "json"]);
        run.json()["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// How many tasks are in `status`.
    pub fn count(&self, status: &str) -> usize {
        let run = self.taskctl(&[
            "list", "--status", status, "--limit", "1000000", "-o", "json",
        ]);
        run.json()["tasks"].as_array().map_or(0, Vec::len)
    }

    /// Submits tasks through the batch endpoint; returns their ids.
    pub fn submit_batch(&self, tasks: &[Value]) -> Vec<String> {
        let mut ids = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(1000) {
            let body = serde_json::to_vec(&serde_json::json!({ "tasks": chunk })).expect("encode");
            let (status, answer) = self.http("POST", "/api/v1/tasks/batch", &body);
            assert_eq!(status, 201, "{answer}");
            ids.extend(
                answer["tasks"]
                    .as_array()
                    .expect("tasks")
                    .iter()
                    .map(|t| t["id"].as_str().expect("id").to_owned()),
            );
        }
        ids
    }

    /// The HTTP status of `/ready`.
    pub fn ready(&self) -> u16 {
        self.http("GET", "/ready", b"").0
    }
}

/// A time from the API (RFC 3339), to compare: as text, `…:08Z` sorts after `…:08.001Z`.
pub fn instant(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Which platform a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One `taskd` on SQLite.
    Embedded,
    /// `taskd --role api` and `--role worker` on PostgreSQL and RabbitMQ.
    Production,
}

/// A running platform: the API to talk to and the process that runs the worker (the same
/// process when embedded).
pub struct Platform {
    pub backend: Backend,
    api: Option<Daemon>,
    worker: Option<Daemon>,
    pub dir: tempfile::TempDir,
    pub db: Option<TempDatabase>,
    pub vhost: Option<TempVhost>,
    api_flags: Vec<String>,
}

impl Platform {
    /// Starts the platform, or `None` when its services are missing (and not required).
    pub fn start(
        backend: Backend,
        test: &str,
        api_flags: &[&str],
        worker_flags: &[&str],
    ) -> Option<Platform> {
        let mut platform = Platform::empty(backend, test)?;
        platform.api_flags = api_flags.iter().map(|f| f.to_string()).collect();
        if backend == Backend::Production {
            platform.api = Some(platform.spawn("api", api_flags));
        }
        platform.start_worker(worker_flags);
        // Ready when the API lists the worker: a `submit --wait` sooner would rightly warn
        // that no live worker consumes its queue.
        wait_until(
            "the worker's first heartbeat",
            Duration::from_secs(30),
            || {
                let (status, list) = platform.api().http("GET", "/api/v1/workers", b"");
                status != 200 || list["workers"].as_array().is_some_and(|w| !w.is_empty())
            },
        );
        Some(platform)
    }

    /// The platform's storage (and, in production, its database and vhost) with no process
    /// started yet.
    pub fn empty(backend: Backend, test: &str) -> Option<Platform> {
        let mut platform = Platform {
            backend,
            api: None,
            worker: None,
            dir: tempfile::tempdir().expect("temp dir"),
            db: None,
            vhost: None,
            api_flags: Vec::new(),
        };
        if backend == Backend::Production {
            if !services_available(test, true, true) {
                return None;
            }
            platform.db = Some(TempDatabase::create());
            platform.vhost = Some(TempVhost::create());
        }
        Some(platform)
    }

    /// Starts a process with `role` on this platform's database and broker.
    pub fn spawn(&self, role: &str, flags: &[&str]) -> Daemon {
        let broker = if self.vhost.is_some() { "amqp" } else { "db" };
        self.spawn_with_broker(role, broker, flags)
    }

    /// Starts a process with `role` on this platform's database and the given broker:
    /// `amqp` (this platform's vhost), a `redis://` URL, or `db`.
    pub fn spawn_with_broker(&self, role: &str, broker: &str, flags: &[&str]) -> Daemon {
        self.spawn_with_env(role, broker, flags, &[])
    }

    /// [`Platform::spawn_with_broker`] with these variables added to its environment.
    pub fn spawn_with_env(
        &self,
        role: &str,
        broker: &str,
        flags: &[&str],
        env: &[(&str, OsString)],
    ) -> Daemon {
        let database = match &self.db {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("taskd.db").display()),
        };
        let broker = match (&self.vhost, broker) {
            (Some(vhost), "amqp") => vhost.url.clone(),
            (_, url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                url.to_owned()
            }
            _ => "db".to_owned(),
        };
        let mut args = vec![
            "--role",
            role,
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--broker",
            &broker,
        ];
        args.extend_from_slice(flags);
        Daemon::start_with_env(self.dir.path(), &args, env)
    }

    /// Starts (again) the process that runs the worker, with these flags.
    pub fn start_worker(&mut self, flags: &[&str]) {
        match self.backend {
            Backend::Production => self.worker = Some(self.spawn("worker", flags)),
            Backend::Embedded => {
                // One process takes both sets of flags; a switch given to both counts once.
                let mut all: Vec<&str> = flags.to_vec();
                for flag in &self.api_flags {
                    if !flags.contains(&flag.as_str()) {
                        all.push(flag);
                    }
                }
                self.worker = Some(self.spawn("all", &all));
            }
        }
    }

    /// The API to talk to.
    pub fn api(&self) -> &Daemon {
        self.api
            .as_ref()
            .or(self.worker.as_ref())
            .expect("a running API")
    }

    /// The process that runs the worker.
    pub fn worker(&mut self) -> &mut Daemon {
        self.worker.as_mut().expect("a running worker")
    }

    /// Whether the API survives the worker's exit (it does only in production).
    pub fn api_outlives_worker(&self) -> bool {
        self.api.is_some()
    }
}

/// A Server-Sent Events subscription read on a thread: each data line arrives with the wall
/// clock time it was read.
pub struct EventTail {
    rx: std::sync::mpsc::Receiver<(std::time::SystemTime, Value)>,
    stream: TcpStream,
}

impl EventTail {
    /// Subscribes to `/api/v1/events` (resuming after `last_seq` when given) and returns once
    /// the server has answered, so every later change is seen.
    pub fn open(daemon: &Daemon, query: &str, last_seq: Option<i64>) -> EventTail {
        let mut stream = TcpStream::connect(&daemon.addr).expect("connect");
        let resume = last_seq
            .map(|seq| format!("Last-Event-ID: {seq}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /api/v1/events{query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
            daemon.addr
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "events answered {status}");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("header");
            if header.trim().is_empty() {
                break;
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                // Chunked framing lines (sizes) and SSE fields other than data are skipped.
                if let Some(data) = line.strip_prefix("data: ")
                    && let Ok(value) = serde_json::from_str(data)
                    && tx.send((std::time::SystemTime::now(), value)).is_err()
                {
                    break;
                }
            }
        });
        EventTail { rx, stream }
    }

    /// The next event, or a failure after `timeout`.
    pub fn next(&self, timeout: Duration) -> (std::time::SystemTime, Value) {
        use std::sync::mpsc::RecvTimeoutError;
        self.rx.recv_timeout(timeout).unwrap_or_else(|e| match e {
            RecvTimeoutError::Timeout => panic!("no event within {timeout:?}"),
            RecvTimeoutError::Disconnected => {
                panic!("the event stream ended (the server closed it)")
            }
        })
    }

    /// Events until `done` says the last one completes the set, as [`EventTail::until`],
    /// but a stream the server cuts (the documented answer to a client that fell a whole
    /// buffer behind) is opened again after the last event seen, with Last-Event-ID, as
    /// taskctl does. Answers the events and how many times it resumed.
    pub fn until_resuming(
        mut self,
        daemon: &Daemon,
        query: &str,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> (Vec<(std::time::SystemTime, Value)>, usize) {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = Instant::now() + timeout;
        let mut events: Vec<(std::time::SystemTime, Value)> = Vec::new();
        let mut resumes = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(event) => {
                    let finished = done(&event.1);
                    events.push(event);
                    if finished {
                        return (events, resumes);
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no event within {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    resumes += 1;
                    assert!(resumes <= 10, "the event stream was cut {resumes} times");
                    let last = events.last().and_then(|(_, e)| e["seq"].as_i64());
                    self = EventTail::open(daemon, query, last);
                }
            }
        }
    }

    /// Events until `done` says the last one completes the set.
    pub fn until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Vec<(std::time::SystemTime, Value)> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next(left.max(Duration::from_millis(1)));
            let finished = done(&event.1);
            events.push(event);
            if finished {
                return events;
            }
        }
    }
}

impl Drop for EventTail {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Runs each named test function (`fn(Backend)`) once per backend, as `embedded::NAME` and
/// `production::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::Embedded);
                }
            )*
        }
        mod production {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::Production);
                }
            )*
        }
    };
}
