//! The firewall as a running service: reads the event bus, feeds the
//! offences to the [`Engine`], announces bans as events, answers the
//! listener's "is this client banned?", keeps the bans on disk across
//! restarts, and pushes changes to an [`Exporter`] (nftables) in one batch
//! per flush, with a full reconcile at start and whenever the exporter
//! reports its state gone.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::engine::{Ban, BanConfig, Decision, Engine, Offence};
use super::nft::{Element, NftNames};
use crate::events::{Event, EventBus};

/// Where bans are enforced besides the listener.
pub trait Exporter: Send + Sync + 'static {
    /// Applies a change as one transaction.
    fn apply(&self, add: &[Element], del: &[IpNet]) -> Result<(), String>;
    /// Recreates the exporter's state from scratch with these elements.
    fn reconcile(&self, all: &[Element]) -> Result<(), String>;
    /// Whether the exporter's state is still there (someone may have
    /// flushed the ruleset).
    fn intact(&self) -> bool;
}

/// `nft -f -` batches (see [`super::nft`]).
pub struct NftExporter {
    pub names: NftNames,
}

impl NftExporter {
    fn run(&self, script: &str) -> Result<(), String> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(|e| format!("nft: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Exporter for NftExporter {
    fn apply(&self, add: &[Element], del: &[IpNet]) -> Result<(), String> {
        let batch = self.names.batch(add, del);
        if batch.is_empty() { Ok(()) } else { self.run(&batch) }
    }

    fn reconcile(&self, all: &[Element]) -> Result<(), String> {
        let mut script = self.names.create();
        script.push_str(&self.names.batch(all, &[]));
        self.run(&script)
    }

    fn intact(&self) -> bool {
        std::process::Command::new("nft")
            .args(["list", "set", "inet", &self.names.table, &self.names.set_v4])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub bans: BanConfig,
    /// Active bans, kept across restarts.
    pub store: PathBuf,
    /// How often changes are pushed to the exporter (and expiry runs).
    pub flush_interval: Duration,
    /// The nftables names, when bans go to nftables.
    pub nft: Option<NftNames>,
}

pub struct Firewall {
    pub cfg: FirewallConfig,
    engine: Mutex<Engine>,
    /// Changes not yet pushed to the exporter.
    pending: Mutex<(Vec<Element>, Vec<IpNet>)>,
    exporter: Option<Box<dyn Exporter>>,
    events: EventBus,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Firewall {
    /// Builds the firewall and restores the stored bans (those still
    /// running).
    pub fn new(cfg: FirewallConfig, events: EventBus) -> Firewall {
        let exporter: Option<Box<dyn Exporter>> = cfg
            .nft
            .clone()
            .map(|names| Box::new(NftExporter { names }) as Box<dyn Exporter>);
        Firewall::with_exporter(cfg, events, exporter)
    }

    pub fn with_exporter(cfg: FirewallConfig, events: EventBus, exporter: Option<Box<dyn Exporter>>) -> Firewall {
        let mut engine = Engine::new(cfg.bans.clone());
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
            exporter,
            events,
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the listener should refuse this client (never in dry run).
    pub fn is_banned(&self, ip: IpAddr) -> Option<Ban> {
        self.engine().is_banned(ip, now()).cloned()
    }

    /// Active bans.
    pub fn bans(&self) -> Vec<Ban> {
        self.engine().bans().into_iter().cloned().collect()
    }

    /// Feeds one event; returns the decision for an offence.
    pub fn observe(&self, event: &Event) -> Option<Decision> {
        let (ip, offence) = Offence::of(event)?;
        let t = now();
        let decision = self.engine().record(t, ip, offence);
        match &decision {
            Decision::Ban(b) | Decision::Aggregated(b) => {
                if !self.cfg.bans.dry_run {
                    let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.0.push(Element {
                        net: b.net,
                        timeout_secs: b.until.saturating_sub(t),
                    });
                }
                self.events.emit(Event::BanAdded {
                    net: b.net.to_string(),
                    offence: b.offence.as_str(),
                    until: b.until,
                    strike: b.strike,
                    rule: b.rule.clone(),
                    dry_run: self.cfg.bans.dry_run,
                });
            }
            Decision::Allowlisted { ip, offence } => self.events.emit(Event::Warning {
                component: "firewall",
                message: format!("not banning allowlisted {ip} ({})", offence.as_str()),
            }),
            Decision::Counted | Decision::AlreadyBanned => {}
        }
        Some(decision)
    }

    /// Pushes pending changes, expires bans, saves the store, and repairs
    /// the exporter's state if it is gone.
    pub fn flush(&self) {
        let t = now();
        let expired = self.engine().expire(t);
        for net in &expired {
            self.events.emit(Event::BanRemoved { net: net.to_string() });
        }
        let (add, _) = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        // Expired elements leave the kernel by their own timeouts.
        let changed = !add.is_empty() || !expired.is_empty();
        if let Some(ex) = &self.exporter {
            let result = if ex.intact() {
                ex.apply(&add, &[])
            } else {
                ex.reconcile(&self.elements(t))
            };
            if let Err(e) = result {
                self.events.emit(Event::Warning {
                    component: "firewall",
                    message: e,
                });
            }
        }
        if changed && let Err(e) = save_store(&self.cfg.store, &self.bans()) {
            self.events.emit(Event::Warning {
                component: "firewall",
                message: format!("{}: {e}", self.cfg.store.display()),
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
        if self.exporter.is_some() {
            let this = self.clone();
            let res = tokio::task::spawn_blocking(move || match &this.exporter {
                Some(ex) => ex.reconcile(&this.elements(now())),
                None => Ok(()),
            })
            .await;
            if let Ok(Err(e)) = res {
                self.events.emit(Event::Warning {
                    component: "firewall",
                    message: e,
                });
            }
        }
        let mut tick = tokio::time::interval(self.cfg.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Ok(e) => { self.observe(&e); }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "firewall fell behind the event bus");
                    }
                    Err(_) => break,
                },
                _ = tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.flush()).await;
                }
            }
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush()).await;
    }
}

fn load_store(path: &PathBuf) -> Vec<Ban> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_store(path: &PathBuf, bans: &[Ban]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(bans).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
