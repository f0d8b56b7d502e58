//! Cluster-wide bans (`[cluster]`): the ban stream.
//!
//! A ban decided on a node (by its offences, or `sluice bans add/del`) is
//! put in the node's [`Outbox`]; the publisher appends it to the stream
//! `<prefix>bans:stream` (`XADD`, entries `op`, `net`, `until`, `node`,
//! `ts_ms`, `ban`) and keeps the active set `<prefix>bans:active` (sorted
//! set of nets, score = until; the bans themselves in the hash
//! `<prefix>bans:data`) in one transaction. While the store is away the
//! outbox keeps them (bounded: the oldest go first) and the node enforces
//! them alone; they are published when it is back.
//!
//! The follower, on a connection of its own (`XREAD BLOCK` holds it),
//! loads the active set first, then reads the stream from the entry
//! before the load (after a reconnect: from the last entry it read, so
//! nothing is missed) and applies other nodes' changes to this node's
//! listener and kernel ([`Firewall::apply_remote`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::Ban;
use super::service::Firewall;
use crate::config::cluster::ClusterConfig;
use crate::metrics::Metrics;

/// One change of the ban table, as the stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BanChange {
    Add { ban: Ban },
    Del { net: IpNet },
}

impl BanChange {
    pub fn net(&self) -> IpNet {
        match self {
            BanChange::Add { ban } => ban.net,
            BanChange::Del { net } => *net,
        }
    }
}

/// A change and when it was decided (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub change: BanChange,
    pub ts_ms: u64,
}

