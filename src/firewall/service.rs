//! The firewall as a running service: reads the event bus, feeds the
//! offences to the [`Engine`], announces bans as events, answers the
//! listener's "is this client banned?", keeps the bans on disk across
//! restarts, and pushes changes to an [`Exporter`] (nftables) in one batch
//! per flush, with a full reconcile at start and whenever the exporter
//! reports its state gone.
//!
//! An exporter that cannot write to the kernel fails loudly: an error line
//! (and a warning event) when it starts failing or its reason changes, not
//! once a second; [`Firewall::exporter_problem`] for `/readyz` and
//! `sluice check`; and `sluice bans add` told that its ban is not
//! enforced ([`Firewall::kernel_state`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::engine::{Ban, Decision, Engine, Offence};
use super::export::Exporter;
use super::files::{FileExporter, write_atomically};
use super::ipset::IpsetExporter;
use super::nft::{Element, NftExporter};
use crate::events::{Event, EventBus};

pub use crate::config::firewall::FirewallConfig;

pub struct Firewall {
    pub cfg: FirewallConfig,
    engine: Mutex<Engine>,
    /// Changes not yet pushed to the exporter.
    pending: Mutex<(Vec<Element>, Vec<IpNet>)>,
    /// When the oldest of those changes was made.
    pending_since: Mutex<Option<std::time::Instant>>,
    /// Wakes the flush loop when a change is pending: a ban goes to the
    /// kernel at once, not at the next `flush_interval` tick (changes made
    /// while a flush runs go in the next one, together).
    kick: tokio::sync::Notify,
    /// Since when the kernel has not matched the bans (an exporter error
    /// or a wiped set); `None` in sync.
    out_of_sync: Mutex<Option<std::time::Instant>>,
    /// Bans changed since the store and the file export were written.
    dirty: std::sync::atomic::AtomicBool,
    /// When the exporter's state was last checked.
    last_check: Mutex<Option<std::time::Instant>>,
    /// When the store and the file export were last written.
    last_store: Mutex<Option<std::time::Instant>>,
    /// A store write is running (on a thread of its own).
    storing: Arc<std::sync::atomic::AtomicBool>,
    /// Kernel exporter (nft or ipset), then the file export, if any.
    exporters: Vec<Arc<dyn Exporter>>,
    /// Why an exporter last failed ("exporter nft: ..."); `None` while
    /// they work.
    problem: Mutex<Option<String>>,
    /// Rounds of export done (each flush with exporters, and the first
    /// reconcile).
    rounds: std::sync::atomic::AtomicU64,
    events: EventBus,
    /// `[cluster]`: where this node's ban changes go to be published.
    outbox: std::sync::OnceLock<Arc<super::cluster::Outbox>>,
}

