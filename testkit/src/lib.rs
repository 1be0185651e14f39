//! Test support for the production-mode tests: finds the local PostgreSQL and RabbitMQ,
//! gives each test its own database and vhost, starts a `redis-server` of a test's own, and
//! decides what happens when a service is missing (skip with a message, or fail when
//! `TASKPLANE_REQUIRE_SERVICES=1`, as in CI).

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The admin URL tests create their databases with.
pub fn database_url() -> String {
    std::env::var("TASKPLANE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The RabbitMQ URL (its vhost is replaced per test).
pub fn amqp_url() -> String {
    std::env::var("TASKPLANE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn required() -> bool {
    std::env::var("TASKPLANE_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// `host:port` of a URL like `scheme://user:pass@host:port/path`.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

/// The venv of test tools that `scripts/install-test-tools.sh` makes (`TASKPLANE_VENV`, or
/// `~/.cache/taskplane/venv`).
pub fn tools_venv() -> PathBuf {
    std::env::var("TASKPLANE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/taskplane/venv")
        })
}

/// The venv's `bin` directory when it holds every one of `tools`. Otherwise: fails the test
/// when services are required (CI), or prints why it is skipped and answers `None`.
pub fn venv_tools(test: &str, tools: &[&str]) -> Option<PathBuf> {
    let bin = tools_venv().join("bin");
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !bin.join(tool).exists())
        .collect();
    if missing.is_empty() {
        return Some(bin);
    }
    let message = format!(
        "{test}: {} missing from {} (run scripts/install-test-tools.sh)",
        missing.join(", "),
        bin.display()
    );
    skip(&message);
    None
}

/// Runs a tool a test drives (a linter, a test runner in the venv) and fails the test with
/// its output unless it exits 0.
pub fn check_run(what: &str, command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test cannot run here (`message` says why): fails it when services are required (CI),
/// otherwise says why it is skipped; the caller then returns.
///
/// libtest counts a test that returns as passed, and shows what it printed only when it
/// fails: so the test binary ends with a list of everything it skipped, written to stderr
/// at exit, just below its `test result:` line.
pub fn skip(message: &str) {
    if required() {
        panic!("{message}; TASKPLANE_REQUIRE_SERVICES=1 makes this a failure");
    }
    eprintln!("SKIPPED {message}");
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        // SAFETY: `atexit` stores a plain `extern "C"` function to call once, when the
        // process exits (after libtest's summary); the function only locks a static and
        // writes to stderr, and it never unwinds (errors are ignored, a poisoned lock read).
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(list_skipped);
        }
    }
    skipped.push(message.to_owned());
}

/// What this test binary skipped, for [`list_skipped`].
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Runs at exit: the closing list of skipped tests.
extern "C" fn list_skipped() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = format!(
        "SKIPPED {} test(s) above, counted as passed but not run (scripts/test.sh installs and starts what they need):\n",
        skipped.len()
    );
    for message in skipped.iter() {
        text.push_str(&format!("  - {message}\n"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

/// Whether the services a test needs are up. When they are not: fails the test if services
/// are required, otherwise prints why the test is skipped and answers false.
pub fn services_available(test: &str, postgres: bool, rabbitmq: bool) -> bool {
    let mut missing = Vec::new();
    if postgres && !reachable(&host_port(&database_url(), 5432)) {
        missing.push(format!(
            "PostgreSQL at {}",
            host_port(&database_url(), 5432)
        ));
    }
    if rabbitmq && !reachable(&host_port(&amqp_url(), 5672)) {
        missing.push(format!("RabbitMQ at {}", host_port(&amqp_url(), 5672)));
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: {} not reachable (start them with scripts/services.sh)",
        missing.join(" and ")
    );
    skip(&message);
    false
}

fn unique_name() -> String {
    format!("tp_{}", uuid::Uuid::now_v7().simple())
}

/// A database of its own for one test, dropped with it.
pub struct TempDatabase {
    pub url: String,
    name: String,
}

impl TempDatabase {
    pub fn create() -> TempDatabase {
        let name = unique_name();
        psql(&format!("CREATE DATABASE {name}"));
        let admin = database_url();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TempDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl TempDatabase {
    /// Makes the database refuse writes (`default_transaction_read_only`, as on a standby)
    /// or take them again, and ends its open sessions so every connection sees it.
    pub fn set_read_only(&self, read_only: bool) {
        let setting = if read_only {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        psql(&format!("ALTER DATABASE {} {setting}", self.name));
        psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        ));
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &database_url(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(statement: &str) {
    let output = Command::new("psql")
        .args([&database_url(), "-v", "ON_ERROR_STOP=1", "-qc", statement])
        .output()
        .expect("psql (the PostgreSQL client) must be installed");
    assert!(
        output.status.success(),
        "psql {statement}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A RabbitMQ vhost of its own for one test (its queues go with it).
pub struct TempVhost {
    pub url: String,
    name: String,
}

impl TempVhost {
    pub fn create() -> TempVhost {
        let name = unique_name();
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let base = amqp_url();
        let base = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(base, _)| base)
            .to_owned();
        TempVhost {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// `rabbitmqctl list_queues` for this vhost: (queue, messages ready + unacked, consumers).
    pub fn queues(&self) -> Vec<(String, u64, u64)> {
        let out = rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "-q",
            "--no-table-headers",
            "name",
            "messages",
            "consumers",
        ]);
        out.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some((
                    parts.next()?.to_owned(),
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for TempVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Runs `rabbitmqctl` and returns its stdout.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed beside RabbitMQ");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `redis-server` of one test's own (Debian's `redis-server` package): a free port on
/// 127.0.0.1, a password, its files in a directory of its own; killed when dropped.
pub struct TempRedis {
    /// `redis://:password@127.0.0.1:port/0`
    pub url: String,
    pub port: u16,
    password: String,
    dir: PathBuf,
    aof: bool,
    /// Serving TLS only, with a certificate for `localhost` signed by [`TempRedis::ca`].
    tls: bool,
    server: Option<Child>,
}

impl TempRedis {
    /// Starts a server, keeping its data in an append-only file (`appendfsync always`) when
    /// `aof`, or in memory only. `None` when `redis-server` is not installed (skipped, or a
    /// failure when services are required).
    pub fn start(test: &str, aof: bool) -> Option<TempRedis> {
        TempRedis::launch_new(test, aof, false)
    }

    /// Starts a server that speaks TLS only (`rediss://…@localhost:port/0`), its certificate
    /// signed by a CA of its own ([`TempRedis::ca`]; made with `openssl`).
    pub fn start_tls(test: &str) -> Option<TempRedis> {
        TempRedis::launch_new(test, false, true)
    }

    /// The CA file that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn launch_new(test: &str, aof: bool, tls: bool) -> Option<TempRedis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !installed {
            skip(&format!(
                "{test}: redis-server is not installed (scripts/install-test-tools.sh installs it)"
            ));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("taskplane-redis-{}", unique_name()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let password = format!("pw{}", &unique_name()[3..15]);
        let url = if tls {
            private_ca(&dir);
            format!("rediss://:{password}@localhost:{port}/0")
        } else {
            format!("redis://:{password}@127.0.0.1:{port}/0")
        };
        let mut redis = TempRedis {
            url,
            port,
            password,
            dir,
            aof,
            tls,
            server: None,
        };
        redis.launch();
        Some(redis)
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let appendonly = if self.aof { "yes" } else { "no" };
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log file");
        let mut command = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ]);
        } else {
            command.args(["--port", &port]);
        }
        let server = command
            .args([
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir,
                "--requirepass",
                &self.password,
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
            ])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.server = Some(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a command with `redis-cli` and answers its output (empty when it fails).
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut command = Command::new("redis-cli");
        if self.tls {
            command.args(["--tls", "--cacert"]).arg(self.ca());
        }
        command
            .args(["-p", &port, "-a", &self.password, "--no-auth-warning"])
            .args(args)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts the server again on the same port and files (what it kept, it loads).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

/// Makes a private CA and a certificate for `localhost` / 127.0.0.1 signed by it in `dir`
/// (with `openssl`), and answers the paths of the CA, the certificate and its key.
pub fn private_ca(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Taskplane test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write the extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_ports_come_from_urls() {
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:5432/test", 5432),
            "127.0.0.1:5432"
        );
        assert_eq!(
            host_port("amqp://guest:guest@localhost/%2f", 5672),
            "localhost:5672"
        );
    }
}
