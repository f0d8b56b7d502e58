//! The ban store on disk: the active bans written (with the exporters'
//! snapshots) beside the flush, and read back at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Firewall;
use crate::events::{Event, EventBus};
use crate::firewall::engine::Ban;
use crate::firewall::export::Exporter;
use crate::firewall::files::write_atomically;

/// The store (and the file export) is rewritten at most this often: with
/// 100,000 bans it is 15 MB. The kernel gets every change at once; a crash
/// loses at most this much of the store, whose only use is the next start.
pub(super) const STORE_INTERVAL: Duration = Duration::from_secs(2);

impl Firewall {
    /// Writes the store and the exporters' snapshots beside the flush, so
    /// that a 15 MB store never holds back the next kernel transaction;
    /// the last flush (`final_`) waits for it.
    pub(super) fn store(&self, final_: bool) {
        let bans = self.engine().snapshot();
        let (store, exporters, events) = (self.cfg.store.clone(), self.exporters.clone(), self.events.clone());
        let job = move || {
            let mut bans: Vec<&Ban> = bans.iter().map(|b| &**b).collect();
            bans.sort_by_key(|b| b.net);
            save(&store, &exporters, &bans, &events)
        };
        if final_ {
            while self.storing.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            job();
        } else if self.storing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            // One is still being written: this change goes in the next.
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            let busy = self.storing.clone();
            std::thread::spawn(move || {
                job();
                busy.store(false, std::sync::atomic::Ordering::Release);
            });
        }
    }
}

/// Writes the store, then hands the bans to every exporter (the file
/// export writes its list and JSON).
fn save(store: &std::path::Path, exporters: &[Arc<dyn Exporter>], bans: &[&Ban], events: &EventBus) {
    let stored = write_atomically(store, &serde_json::to_vec(bans).unwrap_or_default());
    let published = exporters.iter().map(|ex| ex.snapshot(bans));
    for e in std::iter::once(stored).chain(published).filter_map(Result::err) {
        events.emit(Event::Warning {
            component: "firewall",
            message: e.to_string(),
        });
    }
}

pub(super) fn load_store(path: &PathBuf) -> Vec<Ban> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