/// How often the exporter's state is checked (and repaired if gone).
const RECONCILE_CHECK: Duration = Duration::from_secs(1);
/// How long a change by hand waits to be pushed to the kernel.
const KERNEL_WAIT: Duration = Duration::from_secs(2);
/// The store (and the file export) is rewritten at most this often: with
/// 100,000 bans it is 15 MB. The kernel gets every change at once; a crash
/// loses at most this much of the store, whose only use is the next start.
const STORE_INTERVAL: Duration = Duration::from_secs(2);

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Firewall {
    /// Builds the firewall and restores the stored bans (those still
    /// running); its offence windows live in `state`.
    pub fn new(cfg: FirewallConfig, events: EventBus, state: Arc<dyn crate::state::StateStore>) -> Firewall {
        let ports = cfg.ports.clone();
        let exporter: Option<Box<dyn Exporter>> = match (&cfg.nft, &cfg.ipset) {
            (Some(names), _) => Some(Box::new(NftExporter {
                names: names.clone(),
                ports,
            })),
            (None, Some(names)) => Some(Box::new(IpsetExporter {
                names: names.clone(),
                ports,
            })),
            (None, None) => None,
        };
        Firewall::build(cfg, events, exporter, state)
    }

    /// [`Firewall::new`] with `exporter` as the kernel exporter and its own
    /// in-process state (tests).
    pub fn with_exporter(cfg: FirewallConfig, events: EventBus, exporter: Option<Box<dyn Exporter>>) -> Firewall {
        let state = Arc::new(crate::state::MemoryStore::default());
        Firewall::build(cfg, events, exporter, state)
    }

    /// The file export is added when `firewall.file` is set.
    fn build(
        cfg: FirewallConfig,
        events: EventBus,
        exporter: Option<Box<dyn Exporter>>,
        state: Arc<dyn crate::state::StateStore>,
    ) -> Firewall {
        let mut exporters: Vec<Arc<dyn Exporter>> = exporter.map(Arc::from).into_iter().collect();
        if let Some(path) = &cfg.file {
            exporters.push(Arc::new(FileExporter { path: path.clone() }));
        }
        let mut engine = Engine::with_state(cfg.bans.clone(), state);
        let t = now();
        for ban in load_store(&cfg.store) {
            if ban.until > t {
                let _ = engine.insert(ban);
            }
        }
        Firewall {
            cfg,
            engine: Mutex::new(engine),
            pending: Mutex::new((Vec::new(), Vec::new())),
            pending_since: Mutex::new(None),
            kick: tokio::sync::Notify::new(),
            out_of_sync: Mutex::new(None),
            dirty: std::sync::atomic::AtomicBool::new(false),
            last_check: Mutex::new(None),
            last_store: Mutex::new(None),
            storing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            exporters,
            problem: Mutex::new(None),
            rounds: std::sync::atomic::AtomicU64::new(0),
            events,
            outbox: std::sync::OnceLock::new(),
        }
    }

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
    fn note(&self, failed: Option<(&'static str, super::export::ExportError)>) {
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

    /// New ban rules and allowlist (a reload): bans in force stay, and
    /// offences already counted count towards the new rules. `dry_run`
    /// keeps its value until a restart.
    pub fn reconfigure(&self, mut bans: crate::config::firewall::BanConfig) {
        bans.dry_run = self.cfg.bans.dry_run;
        self.engine().set_config(bans);
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the listener should refuse this client (never in dry run).
    pub fn is_banned(&self, ip: IpAddr) -> Option<Ban> {
        self.engine().is_banned(ip, now()).cloned()
    }

    /// `[cluster]`: this node's ban changes (offences, by hand) go to
    /// `outbox` from now on, to be published to the other nodes.
    pub fn publish_to(&self, outbox: Arc<super::cluster::Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.events.metrics().clone()
    }

    fn publish(&self, change: super::cluster::BanChange) {
        if let Some(o) = self.outbox.get() {
            o.push(change);
        }
    }

    /// Applies a change another node (`node`) decided, read from the ban
    /// stream: enforced here (listener and kernel) and announced, not
    /// published again and not counted as an offence. False when it
    /// changed nothing (already in force, run out, allowlisted here).
    pub fn apply_remote(&self, change: &super::cluster::BanChange, node: &str) -> bool {
        self.apply_remote_with(change, node, true)
    }

    /// [`apply_remote`](Self::apply_remote) without the `ban_added` event:
    /// the active set loaded at start or after a reconnect (100,000 bans
    /// must not become 100,000 events each time; the loader logs how many).
    pub fn load_remote(&self, change: &super::cluster::BanChange, node: &str) -> bool {
        self.apply_remote_with(change, node, false)
    }

    fn apply_remote_with(&self, change: &super::cluster::BanChange, node: &str, announce: bool) -> bool {
        use super::cluster::BanChange;
        let t = now();
        match change {
            BanChange::Add { ban } => {
                if ban.until <= t || self.engine().get(ban.net).is_some_and(|b| b.until >= ban.until) {
                    return false;
                }
                let added = Event::BanAdded {
                    net: ban.net.to_string(),
                    offence: ban.offence,
                    until: ban.until,
                    strike: ban.strike,
                    rule: ban.rule.clone(),
                    dry_run: self.cfg.bans.dry_run,
                    node: Some(node.to_string()),
                };
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

    /// Adds a ban by hand; refused (returned) for allowlisted networks.
    pub fn insert(&self, ban: Ban) -> Result<(), Ban> {
        let element = Element {
            net: ban.net,
            timeout_secs: ban.until.saturating_sub(now()),
        };
        let added = Event::BanAdded {
            net: ban.net.to_string(),
            offence: ban.offence,
            until: ban.until,
            strike: ban.strike,
            rule: ban.rule.clone(),
            dry_run: false,
            node: None,
        };
        let published = self.outbox.get().map(|_| ban.clone());
        self.engine().insert(ban)?;
        if let Some(ban) = published {
            self.publish(super::cluster::BanChange::Add { ban });
        }
        self.events.emit(added);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).0.push(element);
        self.mark_pending();
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Lifts a ban by hand.
    pub fn remove(&self, net: IpNet) -> Option<Ban> {
        let ban = self.engine().remove(net.trunc())?;
        self.publish(super::cluster::BanChange::Del { net: ban.net });
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).1.push(ban.net);
        self.mark_pending();
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        self.events.emit(Event::BanRemoved {
            net: ban.net.to_string(),
            by: "admin",
        });
        Some(ban)
    }

    fn mark_pending(&self) {
        self.pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(std::time::Instant::now);
        self.kick.notify_one();
    }

    /// Active bans.
    pub fn bans(&self) -> Vec<Ban> {
        self.engine().bans().into_iter().cloned().collect()
    }

    /// Feeds one event; returns the decision for an offence. The offence
    /// window is this node's.
    pub fn observe(&self, event: &Event) -> Option<Decision> {
        let (ip, offence) = Offence::of(event)?;
        Some(self.record_at(now(), ip, offence))
    }

    /// [`observe`](Self::observe) with the offence window in the state
    /// store: with `[cluster]`, shared by the nodes (three probes on three
    /// nodes count as three), within `cluster.timeout`.
    pub async fn observe_shared(&self, event: &Event) -> Option<Decision> {
        let (ip, offence) = Offence::of(event)?;
        let (at, ip) = (now(), ip.to_canonical());
        let (rule, state) = {
            let engine = self.engine();
            match engine.rule_for(at, ip, offence) {
                Ok(rule) => (rule, engine.state()),
                Err(d) => return Some(d),
            }
        };
        let evidence = state.offence(ip, offence.as_str(), at, rule.window, rule.count).await;
        let d = self.engine().decide(at, ip, offence, rule, evidence);
        Some(self.announce(d))
    }

    /// Records an offence that happened at `at` (now, or a line of an
    /// imported log). A ban that has already run out by now only counts
    /// for escalation: it is neither enforced nor announced.
    pub fn record_at(&self, at: u64, ip: IpAddr, offence: Offence) -> Decision {
        let d = self.engine().record(at, ip, offence);
        self.announce(d)
    }

    /// Enforces and announces what recording an offence decided.
    fn announce(&self, decision: Decision) -> Decision {
        let t = now();
        if let Decision::Ban(b) | Decision::Aggregated(b) = &decision
            && b.until <= t
        {
            self.engine().remove(b.net);
            return decision;
        }
        match &decision {
            Decision::Ban(b) | Decision::Aggregated(b) => {
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                if !self.cfg.bans.dry_run {
                    let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.0.push(Element {
                        net: b.net,
                        timeout_secs: b.until.saturating_sub(t),
                    });
                    drop(p);
                    self.mark_pending();
                    self.publish(super::cluster::BanChange::Add { ban: b.clone() });
                }
                self.events.emit(Event::BanAdded {
                    net: b.net.to_string(),
                    offence: b.offence,
                    until: b.until,
                    strike: b.strike,
                    rule: b.rule.clone(),
                    dry_run: self.cfg.bans.dry_run,
                    node: None,
                });
            }
            Decision::Allowlisted { ip, offence } => self.events.emit(Event::Warning {
                component: "firewall",
                message: format!("not banning allowlisted {ip} ({})", offence.as_str()),
            }),
            Decision::Counted | Decision::AlreadyBanned => {}
        }
        decision
    }

    /// Pushes pending changes, expires bans, saves the store (at most every
    /// [`STORE_INTERVAL`]), and repairs the exporter's state if it is gone.
    pub fn flush(&self) {
        self.flush_with(false)
    }

    /// `final_`: the last flush before exit, the store is written now.
    fn flush_with(&self, final_: bool) {
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
        let mut failed: Option<(&'static str, super::export::ExportError)> = None;
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

    /// Writes the store and the exporters' snapshots beside the flush, so
    /// that a 15 MB store never holds back the next kernel transaction;
    /// the last flush (`final_`) waits for it.
    fn store(&self, final_: bool) {
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

    fn elements(&self, t: u64) -> Vec<Element> {
        self.bans()
            .iter()
            .filter(|_| !self.cfg.bans.dry_run)
            .map(|b| Element {
                net: b.net,
                timeout_secs: b.until.saturating_sub(t),
            })
            .collect()
    }

    /// Reads the event bus and flushes every `flush_interval` until
    /// shutdown. Starts with a full reconcile of the exporter.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.events.subscribe();
        if !self.exporters.is_empty() {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let all = this.elements(now());
                let failed = this
                    .exporters
                    .iter()
                    .find_map(|ex| ex.reconcile(&all).err().map(|e| (ex.name(), e)));
                if failed.is_some() {
                    this.events.metrics().firewall_sync_errors.inc();
                    this.out_of_sync
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(std::time::Instant::now);
                }
                this.note(failed);
            })
            .await;
        }
        // The flusher runs apart from the event loop: an nft transaction
        // never holds up the counting of offences (a flood's decisions come
        // as fast as the store answers, whatever the kernel takes).
        let stop = shutdown.child_token();
        let flusher = {
            let this = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(this.cfg.flush_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                        _ = this.kick.notified() => {}
                    }
                    let t = this.clone();
                    let _ = tokio::task::spawn_blocking(move || t.flush()).await;
                }
            })
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Ok(e) => { self.observe_shared(&e).await; }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "firewall fell behind the event bus");
                    }
                    Err(_) => break,
                },
            }
        }
        stop.cancel();
        let _ = flusher.await;
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush_with(true)).await;
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

fn load_store(path: &PathBuf) -> Vec<Ban> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Banned clients are refused before the greeting.
impl crate::policy::connection::ConnectionFilter for Firewall {
    fn admit(&self, ip: IpAddr) -> crate::policy::connection::Admit {
        use crate::policy::connection::Admit;
        match self.is_banned(ip) {
            None => Admit::Next,
            Some(ban) => {
                let evidence = format!("{} banned until {} ({})", ban.net, ban.until, ban.rule);
                Admit::Refuse(crate::events::Refusal::new(
                    crate::proto::Reply::CLIENT_BANNED,
                    crate::events::Reason::Banned,
                    evidence,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
