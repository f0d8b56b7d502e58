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
    #[error("{program} {rule}: {stderr}")]
    Rule {
        program: &'static str,
        rule: String,
        stderr: String,
    },
    #[error("{path}: {source}")]
    Write { path: String, source: std::io::Error },
}

impl ExportError {
    /// The kernel refused for want of privilege (`CAP_NET_ADMIN`).
    pub fn is_permission(&self) -> bool {
        match self {
            ExportError::Spawn { source, .. } | ExportError::Write { source, .. } => {
                source.kind() == std::io::ErrorKind::PermissionDenied
            }
            ExportError::Failed { stderr, .. } | ExportError::Rule { stderr, .. } => {
                ["Operation not permitted", "Permission denied", "you must be root"]
                    .iter()
                    .any(|s| stderr.contains(s))
            }
        }
    }

    /// What was to be removed was not there (nft: "No such file or
    /// directory"; ipset: "does not exist").
    pub fn is_absent(&self) -> bool {
        match self {
            ExportError::Failed { stderr, .. } | ExportError::Rule { stderr, .. } => {
                ["No such file or directory", "does not exist"]
                    .iter()
                    .any(|s| stderr.contains(s))
            }
            _ => false,
        }
    }

    /// In a line, with what to do when the cause is a usual one: the
    /// missing capability, the program not installed.
    pub fn reason(&self) -> String {
        if self.is_permission() {
            return "Operation not permitted — needs CAP_NET_ADMIN".into();
        }
        if let ExportError::Spawn { program, source } = self
            && source.kind() == std::io::ErrorKind::NotFound
        {
            let package = match *program {
                "nft" => "nftables",
                "ipset" => "ipset",
                _ => "iptables",
            };
            return format!("{program}: not found — install {package}");
        }
        // nft's own message is its first line (then the rule, underlined);
        // ipset's names itself.
        let text = match self {
            ExportError::Failed { program, stderr } if stderr.starts_with(program) => stderr.clone(),
            other => other.to_string(),
        };
        text.lines().next().unwrap_or_default().to_string()
    }
}

pub trait Exporter: Send + Sync + 'static {
    /// What it is called in `firewall.exporter` ("nft", "ipset"), or
    /// "file".
    fn name(&self) -> &'static str;
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

/// Runs `program args`: its stdout, or why it failed.
pub(super) fn output(program: &'static str, args: &[String]) -> Result<String, ExportError> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ExportError::Spawn { program, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ExportError::Rule {
            program,
            rule: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_capability_or_the_package() {
        let nft = ExportError::Failed {
            program: "nft",
            stderr:
                "/dev/stdin:1:1-22: Error: Could not process rule: Operation not permitted\nadd table inet sluice\n^^^^"
                    .into(),
        };
        assert!(nft.is_permission() && !nft.is_absent());
        assert_eq!(nft.reason(), "Operation not permitted — needs CAP_NET_ADMIN");
        let iptables = ExportError::Rule {
            program: "iptables",
            rule: "-S INPUT".into(),
            stderr: "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)".into(),
        };
        assert_eq!(iptables.reason(), "Operation not permitted — needs CAP_NET_ADMIN");
        let missing = ExportError::Spawn {
            program: "ipset",
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(missing.reason(), "ipset: not found — install ipset");
        let gone = ExportError::Failed {
            program: "nft",
            stderr: "Error: Could not process rule: No such file or directory\ndelete table inet sluice".into(),
        };
        assert!(gone.is_absent() && !gone.is_permission());
        assert_eq!(
            gone.reason(),
            "nft: Error: Could not process rule: No such file or directory"
        );
    }
}
