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
//!
//! Here: the state, bans by hand and offences, and the service loop; the
//! flusher's work is in `flush`, the store on disk in `persist`, and the
//! `[cluster]` ban changes in `remote`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::engine::{Ban, Decision, Engine, Offence};
use super::export::Exporter;
use super::files::FileExporter;
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

mod flush;
mod persist;
mod remote;

use persist::load_store;

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

    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.events.metrics().clone()
    }

    /// Adds a ban by hand; refused (returned) for allowlisted networks.
    pub fn insert(&self, ban: Ban) -> Result<(), Ban> {
        let element = Element {
            net: ban.net,
            timeout_secs: ban.until.saturating_sub(now()),
        };
        let added = ban_added(&ban, false, None);
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
                self.events.emit(ban_added(b, self.cfg.bans.dry_run, None));
            }
            Decision::Allowlisted { ip, offence } => self.events.emit(Event::Warning {
                component: "firewall",
                message: format!("not banning allowlisted {ip} ({})", offence.as_str()),
            }),
            Decision::Counted | Decision::AlreadyBanned => {}
        }
        decision
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

/// The event of a ban being added: by this node's decision (`node` is
/// `None`), by hand, or applied from another node's decision.
fn ban_added(ban: &Ban, dry_run: bool, node: Option<String>) -> Event {
    Event::BanAdded {
        net: ban.net.to_string(),
        offence: ban.offence,
        until: ban.until,
        strike: ban.strike,
        rule: ban.rule.clone(),
        dry_run,
        node,
    }
}

#[cfg(test)]
mod tests;
