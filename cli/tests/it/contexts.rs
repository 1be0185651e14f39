//! taskctl contexts, as kubectl's: `taskctl config set-context/use-context/get-contexts/
//! current-context`, a file written 0600 under XDG_CONFIG_HOME, the context's server and
//! token file used when no flag or environment variable names them, and the token never
//! printed.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::Daemon;

/// taskctl with a HOME of its own and no TASKCTL_* variables.
fn taskctl(home: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskctl"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .expect("taskctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn contexts_pick_the_server_and_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let taskd = Daemon::start(home, &[]);
    let token_file = home.join("prod.token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token");

    // No context yet: the default server, which is not running here.
    let (code, _, err) = taskctl(home, &["config", "current-context"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no current context"), "{err}");

    let token_arg = token_file.display().to_string();
    let (code, _, err) = taskctl(
        home,
        &[
            "config",
            "set-context",
            "local",
            "--server",
            &taskd.url,
            "--token-file",
            &token_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = taskctl(
        home,
        &[
            "config",
            "set-context",
            "elsewhere",
            "--server",
            "http://127.0.0.1:1",
        ],
    );
    assert_eq!(code, 0, "{err}");

    let file = home.join("config/taskctl/config.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("config").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the config is private");
    let text = std::fs::read_to_string(&file).expect("config");
    assert!(
        !text.contains("s3cret"),
        "the token itself is never stored: {text}"
    );

    // The first context became current; taskctl talks to its server.
    let (_, current, _) = taskctl(home, &["config", "current-context"]);
    assert_eq!(current.trim(), "local");
    let (code, out, err) = taskctl(home, &["submit", "noop", "--wait", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 36);

    let (_, listing, _) = taskctl(home, &["config", "get-contexts"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('*') && l.contains("local")),
        "{listing}"
    );
    assert!(!listing.contains("s3cret"), "{listing}");

    // Switching contexts switches servers; --context and --server override.
    let (code, _, _) = taskctl(home, &["config", "use-context", "elsewhere"]);
    assert_eq!(code, 0);
    let (code, _, err) = taskctl(home, &["list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach taskd at http://127.0.0.1:1"),
        "{err}"
    );
    let (code, _, err) = taskctl(home, &["--context", "local", "list", "-o", "id"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = taskctl(home, &["list", "--server", &taskd.url]);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = taskctl(home, &["--context", "nope", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no context named 'nope'"), "{err}");
    let (code, _, _) = taskctl(home, &["config", "delete-context", "elsewhere"]);
    assert_eq!(code, 0);
    let (_, listing, _) = taskctl(home, &["config", "get-contexts", "-o", "json"]);
    let config: serde_json::Value = serde_json::from_str(&listing).expect("json");
    assert_eq!(config["contexts"].as_object().map(|c| c.len()), Some(1));
}
