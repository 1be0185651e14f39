//! Drives SaltStack and kubectl for `taskctl provision` and for the daemon's `salt` and
//! `kubectl` kinds: one wrapper serves both, so a provisioning run behaves the same at a
//! prompt and as a queued task.
//!
//! - [`runner`]: runs a program (under a [`guard`] in taskd, else in its own process group)
//!   and streams its output.
//! - [`guard`]: the per-run process that kills a program's whole tree when the run ends.
//! - [`salt`]: `salt-call --local` / `salt` / `salt-ssh` argv, minion config, result parser.
//! - [`kubectl`]: apply/diff/status/rollout/scale/logs argv, JSON parsers, the operations.
//!
//! The argv builders and parsers are pure and unit-tested here; the runs are tested end to
//! end through `taskctl provision` and the daemon.

pub mod guard;
pub mod kubectl;
pub mod runner;
pub mod salt;

/// A directory the user named, made absolute (a submitted run's worker may start elsewhere)
/// and checked to exist; the error says which and why, without a flag name.
pub fn existing_dir(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let path = std::path::absolute(dir).map_err(|e| format!("'{}': {e}", dir.display()))?;
    if !path.is_dir() {
        return Err(format!("'{}' is not a directory", path.display()));
    }
    Ok(path)
}
