//! The exporter seam: where bans are enforced or published besides the
//! listener. The service pushes changes to each exporter in one batch per
//! flush, reconciles from scratch at start and whenever an exporter reports
//! its state gone, and hands every exporter the whole ban list when the
//! store is written. Kernel exporters: [`super::nft`], [`super::ipset`];
//! the plain-file export: [`super::files`].

use ipnet::IpNet;

use super::engine::Ban;
use super::nft::Element;

/// Why an exporter could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{program}: {stderr}")]
    Failed { program: &'static str, stderr: String },
    #[error("{program} {rule}: failed")]
    Rule { program: &'static str, rule: String },
    #[error("{path}: {source}")]
    Write { path: String, source: std::io::Error },
}

pub trait Exporter: Send + Sync + 'static {
    /// Applies a change as one transaction.
    fn apply(&self, add: &[Element], del: &[IpNet]) -> Result<(), ExportError> {
        let _ = (add, del);
        Ok(())
    }
    /// Recreates the exporter's state from scratch with these elements.
    fn reconcile(&self, all: &[Element]) -> Result<(), ExportError> {
        let _ = all;
        Ok(())
    }
    /// Whether the exporter's state is still there (someone may have
    /// flushed the ruleset).
    fn intact(&self) -> bool {
        true
    }
    /// Every ban with its evidence, whenever the store is written.
    fn snapshot(&self, bans: &[&Ban]) -> Result<(), ExportError> {
        let _ = bans;
        Ok(())
    }
}

/// Runs `program args` with `input` on its stdin.
pub(super) fn run_with_stdin(program: &'static str, args: &[&str], input: &str) -> Result<(), ExportError> {
    use std::io::Write as _;
    let spawn = |source| ExportError::Spawn { program, source };
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ExportError::Failed {
            program,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether `program args` exits 0 (its output discarded).
pub(super) fn succeeds(program: &str, args: &[String]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
