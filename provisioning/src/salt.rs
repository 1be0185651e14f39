//! SaltStack: the argv of `salt-call --local`, `salt` and `salt-ssh` runs (pure), the minion
//! configuration of a masterless run, and the parser that turns `--out=json` state results
//! into per-host summaries.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use taskplane_api::kinds::{SaltAction, SaltMode, SaltPayload};

use crate::runner::{self, Invocation, RunError, StdoutMode, Stream};

/// How to get Salt when it is missing.
pub const INSTALL_HINT: &str =
    "install Salt with `pip install salt==3008.3` (or your distribution's salt packages)";

/// Why a Salt run could not give results.
#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    /// The request itself is wrong (checked before anything runs).
    #[error("{0}")]
    Invalid(String),
    /// The program is missing or could not start.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The temporary minion configuration could not be written.
    #[error("cannot prepare the minion configuration: {0}")]
    Config(std::io::Error),
    /// Salt ended without a result we can read.
    #[error("{program} {what}")]
    NoResult { program: String, what: String },
}

/// The program a mode runs.
pub fn program(mode: SaltMode) -> &'static str {
    match mode {
        SaltMode::Local => "salt-call",
        SaltMode::Master => "salt",
        SaltMode::Ssh => "salt-ssh",
    }
}

/// Checks a request before anything runs: names that reach argv cannot pose as options.
pub fn validate(payload: &SaltPayload) -> Result<(), SaltError> {
    let invalid = |m: String| Err(SaltError::Invalid(m));
    if let Some(target) = &payload.target
        && (target.is_empty() || target.starts_with('-'))
    {
        return invalid(format!("salt: '{target}' is not a target"));
    }
    if let Some(state) = &payload.state {
        let ok = !state.is_empty()
            && !state.starts_with('-')
            && state
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ','));
        if !ok {
            return invalid(format!(
                "salt: '{state}' is not a state name (letters, digits, '_', '.', '-', commas between states)"
            ));
        }
    }
    if payload.mode != SaltMode::Local
        && (payload.file_root.is_some() || payload.pillar_root.is_some())
    {
        return invalid(
            "salt: file_root and pillar_root only apply to local (masterless) runs".to_owned(),
        );
    }
    if payload.mode == SaltMode::Local
        && payload.action == SaltAction::Apply
        && payload.file_root.is_none()
    {
        return invalid("salt: a local apply needs file_root, the state tree".to_owned());
    }
    if payload.action == SaltAction::Ping && (payload.state.is_some() || payload.test) {
        return invalid("salt: ping takes no state and no test flag".to_owned());
    }
    Ok(())
}

/// The command line of a run. `config_dir` is the minion configuration directory of a local
/// run (see [`minion_config`]).
pub fn invocation(payload: &SaltPayload, config_dir: Option<&Path>) -> Invocation {
    let mut inv = Invocation::new(program(payload.mode));
    match payload.mode {
        SaltMode::Local => {
            inv = inv.arg("--local");
            if let Some(dir) = config_dir {
                inv = inv.arg("--config-dir").arg(dir.as_os_str());
            }
            inv = inv.args(["--out", "json", "--retcode-passthrough"]);
        }
        SaltMode::Master | SaltMode::Ssh => {
            let target = payload.target.as_deref().unwrap_or("*");
            // --static: one JSON document once every minion answered, not one per minion.
            inv = inv.arg(target).args(["--out", "json", "--static"]);
        }
    }
    match payload.action {
        SaltAction::Ping => inv.arg("test.ping"),
        SaltAction::Apply => {
            inv = inv.arg("state.apply");
            if let Some(state) = &payload.state {
                inv = inv.arg(state.as_str());
            }
            if payload.test {
                inv = inv.arg("test=True");
            }
            if !payload.pillar.is_empty() {
                // Salt reads keyword arguments as YAML, and JSON is YAML.
                let pillar = Value::Object(payload.pillar.clone());
                inv = inv.arg(OsString::from(format!("pillar={pillar}")));
            }
            inv
        }
    }
}