/// Local changes not yet published.
pub struct Outbox {
    queue: Mutex<VecDeque<Stamped>>,
    notify: Notify,
    cap: usize,
    metrics: Arc<Metrics>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Outbox {
    pub fn new(cap: usize, metrics: Arc<Metrics>) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            cap: cap.max(1),
            metrics,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Stamped>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a change; when full, the oldest is dropped (the node still
    /// enforces it, the others will not hear of it).
    pub fn push(&self, change: BanChange) {
        let mut q = self.queue();
        if q.len() >= self.cap
            && let Some(old) = q.pop_front()
        {
            tracing::warn!(net = %old.change.net(), "ban outbox full: a ban change is not published to the cluster");
        }
        q.push_back(Stamped {
            change,
            ts_ms: now_ms(),
        });
        self.metrics.cluster_ban_outbox.set(q.len() as i64);
        drop(q);
        self.notify.notify_one();
    }

    /// Everything queued, oldest first.
    pub fn take(&self) -> Vec<Stamped> {
        let mut q = self.queue();
        let all: Vec<Stamped> = q.drain(..).collect();
        self.metrics.cluster_ban_outbox.set(0);
        all
    }

    /// Puts back what could not be published, before anything queued since.
    pub fn put_back(&self, batch: Vec<Stamped>) {
        let mut q = self.queue();
        for s in batch.into_iter().rev() {
            if q.len() >= self.cap {
                break;
            }
            q.push_front(s);
        }
        self.metrics.cluster_ban_outbox.set(q.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

/// The keys of the ban stream under `prefix`.
#[derive(Debug, Clone)]
struct Keys {
    stream: String,
    active: String,
    data: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            stream: format!("{prefix}bans:stream"),
            active: format!("{prefix}bans:active"),
            data: format!("{prefix}bans:data"),
        }
    }
}

/// What the active set holds per net: the ban and who decided it.
#[derive(Debug, Serialize, Deserialize)]
struct Active {
    node: String,
    ban: Ban,
}

/// How long the stream is kept (entries, approximately).
const STREAM_LEN: usize = 100_000;
/// How long the follower waits for new entries in one `XREAD`.
const BLOCK_MS: usize = 1000;
/// Wait before trying the store again.
const RETRY: Duration = Duration::from_millis(500);

/// Publishes the outbox and follows the stream until `stop`.
pub async fn run(fw: Arc<Firewall>, cfg: ClusterConfig, outbox: Arc<Outbox>, stop: CancellationToken) {
    let keys = Keys::new(&cfg.prefix);
    let metrics = fw.metrics();
    let publisher = publish_loop(&cfg, &keys, &outbox, &metrics, &stop);
    let follower = follow_loop(&fw, &cfg, &keys, &metrics, &stop);
    tokio::join!(publisher, follower);
}

async fn connect(cfg: &ClusterConfig, response: Duration) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = crate::state::redis::client(&cfg.endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let c = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(response));
    client
        .get_multiplexed_async_connection_with_config(&c)
        .await
        .map_err(|e| e.to_string())
}

async fn publish_loop(cfg: &ClusterConfig, keys: &Keys, outbox: &Outbox, metrics: &Metrics, stop: &CancellationToken) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut failing = false;
    loop {
        if outbox.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = outbox.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let batch = outbox.take();
        if batch.is_empty() {
            continue;
        }
        let result = match &mut conn {
            Some(c) => publish(c, cfg, keys, &batch).await,
            None => match connect(cfg, Duration::from_secs(2)).await {
                Ok(mut c) => {
                    let r = publish(&mut c, cfg, keys, &batch).await;
                    conn = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!("ban stream: publishing again");
                    failing = false;
                }
                metrics
                    .cluster_bans
                    .with_label_values(&["published"])
                    .inc_by(batch.len() as u64);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "ban stream: cannot publish; bans are enforced on this node only until the store is back");
                    failing = true;
                }
                conn = None;
                outbox.put_back(batch);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// One transaction: every change appended to the stream and applied to
/// the active set.
async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    cfg: &ClusterConfig,
    keys: &Keys,
    batch: &[Stamped],
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for s in batch {
        let net = s.change.net().to_string();
        let (op, until, ban) = match &s.change {
            BanChange::Add { ban } => ("add", ban.until, serde_json::to_string(ban).unwrap_or_default()),
            BanChange::Del { .. } => ("del", 0, String::new()),
        };
        pipe.cmd("XADD")
            .arg(&keys.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*")
            .arg("op")
            .arg(op)
            .arg("net")
            .arg(&net)
            .arg("until")
            .arg(until)
            .arg("node")
            .arg(&cfg.node)
            .arg("ts_ms")
            .arg(s.ts_ms)
            .arg("ban")
            .arg(&ban)
            .ignore();
        match &s.change {
            BanChange::Add { ban } => {
                let active = Active {
                    node: cfg.node.clone(),
                    ban: ban.clone(),
                };
                pipe.zadd(&keys.active, &net, ban.until).ignore();
                pipe.hset(&keys.data, &net, serde_json::to_string(&active).unwrap_or_default())
                    .ignore();
            }
            BanChange::Del { .. } => {
                pipe.zrem(&keys.active, &net).ignore();
                pipe.hdel(&keys.data, &net).ignore();
            }
        }
    }
    let fut = pipe.query_async::<()>(conn);
    match tokio::time::timeout(cfg.timeout.max(Duration::from_secs(1)), fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn follow_loop(fw: &Firewall, cfg: &ClusterConfig, keys: &Keys, metrics: &Metrics, stop: &CancellationToken) {
    let mut last: Option<String> = None;
    let mut failing = false;
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow(fw, cfg, keys, metrics, &mut last, &mut failing) => r,
        };
        if let Err(e) = r
            && !failing
        {
            tracing::warn!(error = %e, "ban stream: cannot follow; reading again from where it stopped once the store is back");
            failing = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Loads the active set, then follows the stream from `last` (or from
/// the entry before the load) until an error.
async fn follow(
    fw: &Firewall,
    cfg: &ClusterConfig,
    keys: &Keys,
    metrics: &Metrics,
    last: &mut Option<String>,
    failing: &mut bool,
) -> Result<(), String> {
    let err = |e: redis::RedisError| e.to_string();
    let mut conn = connect(cfg, Duration::from_millis(BLOCK_MS as u64) + Duration::from_secs(2)).await?;
    // Where to read from, captured before the load: nothing published
    // meanwhile is missed (at worst applied twice, which changes nothing).
    let from = match last.clone() {
        Some(id) => id,
        None => {
            let r: redis::streams::StreamRangeReply =
                conn.xrevrange_count(&keys.stream, "+", "-", 1).await.map_err(err)?;
            r.ids.first().map_or_else(|| "0-0".to_string(), |e| e.id.clone())
        }
    };
    let t = super::service::now();
    let expired: Vec<String> = conn.zrangebyscore(&keys.active, "-inf", t).await.map_err(err)?;
    if !expired.is_empty() {
        let _: () = redis::pipe()
            .zrem(&keys.active, &expired)
            .hdel(&keys.data, &expired)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
    }
    let nets: Vec<String> = conn
        .zrangebyscore(&keys.active, format!("({t}"), "+inf")
        .await
        .map_err(err)?;
    let mut loaded = 0;
    for chunk in nets.chunks(1000) {
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.data)
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        for a in values.into_iter().flatten() {
            if let Ok(a) = serde_json::from_str::<Active>(&a)
                && fw.load_remote(&BanChange::Add { ban: a.ban }, &a.node)
            {
                loaded += 1;
            }
        }
    }
    if *failing {
        tracing::info!(loaded, "ban stream: following again");
        *failing = false;
    } else {
        tracing::info!(loaded, "ban stream: the cluster's active bans loaded");
    }
    *last = Some(from);
    let opts = StreamReadOptions::default().block(BLOCK_MS).count(512);
    loop {
        let id = last.clone().unwrap_or_else(|| "$".into());
        let reply: Option<StreamReadReply> = conn.xread_options(&[&keys.stream], &[&id], &opts).await.map_err(err)?;
        let entries = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>());
        let Some(entries) = entries.filter(|e| !e.is_empty()) else {
            metrics.cluster_ban_stream_lag.set(0.0);
            continue;
        };
        for e in entries {
            *last = Some(e.id.clone());
            let field = |k: &str| e.get::<String>(k);
            let ts_ms = field("ts_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let age = now_ms().saturating_sub(ts_ms) as f64 / 1000.0;
            metrics.cluster_ban_stream_lag.set(age);
            let node = field("node").unwrap_or_default();
            if node == cfg.node {
                continue;
            }
            let change = match field("op").as_deref() {
                Some("add") => field("ban")
                    .and_then(|b| serde_json::from_str::<Ban>(&b).ok())
                    .map(|ban| BanChange::Add { ban }),
                Some("del") => field("net")
                    .and_then(|n| n.parse::<IpNet>().ok())
                    .map(|net| BanChange::Del { net }),
                _ => None,
            };
            let Some(change) = change else {
                tracing::warn!(id = %e.id, "ban stream: an entry sluice cannot read");
                continue;
            };
            if fw.apply_remote(&change, &node) {
                metrics.cluster_bans.with_label_values(&["applied"]).inc();
            }
            metrics.cluster_ban_propagation.observe(age);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(net: &str) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            offence: super::super::engine::Offence::UnknownUser,
            since: 1,
            until: u64::MAX / 2,
            rule: "r".into(),
            strike: 1,
            evidence: vec![],
        }
    }

    #[test]
    fn the_outbox_keeps_order_and_drops_the_oldest_when_full() {
        let m = Arc::new(Metrics::new());
        let o = Outbox::new(2, m.clone());
        o.push(BanChange::Add {
            ban: ban("192.0.2.1/32"),
        });
        o.push(BanChange::Add {
            ban: ban("192.0.2.2/32"),
        });
        o.push(BanChange::Del {
            net: "192.0.2.1/32".parse().unwrap(),
        });
        assert_eq!(m.cluster_ban_outbox.get(), 2);
        let batch = o.take();
        let nets: Vec<String> = batch.iter().map(|s| s.change.net().to_string()).collect();
        assert_eq!(nets, ["192.0.2.2/32", "192.0.2.1/32"]);
        assert!(matches!(batch[1].change, BanChange::Del { .. }));
        o.push(BanChange::Add {
            ban: ban("192.0.2.3/32"),
        });
        o.put_back(batch);
        // Put back before the newer one; the cap still holds.
        let again: Vec<String> = o.take().iter().map(|s| s.change.net().to_string()).collect();
        assert_eq!(again, ["192.0.2.1/32", "192.0.2.3/32"]);
    }
}
