//! The `http` kind's hardening, end to end: a real taskd, real `taskctl`, and small real HTTP
//! servers on loopback addresses (all of 127.0.0.0/8 is usable on Linux, so 127.0.0.2 plays
//! an allowed host and 127.0.0.1 a refused one).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Daemon;
use serde_json::{Value, json};

/// What a test server answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body.
    Body(&'static str),
    /// 302 to this location (`{self}` is replaced by the server's own address).
    Redirect(String),
    /// 200 with a body of this many bytes, written as fast as the client reads.
    Stream(u64),
    /// Reads the request and never answers.
    Silence,
}

/// A one-route HTTP/1.1 server on a thread; it records the request line of every request.
struct Server {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    /// Connections held open by [`Answer::Silence`], closed when the server is dropped.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Server {
    /// Listens on `ip` (e.g. `127.0.0.2` or `[::1]`), or `None` when it cannot.
    fn try_start(ip: &str, answer: Answer) -> Option<Server> {
        let listener = TcpListener::bind(format!("{ip}:0")).ok()?;
        let addr = listener.local_addr().ok()?.to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (log, hold, own) = (requests.clone(), held.clone(), addr.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (log, hold, own, answer) =
                    (log.clone(), hold.clone(), own.clone(), answer.clone());
                std::thread::spawn(move || serve(stream, &answer, &own, &log, &hold));
            }
        });
        Some(Server {
            addr,
            requests,
            held,
        })
    }

    fn start(ip: &str, answer: Answer) -> Server {
        Server::try_start(ip, answer).unwrap_or_else(|| panic!("cannot listen on {ip}"))
    }

    fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            for stream in held.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn serve(
    stream: TcpStream,
    answer: &Answer,
    own: &str,
    log: &Mutex<Vec<String>>,
    held: &Mutex<Vec<TcpStream>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => head.push(line.trim_end().to_owned()),
        }
    }
    if let Ok(mut log) = log.lock() {
        log.push(head.first().cloned().unwrap_or_default());
    }
    let mut stream = stream;
    // Write errors mean the client went away, which several tests expect.
    let _ = match answer {
        Answer::Body(body) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Answer::Redirect(location) => write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            location.replace("{self}", own)
        ),
        Answer::Stream(total) => stream_body(&mut stream, *total),
        Answer::Silence => {
            if let Ok(mut held) = held.lock() {
                held.push(stream);
            }
            Ok(())
        }
    };
}

fn stream_body(stream: &mut TcpStream, total: u64) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        stream.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    Ok(())
}

fn taskd(flags: &[&str]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(dir.path(), flags);
    (dir, daemon)
}

/// Submits an http task for `url` (one attempt, `timeout`) and waits for it; answers the
/// taskctl exit code and the finished task.
fn run_http(daemon: &Daemon, url: &str, timeout: &str) -> (i32, Value) {
    let param = format!("url={url}");
    let run = daemon.taskctl(&[
        "submit",
        "http",
        "-p",
        &param,
        "--max-attempts",
        "1",
        "--timeout",
        timeout,
        "--wait",
        "-o",
        "json",
    ]);
    (run.code, run.json())
}

fn last_error(task: &Value) -> &str {
    task["last_error"].as_str().unwrap_or_default()
}

/// The task failed because the address policy refused `addr`, and the error says how to
/// allow it.
fn assert_refused(code: i32, task: &Value, addr: &str) {
    assert_eq!((code, &task["status"]), (3, &json!("failed")), "{task}");
    let error = last_error(task);
    assert!(
        error.contains("refused")
            && error.contains(addr)
            && error.contains("--http-allow-cidr")
            && error.contains("--http-allow-private"),
        "{task}"
    );
    assert!(task["result"].is_null(), "{task}");
}

fn assert_answered(code: i32, task: &Value, body: &str) {
    assert_eq!((code, &task["status"]), (0, &json!("succeeded")), "{task}");
    assert_eq!(task["result"]["body"], body, "{task}");
}