/// The minion configuration of a masterless run whose state (cache, keys, logs) lives under
/// `dir`, so it needs no root-owned directories and leaves nothing behind.
pub fn minion_config(file_root: &Path, pillar_root: Option<&Path>, dir: &Path) -> String {
    let quote = |p: &Path| Value::String(p.display().to_string()).to_string();
    let mut config = format!(
        "file_client: local\n\
         id: {id}\n\
         root_dir: {root}\n\
         pki_dir: {pki}\n\
         cachedir: {cache}\n\
         sock_dir: {sock}\n\
         log_file: {log}\n\
         file_roots:\n  base:\n    - {files}\n",
        id = quote(Path::new(&local_id())),
        root = quote(dir),
        pki = quote(&dir.join("pki")),
        cache = quote(&dir.join("cache")),
        sock = quote(&dir.join("sock")),
        log = quote(&dir.join("minion.log")),
        files = quote(file_root),
    );
    if let Some(pillar) = pillar_root {
        config.push_str(&format!(
            "pillar_roots:\n  base:\n    - {}\n",
            quote(pillar)
        ));
    }
    config
}

/// This host's name, the minion id of a local run (what `top.sls` matches).
fn local_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The outcome of one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateStatus {
    /// Already as asked.
    Ok,
    /// Changed (or, in a test run, would change).
    Changed,
    Failed,
}

/// One state's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateOutcome {
    /// The state id in the SLS file.
    pub id: String,
    pub sls: String,
    /// `file.managed`, `pkg.installed`, …
    pub function: String,
    pub name: String,
    pub status: StateStatus,
    pub comment: String,
    pub duration_ms: f64,
    pub changes: Value,
}

/// One host's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    pub host: String,
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub duration_ms: f64,
    /// Errors that stopped the host before its states ran (render errors, no answer).
    pub errors: Vec<String>,
    pub states: Vec<StateOutcome>,
}

impl HostReport {
    pub fn succeeded(&self) -> bool {
        self.failed == 0 && self.errors.is_empty()
    }
}

/// The results of a `state.apply`, host by host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyReport {
    pub test: bool,
    pub hosts: Vec<HostReport>,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        !self.hosts.is_empty() && self.hosts.iter().all(HostReport::succeeded)
    }

    /// "2 hosts: 1 failed (web1: pkg_|-nginx…)" style one-liner for task errors.
    pub fn failure_summary(&self) -> String {
        let mut parts = Vec::new();
        for host in self.hosts.iter().filter(|h| !h.succeeded()) {
            let mut what: Vec<String> = host.errors.iter().map(|e| brief(e)).collect();
            what.extend(
                host.states
                    .iter()
                    .filter(|s| s.status == StateStatus::Failed)
                    .map(|s| format!("{} ({}): {}", s.id, s.function, brief(&s.comment))),
            );
            parts.push(format!("{}: {}", host.host, what.join("; ")));
        }
        if parts.is_empty() {
            "no host returned results".to_owned()
        } else {
            format!("failed states on {}", parts.join(" | "))
        }
    }
}

