//! A [`StateStore`] shared by several nodes: each operation goes to a
//! network engine (a [`Backend`]: Valkey/Redis in `state::redis`) within a
//! deadline, and falls back to this node's [`MemoryStore`] when the engine
//! is away or slow. What each operation falls back to is decided here, in
//! one place:
//!
//! - rates: this node's count, at the limit divided by the nodes the
//!   heartbeat last saw (so the cluster as a whole stays near the limit);
//! - greylisting: passes (`open`) or defers (`closed`) per
//!   `greylist.on_store_failure`, counted;
//! - call-ahead: this node's cache (every answer is kept there too);
//! - offences: this node's windows.
//!
//! A failed or late operation marks the engine down: until the next
//! heartbeat (every second) answers within `cluster.timeout`, operations
//! go straight to the local store without waiting, so a session waits at
//! most `cluster.timeout` once, not on every command, and a store that is
//! slow rather than gone does not flap. `sluice_cluster_up` shows which.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{GreyPolicy, MemoryStore, Rate, SharedSlotId, StateStore, StoreFailure, StoreFuture, Verdict, Verified};
use crate::metrics::Metrics;

/// How often a node says it is alive (and how often a down engine is
/// tried again).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is no longer counted.
pub const NODE_TTL: Duration = Duration::from_secs(10);

/// Why the engine did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not connected yet")]
    NotConnected,
    #[error("{0}")]
    Engine(String),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// The engine's side of each shared operation, atomic on its key (the
/// Redis backend runs each as one Lua script).
pub trait Backend: Send + Sync + 'static {
    /// A sliding-window count as [`MemoryStore::hit`], timed by the engine.
    fn hit(
        &self,
        rate: Rate,
        key: IpAddr,
        n: u32,
        limit: u32,
        window: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>>;
    /// Greylisting as [`MemoryStore::greylist`] (postgrey's semantics).
    fn greylist<'a>(
        &'a self,
        net: &'a str,
        key: &'a str,
        now: u64,
        p: &'a GreyPolicy,
    ) -> StoreFuture<'a, Result<Verdict, StoreError>>;
    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Result<Option<Verified>, StoreError>>;
    fn remember<'a>(&'a self, key: &'a str, answer: &'a Verified) -> StoreFuture<'a, Result<(), StoreError>>;
    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Result<Option<Vec<u64>>, StoreError>>;
    /// Takes a session slot of `key` for `member` (this node's run) when
    /// the slots held by members alive (heard from within `ttl`) stay
    /// within `limit`; a dead node's slots are dropped.
    fn acquire(
        &self,
        key: IpAddr,
        limit: u32,
        member: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>>;
    /// Gives a slot back; the future owns what it needs (it runs after
    /// the session).
    fn release(&self, key: IpAddr, member: String) -> StoreFuture<'static, Result<(), StoreError>>;
    /// Says `node` is alive; the nodes heard from within `ttl`. Also where
    /// a backend (re)connects.
    fn heartbeat<'a>(&'a self, node: &'a str, ttl: Duration) -> StoreFuture<'a, Result<u32, StoreError>>;
}

/// A run of `node`: its name and the time now.
fn run_name(node: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{node}#{}", t.as_nanos())
}

pub struct SharedStore<B> {
    backend: B,
    local: MemoryStore,
    timeout: Duration,
    /// `cluster.node`.
    node: String,
    /// This node's run in the heartbeat and the session counts: the node's
    /// name and when the run began, so the slots of a run that died are
    /// dropped once it is no longer heard from, even when the node comes
    /// back under the same name. A new run begins each time the store goes
    /// away: the slots the node could not give back meanwhile go with the
    /// old one.
    run: std::sync::RwLock<String>,
    /// The last heartbeat answered and no operation failed since.
    up: AtomicBool,
    /// Nodes the last heartbeat saw (at least 1).
    nodes: AtomicU32,
    metrics: Arc<Metrics>,
}

impl<B: Backend> SharedStore<B> {
    /// Down until the first heartbeat answers ([`run`](Self::run) beats
    /// at once).
    pub fn new(backend: B, timeout: Duration, node: String, metrics: Arc<Metrics>) -> Self {
        metrics.cluster_up.set(0);
        metrics.cluster_nodes.set(0);
        Self {
            backend,
            local: MemoryStore::default(),
            timeout,
            run: std::sync::RwLock::new(run_name(&node)),
            node,
            up: AtomicBool::new(false),
            nodes: AtomicU32::new(1),
            metrics,
        }
    }

