//! The web dashboard in a real browser: the pytest suite beside this file drives Debian's
//! headless Chromium through Selenium against the taskd and taskctl of this build (a taskd
//! per test on a free port). A binary of its own, so no other suite loads the machine while
//! it checks that pages update within a second. Chromium, ChromeDriver and the venv with
//! Selenium come from `scripts/install-test-tools.sh`.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test -p taskctl --test web` also writes the README's
//! screenshots into `docs/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use taskplane_testkit::check_run;

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let Some(bin) = taskplane_testkit::venv_tools("web dashboard", &["python", "pytest", "ruff"])
    else {
        return;
    };
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for tool in [&chromium, &driver] {
        if !Path::new(tool).exists() {
            taskplane_testkit::skip(&format!(
                "web dashboard: {tool} is missing (Debian's chromium and chromium-driver; run scripts/install-test-tools.sh)"
            ));
            return;
        }
    }
    let selenium = Command::new(bin.join("python"))
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    if !selenium {
        taskplane_testkit::skip(
            "web dashboard: selenium is missing from the test venv (run scripts/install-test-tools.sh)",
        );
        return;
    }
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    check_run(
        "ruff check",
        Command::new(bin.join("ruff"))
            .args(["check", "--no-cache", "."])
            .current_dir(&suite),
    );
    check_run(
        "ruff format --check",
        Command::new(bin.join("ruff"))
            .args(["format", "--check", "--no-cache", "."])
            .current_dir(&suite),
    );
    let taskctl = PathBuf::from(env!("CARGO_BIN_EXE_taskctl"));
    let taskd = taskctl.with_file_name("taskd");
    assert!(
        taskd.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so taskd is built",
        taskd.display()
    );
    check_run(
        "pytest (the dashboard in Chromium)",
        Command::new(bin.join("pytest"))
            .args(["-q", "-p", "no:cacheprovider", "."])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("TASKD_BIN", &taskd)
            .env("TASKCTL_BIN", &taskctl)
            .env("CHROMIUM_BIN", &chromium)
            .env("CHROMEDRIVER_BIN", &driver)
            .current_dir(&suite),
    );
}
