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
    let Some(bin) = taskplane_testkit::venv_tools(
        "deployment checks",
        &["python", "kubernetes-validate", "kubectl"],
    ) else {
        return;
    };
    let python = bin.join("python");
    let path = format!(
        "{}:{}",
        bin.display(),
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
