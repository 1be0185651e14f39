//! The Python SDK (`sdk/python`): ruff and `mypy --strict` clean, and its pytest suite (a
//! Client and Workers against a real taskd it starts from this build) passing. The tools come
//! from the venv `scripts/install-test-tools.sh` makes.

use std::path::Path;
use std::process::Command;

use taskplane_testkit::check_run;

use crate::common;

#[test]
fn the_python_sdk_is_clean_and_passes_its_tests_against_taskd() {
    let Some(bin) =
        taskplane_testkit::venv_tools("Python SDK", &["python", "pytest", "ruff", "mypy"])
    else {
        return;
    };
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python");
    let caches = tempfile::tempdir().expect("temp dir");
    check_run(
        "ruff check",
        Command::new(bin.join("ruff"))
            .args(["check", "--no-cache", "."])
            .current_dir(&sdk),
    );
    check_run(
        "mypy --strict",
        Command::new(bin.join("mypy"))
            .args(["--strict", "--cache-dir"])
            .arg(caches.path().join("mypy"))
            .args(["src", "tests", "examples"])
            .env("MYPYPATH", sdk.join("src"))
            .current_dir(&sdk),
    );
    check_run(
        "pytest",
        Command::new(bin.join("pytest"))
            .args(["-q", "-p", "no:cacheprovider", "tests"])
            .env("PYTHONPATH", sdk.join("src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("TASKD_BIN", common::taskd_bin())
            .env("TASKPLANE_REQUIRE_SERVICES", "1")
            .current_dir(&sdk),
    );
}
