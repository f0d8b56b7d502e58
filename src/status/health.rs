//! Readiness: can this sluice take mail and pass it on? `/readyz` (and
//! `sluice check`) run these probes, each bounded by
//! `metrics.probe_timeout`:
//!
//! - the spool directory takes a new file (and fsync);
//! - the next hop greets and answers EHLO/LHLO (then QUIT);
//! - at least one clamd endpoint answers (when scanning is configured);
//!   endpoints that do not are named;
//! - the firewall's exporter writes to the kernel (when one is on): bans
//!   that are not enforced are a failure, not a warning in a log.
//!
//! A failing resolver is reported as degraded, not as not ready: mail still
//! flows (authentication answers temperror), and every node behind one
//! load balancer usually shares the resolver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::delivery::Transport;
use crate::scan::ContentFilter;

/// The verdict: ready or not, and what is wrong (each item names the part).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ok: bool,
    /// Failures that make sluice not ready.
    pub problems: Vec<String>,
    /// Failures it works around (a clamd endpoint down while another is up).
    pub degraded: Vec<String>,
}

pub struct Health {
    pub spool_dir: PathBuf,
    /// Asked through its health probe (which also sets `sluice_next_hop_up`).
    pub transport: Arc<dyn Transport>,
    /// Its scanner is pinged, when one is configured.
    pub content: Option<Arc<crate::swap::Swap<ContentFilter>>>,
    /// The resolver's health view, when DNS is used.
    pub dns: Option<Arc<crate::dns::Health>>,
    /// Its exporters' state, when the firewall is on.
    pub firewall: Option<Arc<crate::firewall::service::Firewall>>,
    pub timeout: Duration,
}

impl Health {
    pub async fn check(&self) -> Readiness {
        let (spool, hop, scan) = tokio::join!(self.spool(), self.next_hop(), self.scanners());
        let mut r = Readiness::default();
        for p in [spool, hop].into_iter().flatten() {
            r.problems.push(p);
        }
        let (problems, degraded) = scan;
        r.problems.extend(problems);
        if let Some(p) = self.firewall.as_ref().and_then(|f| f.exporter_problem()) {
            r.problems.push(format!("firewall {p}"));
        }
        r.degraded = degraded;
        if self.dns.as_ref().is_some_and(|h| h.failing()) {
            r.degraded
                .push("DNS resolver failing: SPF/DKIM/DMARC answer temperror at once".into());
        }
        r.ok = r.problems.is_empty();
        r
    }

    async fn spool(&self) -> Option<String> {
        let dir = self.spool_dir.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let path = dir.join(".ready-probe");
            let res = (|| {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&path)?;
                f.write_all(b"ok")?;
                f.sync_data()
            })();
            let _ = std::fs::remove_file(&path);
            res
        });
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(format!("spool {} not writable: {e}", self.spool_dir.display())),
            Ok(Err(_)) => Some("spool probe failed".into()),
            Err(_) => Some(format!("spool {}: write timed out", self.spool_dir.display())),
        }
    }

    async fn next_hop(&self) -> Option<String> {
        self.transport.health(self.timeout).await
    }

    /// (problems, degraded): not ready only when no endpoint is up.
    async fn scanners(&self) -> (Vec<String>, Vec<String>) {
        let Some(content) = &self.content else {
            return (Vec::new(), Vec::new());
        };
        let content = content.load();
        let answers = content.ping(self.timeout).await;
        let down: Vec<String> = answers
            .iter()
            .filter(|(_, up)| !up)
            .map(|(ep, _)| format!("clamd {ep} not answering"))
            .collect();
        if !answers.is_empty() && down.len() == answers.len() {
            (down, Vec::new())
        } else {
            (Vec::new(), down)
        }
    }
}