    /// This node's current run (see the field).
    pub fn run_name(&self) -> String {
        self.run.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Nodes the last heartbeat saw (1 before any).
    pub fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Relaxed)
    }

    /// One heartbeat; true when the engine answered.
    pub async fn beat(&self) -> bool {
        let t0 = Instant::now();
        let res = tokio::time::timeout(HEARTBEAT, self.backend.heartbeat(&self.run_name(), NODE_TTL)).await;
        self.metrics
            .cluster_op
            .with_label_values(&["heartbeat"])
            .observe(t0.elapsed().as_secs_f64());
        let took = t0.elapsed();
        match res {
            // An answer slower than the sessions may wait keeps a store
            // that is away down: it would only time out operations one by
            // one. A store that is up stays up: its operations are timed
            // one by one, and the first that is late marks it down (one
            // slow beat on a busy host must not make every node count
            // alone for a second).
            Ok(Ok(_)) if took > self.timeout && !self.up.load(Ordering::Relaxed) => {
                self.metrics.cluster_errors.with_label_values(&["heartbeat"]).inc();
                self.down("heartbeat", &format!("answered in {took:?}, over cluster.timeout"));
                false
            }
            Ok(Ok(n)) => {
                let n = n.max(1);
                self.nodes.store(n, Ordering::Relaxed);
                self.metrics.cluster_nodes.set(i64::from(n));
                self.metrics.cluster_up.set(1);
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(nodes = n, "shared store answers: per-client state is shared");
                }
                true
            }
            res => {
                let error = match res {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                self.metrics.cluster_errors.with_label_values(&["heartbeat"]).inc();
                self.down("heartbeat", &error);
                false
            }
        }
    }

    /// Beats every [`HEARTBEAT`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = self.beat() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    fn down(&self, op: &str, error: &str) {
        self.metrics.cluster_up.set(0);
        if self.up.swap(false, Ordering::Relaxed) {
            *self.run.write().unwrap_or_else(|p| p.into_inner()) = run_name(&self.node);
            tracing::warn!(
                op,
                error,
                "shared store away: each node uses its own state until it answers"
            );
        }
    }

    /// Runs `f` within the timeout while the engine is up; `None` (counted
    /// as a fallback of `op`) when it is down, fails or is late.
    async fn call<T>(&self, op: &'static str, f: StoreFuture<'_, Result<T, StoreError>>) -> Option<T> {
        if !self.is_up() {
            self.metrics.cluster_fallbacks.with_label_values(&[op]).inc();
            return None;
        }
        let t0 = Instant::now();
        let res = tokio::time::timeout(self.timeout, f).await;
        self.metrics
            .cluster_op
            .with_label_values(&[op])
            .observe(t0.elapsed().as_secs_f64());
        let error = match res {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.metrics.cluster_errors.with_label_values(&[op]).inc();
        self.metrics.cluster_fallbacks.with_label_values(&[op]).inc();
        self.down(op, &error);
        None
    }
}

impl<B: Backend> StateStore for SharedStore<B> {
    fn local(&self) -> &MemoryStore {
        &self.local
    }

    fn hit(
        &self,
        rate: Rate,
        key: IpAddr,
        n: u32,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            match self.call("rate", self.backend.hit(rate, key, n, limit, window)).await {
                Some(ok) => ok,
                None => {
                    let share = (limit / self.nodes()).max(1);
                    self.local.hit(rate, key, n, share, window, now)
                }
            }
        })
    }

    fn greylist<'a>(&'a self, net: &'a str, key: &'a str, now: u64, p: &'a GreyPolicy) -> StoreFuture<'a, Verdict> {
        Box::pin(async move {
            match self.call("greylist", self.backend.greylist(net, key, now, p)).await {
                Some(v) => v,
                None => match p.on_store_failure {
                    StoreFailure::Open => Verdict::Pass,
                    StoreFailure::Closed => Verdict::Wait(p.delay),
                },
            }
        })
    }

    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Option<Verified>> {
        Box::pin(async move {
            match self.call("callahead_get", self.backend.verified(key, now)).await {
                Some(v) => v,
                None => self.local.verified(key, now),
            }
        })
    }

    fn remember<'a>(&'a self, key: &'a str, answer: Verified) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.call("callahead_set", self.backend.remember(key, &answer)).await;
            self.local.remember(key, answer);
        })
    }

    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Option<Vec<u64>>> {
        Box::pin(async move {
            match self
                .call("offence", self.backend.offence(ip, kind, now, window, count))
                .await
            {
                Some(v) => v,
                None => self.local.offence(ip, kind, now, window, count),
            }
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// While the store is away only the node's own count applies (the
    /// listener's `per_ip_connections`).
    fn acquire_shared(&self, key: IpAddr, limit: u32) -> StoreFuture<'_, Option<SharedSlotId>> {
        Box::pin(async move {
            let run = self.run_name();
            match self
                .call("session", self.backend.acquire(key, limit, &run, NODE_TTL))
                .await
            {
                Some(true) => Some(SharedSlotId::Shared(run)),
                Some(false) => None,
                None => Some(SharedSlotId::Untracked),
            }
        })
    }

    fn release_shared(&self, key: IpAddr, slot: SharedSlotId) {
        let SharedSlotId::Shared(member) = slot else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let release = self.backend.release(key, member);
        // A slot not given back (the store away) is dropped with this
        // run's membership, or when the client's count expires.
        rt.spawn(async move {
            let _ = tokio::time::timeout(HEARTBEAT, release).await;
        });
    }
}

#[cfg(test)]
mod tests;