#[test]
fn default_taskd_refuses_internal_addresses_before_connecting() {
    let (_dir, daemon) = taskd(&[]);
    let local = Server::start("127.0.0.1", Answer::Body("internal secret"));
    let port = local.port();
    let cases = [
        (format!("http://127.0.0.1:{port}/"), "127.0.0.1"),
        (format!("http://localhost:{port}/"), "localhost resolves to"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "::ffff:127.0.0.1",
        ),
        (format!("http://2130706433:{port}/"), "127.0.0.1"),
        // Nothing listens there: refused before any packet leaves.
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254",
        ),
        ("http://[fd00:ec2::254]/".into(), "fd00:ec2::254"),
        ("http://10.0.0.1/".into(), "10.0.0.1"),
    ];
    for (url, named) in &cases {
        let (code, task) = run_http(&daemon, url, "30s");
        assert_refused(code, &task, named);
    }
    let v6 = Server::try_start("[::1]", Answer::Body("internal secret"));
    if let Some(v6) = &v6 {
        let (code, task) = run_http(&daemon, &format!("http://[::1]:{}/", v6.port()), "30s");
        assert_refused(code, &task, "::1");
        assert!(v6.requests().is_empty(), "{:?}", v6.requests());
    }
    assert!(
        local.requests().is_empty(),
        "no request reached the refused server: {:?}",
        local.requests()
    );
}

#[test]
fn the_allow_flags_let_internal_addresses_through() {
    let local = Server::start("127.0.0.1", Answer::Body("internal hello"));
    let port = local.port();
    let (_dir, daemon) = taskd(&["--http-allow-cidr", "127.0.0.1/32"]);
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let (code, task) = run_http(&daemon, &url, "30s");
        assert_answered(code, &task, "internal hello");
    }
    assert_eq!(local.requests().len(), 3, "{:?}", local.requests());
    // The list opens only what it names.
    let (code, task) = run_http(&daemon, "http://169.254.169.254/", "30s");
    assert_refused(code, &task, "169.254.169.254");
    drop(daemon);

    // --http-allow-private, here through its variable, opens everything.
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start_env(
        dir.path(),
        &[],
        &[("TASKD_HTTP_ALLOW_PRIVATE", "true".into())],
    );
    let (code, task) = run_http(&daemon, &format!("http://127.0.0.1:{port}/"), "30s");
    assert_answered(code, &task, "internal hello");
    if let Some(v6) = Server::try_start("[::1]", Answer::Body("v6 hello")) {
        let (code, task) = run_http(&daemon, &format!("http://[::1]:{}/", v6.port()), "30s");
        assert_answered(code, &task, "v6 hello");
    }
    drop(daemon);

    // TASKD_HTTP_ALLOW_CIDRS is the list's variable.
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start_env(
        dir.path(),
        &[],
        &[("TASKD_HTTP_ALLOW_CIDRS", "10.0.0.0/8,127.0.0.0/8".into())],
    );
    let (code, task) = run_http(&daemon, &format!("http://127.0.0.1:{port}/"), "30s");
    assert_answered(code, &task, "internal hello");
}

