//! The flusher's work: pushing pending ban changes to the exporters (nft,
//! ipset, the file export), expiring bans, repairing an exporter whose state
//! is gone, and how the exporters are doing (`/readyz`, `sluice bans add`).

use std::time::Duration;

use ipnet::IpNet;

use super::persist::STORE_INTERVAL;
use super::{Firewall, now};
use crate::events::Event;
use crate::firewall::nft::Element;

/// How often the exporter's state is checked (and repaired if gone).
const RECONCILE_CHECK: Duration = Duration::from_secs(1);
/// How long a change by hand waits to be pushed to the kernel.
const KERNEL_WAIT: Duration = Duration::from_secs(2);

impl Firewall {
    /// Why the exporters are not doing their work ("exporter nft:
    /// Operation not permitted — needs CAP_NET_ADMIN"), `None` while they
    /// are.
    pub fn exporter_problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a change by hand: waits until it has been pushed to the
    /// exporters (two rounds, at most [`KERNEL_WAIT`] or three flush
    /// intervals), then says why it is not in the kernel, `None` when it
    /// is (or when there is no exporter).
    pub async fn kernel_state(&self) -> Option<String> {
        if self.exporters.is_empty() {
            return None;
        }
        let rounds = || self.rounds.load(std::sync::atomic::Ordering::Acquire);
        let start = rounds();
        let deadline = std::time::Instant::now() + KERNEL_WAIT.max(self.cfg.flush_interval * 3);
        while rounds() < start + 2 {
            if std::time::Instant::now() >= deadline {
                return Some(self.exporter_problem().unwrap_or_else(|| {
                    format!(
                        "exporter {}: not pushed to the kernel within {KERNEL_WAIT:?}",
                        self.exporters[0].name()
                    )
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.exporter_problem()
    }

    /// Records how a round of export went: on a change (a first failure,
    /// another reason, working again) one line on stderr and, for a
    /// failure, a warning event; an exporter failing the same way every
    /// second says it once.
    pub(super) fn note(&self, failed: Option<(&'static str, crate::firewall::export::ExportError)>) {
        let text = failed
            .as_ref()
            .map(|(name, e)| format!("exporter {name}: {}", e.reason()));
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if *problem != text {
            match (&failed, &text) {
                (Some((_, e)), Some(t)) => {
                    tracing::error!(detail = %e, "{t}; bans are NOT enforced in the kernel (sluice itself still refuses banned clients)");
                    self.events.emit(Event::Warning {
                        component: "firewall",
                        message: t.clone(),
                    });
                }
                _ => tracing::info!("firewall exporters working again: bans are in the kernel"),
            }
            *problem = text;
        }
        drop(problem);
        self.rounds.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Pushes pending changes, expires bans, saves the store (at most every
    /// [`STORE_INTERVAL`]), and repairs the exporter's state if it is gone.
    pub fn flush(&self) {
        self.flush_with(false)
    }

    /// `final_`: the last flush before exit, the store is written now.
    pub(super) fn flush_with(&self, final_: bool) {
        let t = now();
        let expired = self.engine().expire(t);
        for net in &expired {
            self.events.emit(Event::BanRemoved {
                net: net.to_string(),
                by: "expiry",
            });
        }
        let (add, del) = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let since = self.pending_since.lock().unwrap_or_else(|p| p.into_inner()).take();
        let metrics = self.events.metrics();
        metrics.bans_active.set(self.engine().len() as i64);
        // Expired elements leave the kernel by their own timeouts.
        if !expired.is_empty() {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let store_due = final_ || {
            let last = self.last_store.lock().unwrap_or_else(|p| p.into_inner());
            last.is_none_or(|l| l.elapsed() >= STORE_INTERVAL)
        };
        let changed = store_due && self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed);
        if changed {
            *self.last_store.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        }
        if !self.exporters.is_empty() {
            self.export(&add, &del, since, t);
        }
        if changed {
            self.store(final_);
        }
    }

    /// Pushes a change to the exporters; repairs an exporter whose state is
    /// gone (checked at most once a second: one `nft list` each time).
    fn export(&self, add: &[Element], del: &[IpNet], since: Option<std::time::Instant>, t: u64) {
        let metrics = self.events.metrics();
        let check = {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|l| l.elapsed() >= RECONCILE_CHECK);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let mut failed: Option<(&'static str, crate::firewall::export::ExportError)> = None;
        // A failing exporter is reconciled at each check: what it lost
        // goes back once it works again.
        let failing = self.exporter_problem().is_some();
        let mut attempted = false;
        for ex in &self.exporters {
            let wiped = check && (failing || !ex.intact());
            attempted |= wiped || !add.is_empty() || !del.is_empty();
            if wiped {
                metrics.firewall_sync_errors.inc();
            }
            let result = if wiped {
                ex.reconcile(&self.elements(t))
            } else if add.is_empty() && del.is_empty() {
                Ok(())
            } else {
                ex.apply(add, del)
            };
            if let Err(e) = result
                && failed.is_none()
            {
                failed = Some((ex.name(), e));
            }
        }
        if !attempted {
            self.rounds.fetch_add(1, std::sync::atomic::Ordering::Release);
            return;
        }
        let mut out = self.out_of_sync.lock().unwrap_or_else(|p| p.into_inner());
        match failed {
            None => {
                *out = None;
                if let Some(since) = since {
                    metrics.firewall_sync_delay.observe(since.elapsed().as_secs_f64());
                }
            }
            Some(_) => {
                out.get_or_insert(since.unwrap_or_else(std::time::Instant::now));
                metrics.firewall_sync_errors.inc();
            }
        }
        metrics
            .firewall_sync_lag
            .set(out.map_or(0.0, |o| o.elapsed().as_secs_f64()));
        drop(out);
        self.note(failed);
    }

    pub(super) fn elements(&self, t: u64) -> Vec<Element> {
        self.bans()
            .iter()
            .filter(|_| !self.cfg.bans.dry_run)
            .map(|b| Element {
                net: b.net,
                timeout_secs: b.until.saturating_sub(t),
            })
            .collect()
    }
}