/// A comment or error cut to one line for a one-line message: from a traceback, the line
/// naming the exception; otherwise the first line; at most 200 characters.
pub fn brief(comment: &str) -> String {
    let mut lines = comment.lines().map(str::trim).filter(|l| !l.is_empty());
    let exception = comment
        .contains("Traceback (most recent call last)")
        .then(|| {
            comment.lines().map(str::trim).rev().find(|l| {
                l.split_once(": ").is_some_and(|(head, _)| {
                    !head.contains(' ') && (head.ends_with("Error") || head.ends_with("Exception"))
                })
            })
        })
        .flatten();
    let line = exception.or_else(|| lines.next()).unwrap_or_default();
    if line.chars().count() > 200 {
        let cut: String = line.chars().take(199).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// `test.ping` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PingReport {
    pub hosts: Vec<PingHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PingHost {
    pub host: String,
    pub responding: bool,
}

impl PingReport {
    pub fn succeeded(&self) -> bool {
        !self.hosts.is_empty() && self.hosts.iter().all(|h| h.responding)
    }
}

/// Reads Salt's JSON output: one document, or (without `--static`) one per minion, merged.
fn read_documents(stdout: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let mut merged = serde_json::Map::new();
    let mut any = false;
    for doc in serde_json::Deserializer::from_slice(stdout).into_iter::<Value>() {
        match doc {
            Ok(Value::Object(map)) => {
                any = true;
                merged.extend(map);
            }
            _ => return None,
        }
    }
    any.then_some(merged)
}

/// Parses `state.apply --out=json` output.
pub fn parse_apply(stdout: &[u8], test: bool) -> Option<ApplyReport> {
    let hosts = read_documents(stdout)?
        .into_iter()
        .map(|(host, value)| host_report(host, value))
        .collect();
    Some(ApplyReport { test, hosts })
}

fn host_report(host: String, value: Value) -> HostReport {
    let mut report = HostReport {
        host,
        ok: 0,
        changed: 0,
        failed: 0,
        duration_ms: 0.0,
        errors: Vec::new(),
        states: Vec::new(),
    };
    let states = match value {
        Value::Object(states) => states,
        // Render and compile errors come as a list of messages, a missing minion as a string.
        Value::Array(messages) => {
            report.errors = messages.iter().map(text).collect();
            return report;
        }
        other => {
            report.errors.push(text(&other));
            return report;
        }
    };
    let mut ordered: Vec<(i64, StateOutcome)> = states
        .into_iter()
        .map(|(key, state)| {
            let order = state["__run_num__"].as_i64().unwrap_or(i64::MAX);
            (order, state_outcome(&key, &state))
        })
        .collect();
    ordered.sort_by_key(|(order, _)| *order);
    for (_, state) in ordered {
        match state.status {
            StateStatus::Ok => report.ok += 1,
            StateStatus::Changed => report.changed += 1,
            StateStatus::Failed => report.failed += 1,
        }
        report.duration_ms += state.duration_ms;
        report.states.push(state);
    }
    report
}

/// One state from its key (`module_|-id_|-name_|-function`) and result object.
fn state_outcome(key: &str, state: &Value) -> StateOutcome {
    let parts: Vec<&str> = key.split("_|-").collect();
    let function = match parts.as_slice() {
        [module, _, _, function] => format!("{module}.{function}"),
        _ => String::new(),
    };
    let changes = state.get("changes").cloned().unwrap_or(Value::Null);
    let has_changes = match &changes {
        Value::Object(map) => !map.is_empty(),
        Value::Null => false,
        _ => true,
    };
    let status = match state.get("result") {
        Some(Value::Bool(false)) => StateStatus::Failed,
        // null is a test run's "would change".
        Some(Value::Null) => StateStatus::Changed,
        _ if has_changes => StateStatus::Changed,
        _ => StateStatus::Ok,
    };
    StateOutcome {
        id: state["__id__"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| parts.get(1).map(|s| (*s).to_owned()))
            .unwrap_or_default(),
        sls: state["__sls__"].as_str().unwrap_or_default().to_owned(),
        function,
        name: state["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| parts.get(2).map(|s| (*s).to_owned()).unwrap_or_default()),
        status,
        comment: text(state.get("comment").unwrap_or(&Value::Null)),
        duration_ms: state["duration"].as_f64().unwrap_or(0.0),
        changes,
    }
}

/// A JSON value as a message: strings as they are, lists joined.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses `test.ping --out=json` output.
pub fn parse_ping(stdout: &[u8]) -> Option<PingReport> {
    let hosts = read_documents(stdout)?
        .into_iter()
        .map(|(host, value)| PingHost {
            host,
            responding: value == Value::Bool(true),
        })
        .collect();
    Some(PingReport { hosts })
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Report {
    Apply(ApplyReport),
    Ping(PingReport),
}

impl Report {
    pub fn succeeded(&self) -> bool {
        match self {
            Report::Apply(r) => r.succeeded(),
            Report::Ping(r) => r.succeeded(),
        }
    }

    /// One line per host: what a log or a plain-text summary shows.
    pub fn summary_lines(&self) -> Vec<String> {
        match self {
            Report::Apply(r) => r
                .hosts
                .iter()
                .map(|h| {
                    format!(
                        "{}: {} ok, {} {}, {} failed{} ({:.0} ms)",
                        h.host,
                        h.ok,
                        h.changed,
                        if r.test { "would change" } else { "changed" },
                        h.failed,
                        if h.errors.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", h.errors.join("; "))
                        },
                        h.duration_ms
                    )
                })
                .collect(),
            Report::Ping(r) => r
                .hosts
                .iter()
                .map(|h| {
                    let answer = if h.responding {
                        "responding"
                    } else {
                        "not responding"
                    };
                    format!("{}: {answer}", h.host)
                })
                .collect(),
        }
    }

    /// Why the run failed, in one line.
    pub fn failure_summary(&self) -> String {
        match self {
            Report::Apply(r) => r.failure_summary(),
            Report::Ping(r) => {
                let silent: Vec<&str> = r
                    .hosts
                    .iter()
                    .filter(|h| !h.responding)
                    .map(|h| h.host.as_str())
                    .collect();
                if r.hosts.is_empty() {
                    "no host answered".to_owned()
                } else {
                    format!("not responding: {}", silent.join(", "))
                }
            }
        }
    }
}

/// Runs `payload` to the end: writes a temporary minion configuration for a local run,
/// streams Salt's log lines (stderr) to `on_line`, and parses the results.
pub async fn run<F, Fut>(payload: &SaltPayload, on_line: F) -> Result<Report, SaltError>
where
    F: FnMut(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    validate(payload)?;
    // Kept alive until Salt is done; removed when dropped.
    let config_dir = match payload.mode {
        SaltMode::Local => {
            let dir = tempfile::Builder::new()
                .prefix("taskplane-salt-")
                .tempdir()
                .map_err(SaltError::Config)?;
            // Without a tree (ping) or a pillar, empty ones: never the host's /srv/salt or
            // /srv/pillar.
            let empty = |name: &str| -> Result<PathBuf, SaltError> {
                let path = dir.path().join(name);
                std::fs::create_dir_all(&path).map_err(SaltError::Config)?;
                Ok(path)
            };
            let file_root = match &payload.file_root {
                Some(root) => absolute(root)?,
                None => empty("states")?,
            };
            let pillar_root = match &payload.pillar_root {
                Some(root) => absolute(root)?,
                None => empty("pillar")?,
            };
            let config = minion_config(&file_root, Some(&pillar_root), dir.path());
            std::fs::write(dir.path().join("minion"), config).map_err(SaltError::Config)?;
            Some(dir)
        }
        SaltMode::Master | SaltMode::Ssh => None,
    };
    let mut inv = invocation(payload, config_dir.as_ref().map(|d| d.path()));
    // Salt on newer Pythons warns about its own imports on every run; that is noise here.
    inv.env.insert(
        "PYTHONWARNINGS".to_owned(),
        "ignore::DeprecationWarning".to_owned(),
    );
    let done = runner::run(&inv, StdoutMode::Capture, INSTALL_HINT, on_line).await?;
    let parsed = match payload.action {
        SaltAction::Apply => parse_apply(&done.stdout, payload.test).map(Report::Apply),
        SaltAction::Ping => parse_ping(&done.stdout).map(Report::Ping),
    };
    // No host at all (an empty roster, a target that matched nothing) is not a result:
    // Salt's last complaint says why.
    let parsed = parsed.filter(|report| match report {
        Report::Apply(r) => !r.hosts.is_empty(),
        Report::Ping(r) => !r.hosts.is_empty(),
    });
    parsed.ok_or_else(|| SaltError::NoResult {
        program: inv.program.clone(),
        what: if done.status.success() {
            done.explain("returned no host".to_owned())
        } else {
            done.failure()
        },
    })
}

/// A directory given by the user, made absolute and checked to exist.
fn absolute(dir: &str) -> Result<PathBuf, SaltError> {
    crate::existing_dir(Path::new(dir)).map_err(|e| SaltError::Invalid(format!("salt: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn local(state: &str) -> SaltPayload {
        SaltPayload {
            mode: SaltMode::Local,
            state: Some(state.to_owned()),
            file_root: Some("/srv/salt".to_owned()),
            ..SaltPayload::default()
        }
    }

    #[test]
    fn local_apply_argv() {
        let mut payload = local("taskplane");
        payload.test = true;
        payload
            .pillar
            .insert("taskplane".to_owned(), json!({"version": "1.2"}));
        let inv = invocation(&payload, Some(Path::new("/tmp/cfg")));
        assert_eq!(inv.program, "salt-call");
        assert_eq!(
            inv.argv_lossy(),
            [
                "--local",
                "--config-dir",
                "/tmp/cfg",
                "--out",
                "json",
                "--retcode-passthrough",
                "state.apply",
                "taskplane",
                "test=True",
                r#"pillar={"taskplane":{"version":"1.2"}}"#,
            ]
        );
    }

    #[test]
    fn master_and_ssh_argv() {
        let payload = SaltPayload {
            target: Some("web*".to_owned()),
            ..SaltPayload::default()
        };
        let inv = invocation(&payload, None);
        assert_eq!(inv.program, "salt");
        assert_eq!(
            inv.argv_lossy(),
            ["web*", "--out", "json", "--static", "state.apply"]
        );
        let ping = SaltPayload {
            mode: SaltMode::Ssh,
            action: SaltAction::Ping,
            ..SaltPayload::default()
        };
        let inv = invocation(&ping, None);
        assert_eq!(inv.program, "salt-ssh");
        assert_eq!(
            inv.argv_lossy(),
            ["*", "--out", "json", "--static", "test.ping"]
        );
    }

    #[test]
    fn validation_refuses_option_like_names() {
        assert!(validate(&local("taskplane,postgresql")).is_ok());
        assert!(validate(&local("--help")).is_err());
        assert!(validate(&local("a b")).is_err());
        let mut bad = SaltPayload {
            target: Some("-E".to_owned()),
            ..SaltPayload::default()
        };
        assert!(validate(&bad).is_err());
        bad = SaltPayload {
            file_root: Some("/srv".to_owned()),
            ..SaltPayload::default()
        };
        assert!(validate(&bad).is_err(), "file_root on a master run");
        bad = SaltPayload {
            mode: SaltMode::Local,
            ..SaltPayload::default()
        };
        assert!(validate(&bad).is_err(), "local without a file root");
    }

    #[test]
    fn minion_config_keeps_everything_under_its_dir() {
        let config = minion_config(
            Path::new("/repo/provisioning/salt"),
            Some(Path::new("/repo/provisioning/pillar")),
            Path::new("/tmp/x"),
        );
        assert!(config.contains("file_client: local\n"));
        assert!(config.contains("cachedir: \"/tmp/x/cache\"\n"));
        assert!(config.contains("file_roots:\n  base:\n    - \"/repo/provisioning/salt\"\n"));
        assert!(config.contains("pillar_roots:\n  base:\n    - \"/repo/provisioning/pillar\"\n"));
    }

    #[test]
    fn parses_state_results_in_run_order() {
        // The shape salt-call 3008 prints (trimmed).
        let out = json!({"local": {
            "cmd_|-bad_|-/bin/false_|-run": {"result": false, "comment": "Command \"/bin/false\" run",
                "changes": {"retcode": 1}, "name": "/bin/false", "__sls__": "demo", "__run_num__": 2,
                "duration": 5.0, "__id__": "bad"},
            "file_|-conf_|-/etc/x_|-managed": {"result": true, "comment": "File /etc/x updated",
                "changes": {"diff": "New file"}, "name": "/etc/x", "__sls__": "demo", "__run_num__": 0,
                "duration": 4.5, "__id__": "conf"},
            "pkg_|-curl_|-curl_|-installed": {"result": true, "comment": "All specified packages are already installed",
                "changes": {}, "name": "curl", "__sls__": "demo", "__run_num__": 1, "duration": 1.0,
                "__id__": "curl"}
        }});
        let report = parse_apply(out.to_string().as_bytes(), false).expect("parses");
        let host = &report.hosts[0];
        assert_eq!(host.host, "local");
        assert_eq!((host.ok, host.changed, host.failed), (1, 1, 1));
        assert_eq!(host.duration_ms, 10.5);
        let ids: Vec<_> = host.states.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["conf", "curl", "bad"]);
        assert_eq!(host.states[2].function, "cmd.run");
        assert!(!report.succeeded());
        assert!(report.failure_summary().contains("bad (cmd.run)"));
        assert_eq!(
            brief(
                "An exception occurred in this state: Traceback (most recent call last):\n  File x\nCommandExecutionError: lsmod missing\n"
            ),
            "CommandExecutionError: lsmod missing"
        );
    }

    #[test]
    fn parses_render_errors_pending_changes_and_split_documents() {
        let out = br#"{"web1": ["Rendering SLS 'base:nope' failed: mapping values are not allowed"]}
{"web2": {"file_|-f_|-/f_|-managed": {"result": null, "comment": "The file /f is set to be changed", "changes": {}, "__run_num__": 0, "__id__": "f"}}}"#;
        let report = parse_apply(out, true).expect("parses");
        assert_eq!(report.hosts.len(), 2);
        assert!(!report.hosts[0].succeeded());
        assert!(report.hosts[0].errors[0].contains("Rendering SLS"));
        assert_eq!(
            report.hosts[1].changed, 1,
            "a test run's null is a pending change"
        );
        assert!(report.hosts[1].succeeded());
        assert!(parse_apply(b"not json", false).is_none());
        assert!(parse_apply(b"", false).is_none());
    }

    #[test]
    fn parses_ping() {
        let report = parse_ping(br#"{"a": true, "b": "Minion did not return. [No response]"}"#)
            .expect("parses");
        assert_eq!(
            report.hosts,
            [
                PingHost {
                    host: "a".into(),
                    responding: true
                },
                PingHost {
                    host: "b".into(),
                    responding: false
                }
            ]
        );
        assert!(!report.succeeded());
    }
}