#[test]
fn every_redirect_is_checked_against_the_policy() {
    let secret = Server::start("127.0.0.1", Answer::Body("internal secret"));
    let to_literal = Server::start(
        "127.0.0.2",
        Answer::Redirect(format!("http://127.0.0.1:{}/", secret.port())),
    );
    let to_name = Server::start(
        "127.0.0.2",
        Answer::Redirect(format!("http://localhost:{}/", secret.port())),
    );
    let final_hop = Server::start("127.0.0.2", Answer::Body("allowed hello"));
    let to_allowed = Server::start(
        "127.0.0.2",
        Answer::Redirect(format!("http://{}/", final_hop.addr)),
    );
    let a_loop = Server::start("127.0.0.2", Answer::Redirect("http://{self}/again".into()));
    let (_dir, daemon) = taskd(&["--http-allow-cidr", "127.0.0.2/32"]);

    let (code, task) = run_http(&daemon, &format!("http://{}/", to_literal.addr), "30s");
    assert_refused(code, &task, "127.0.0.1");
    assert!(last_error(&task).contains("redirected to"), "{task}");
    let (code, task) = run_http(&daemon, &format!("http://{}/", to_name.addr), "30s");
    // The name is checked where it resolves; the refusal names it.
    assert_refused(code, &task, "localhost resolves to");
    assert!(
        secret.requests().is_empty(),
        "no redirect reached the refused server: {:?}",
        secret.requests()
    );
    assert_eq!(to_literal.requests().len(), 1);

    let (code, task) = run_http(&daemon, &format!("http://{}/", to_allowed.addr), "30s");
    assert_answered(code, &task, "allowed hello");

    let (code, task) = run_http(&daemon, &format!("http://{}/", a_loop.addr), "30s");
    assert_eq!(code, 3, "{task}");
    assert!(
        last_error(&task).contains("more than 5 redirects"),
        "{task}"
    );
    assert_eq!(
        a_loop.requests().len(),
        6,
        "the first request and 5 redirects"
    );
}

#[test]
fn headers_that_frame_the_request_are_refused_at_submit() {
    let (_dir, daemon) = taskd(&[]);
    for (header, value) in [
        ("Host", "metadata.internal"),
        ("Transfer-Encoding", "chunked"),
        ("X-Evil", "a\r\nHost: metadata.internal"),
    ] {
        let headers = format!("headers:={}", json!({ header: value }));
        let run = daemon.taskctl(&[
            "submit",
            "http",
            "-p",
            "url=http://example.com/",
            "-p",
            &headers,
        ]);
        let line = run.fails_with(1);
        assert!(line.contains(header) && line.contains("http:"), "{line}");

        let body = json!({
            "kind": "http",
            "payload": {"url": "http://example.com/", "headers": {header: value}},
        });
        let (status, answer) = daemon.http(
            "POST",
            "/api/v1/tasks",
            &serde_json::to_vec(&body).expect("json"),
        );
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_payload", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(header), "{answer}");
    }
    assert!(daemon.all_tasks().is_empty(), "nothing was queued");
}

/// The most memory the process has held, from /proc (kB).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_huge_answer_is_cut_at_the_kept_bytes() {
    const TOTAL: u64 = 400 * 1024 * 1024;
    let huge = Server::start("127.0.0.1", Answer::Stream(TOTAL));
    let (_dir, daemon) = taskd(&["--http-allow-cidr", "127.0.0.1/32"]);
    let (code, task) = run_http(&daemon, &format!("http://{}/", huge.addr), "60s");
    assert_eq!((code, &task["status"]), (0, &json!("succeeded")), "{task}");
    assert_eq!(task["result"]["truncated"], true, "{task}");
    let kept = task["result"]["body"].as_str().expect("a body excerpt");
    assert_eq!(kept.len(), 4096, "the result keeps 4 KiB");
    let peak = peak_rss_kib(daemon.pid());
    assert!(
        peak < 100 * 1024,
        "taskd peaked at {peak} kB reading a 400 MiB answer"
    );
}

#[test]
fn a_server_that_never_answers_fails_at_the_task_timeout() {
    let silent = Server::start("127.0.0.1", Answer::Silence);
    let (_dir, daemon) = taskd(&["--http-allow-cidr", "127.0.0.1/32"]);
    let (code, task) = run_http(&daemon, &format!("http://{}/", silent.addr), "2s");
    assert_eq!((code, &task["status"]), (3, &json!("failed")), "{task}");
    assert_eq!(last_error(&task), "timed out after 2s", "{task}");
    assert_eq!(silent.requests().len(), 1, "the request was sent");
}
