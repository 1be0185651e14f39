//! The deployment artifacts (compose/, k8s/, the Dockerfile), checked statically by
//! `scripts/check-deployment.py` with the real `kubectl kustomize` and `kubernetes-validate`
//! from the venv that `scripts/install-test-tools.sh` makes. No Docker engine or cluster runs
//! here, so the image is not built and nothing is applied: the checks are of what an operator
//! would apply.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn deployment_artifacts_render_and_validate() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    let venv = std::env::var("TASKPLANE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/taskplane/venv")
        });
    let python = venv.join("bin/python");
    if !venv.join("bin/kubernetes-validate").exists() || !venv.join("bin/kubectl").exists() {
        assert!(
            std::env::var("TASKPLANE_REQUIRE_SERVICES").is_err(),
            "the deployment checks need {}: run scripts/install-test-tools.sh",
            venv.display()
        );
        eprintln!("SKIPPED deployment checks: run scripts/install-test-tools.sh to get the tools");
        return;
    }
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(python)
        .arg(repo.join("scripts/check-deployment.py"))
        .arg(&repo)
        .env("PATH", path)
        .output()
        .expect("run the deployment checks");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deployment checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
