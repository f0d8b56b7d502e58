//! `[cluster]`: this node's ban changes published to the other nodes, and
//! theirs applied here.

use std::sync::Arc;

use super::{Firewall, now};
use crate::events::Event;
use crate::firewall::nft::Element;

impl Firewall {
    /// `[cluster]`: this node's ban changes (offences, by hand) go to
    /// `outbox` from now on, to be published to the other nodes.
    pub fn publish_to(&self, outbox: Arc<crate::firewall::cluster::Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    pub(super) fn publish(&self, change: crate::firewall::cluster::BanChange) {
        if let Some(o) = self.outbox.get() {
            o.push(change);
        }
    }

    /// Applies a change another node (`node`) decided, read from the ban
    /// stream: enforced here (listener and kernel) and announced, not
    /// published again and not counted as an offence. False when it
    /// changed nothing (already in force, run out, allowlisted here).
    pub fn apply_remote(&self, change: &crate::firewall::cluster::BanChange, node: &str) -> bool {
        self.apply_remote_with(change, node, true)
    }

    /// [`apply_remote`](Self::apply_remote) without the `ban_added` event:
    /// the active set loaded at start or after a reconnect (100,000 bans
    /// must not become 100,000 events each time; the loader logs how many).
    pub fn load_remote(&self, change: &crate::firewall::cluster::BanChange, node: &str) -> bool {
        self.apply_remote_with(change, node, false)
    }

    fn apply_remote_with(&self, change: &crate::firewall::cluster::BanChange, node: &str, announce: bool) -> bool {
        use crate::firewall::cluster::BanChange;
        let t = now();
        match change {
            BanChange::Add { ban } => {
                if ban.until <= t || self.engine().get(ban.net).is_some_and(|b| b.until >= ban.until) {
                    return false;
                }
                let added = super::ban_added(ban, self.cfg.bans.dry_run, Some(node.to_string()));
                {
                    let mut engine = self.engine();
                    if engine.insert(ban.clone()).is_err() {
                        return false;
                    }
                    engine.remember(ban, t);
                }
                if !self.cfg.bans.dry_run {
                    self.pending.lock().unwrap_or_else(|p| p.into_inner()).0.push(Element {
                        net: ban.net,
                        timeout_secs: ban.until.saturating_sub(t),
                    });
                    self.mark_pending();
                }
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                if announce {
                    self.events.emit(added);
                }
                true
            }
            BanChange::Del { net } => {
                let Some(ban) = self.engine().remove(net.trunc()) else {
                    return false;
                };
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).1.push(ban.net);
                self.mark_pending();
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                self.events.emit(Event::BanRemoved {
                    net: ban.net.to_string(),
                    by: "cluster",
                });
                true
            }
        }
    }
}
