//! The Valkey/Redis [`Backend`] of the shared store (`[cluster]`).
//!
//! Every operation is one Lua script on one key (two for greylisting: the
//! triplet and its client network, under one hash tag), sent by EVALSHA
//! (loaded on first use, again after a server restart), so a node never
//! sees half of another's update. Rates are timed by the server's clock
//! (`TIME`), so nodes with skewed clocks count the same window; greylist
//! and call-ahead times are the node's Unix seconds, as in the snapshot.
//!
//! One multiplexed connection per node ([`ConnectionManager`]: reconnects
//! by itself); with Sentinel, the master is asked for when a heartbeat
//! fails. Keys expire by themselves (`PEXPIRE`/`EXPIRE`/`EXAT`): nothing
//! sweeps the server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::shared::{Backend, SharedStore, StoreError};
use super::{GreyPolicy, Rate, StoreFuture, Verdict, Verified};
use crate::config::cluster::{ClusterConfig, Endpoint};
use crate::metrics::Metrics;

/// The [`StateStore`](super::StateStore) of `[cluster]`.
pub type RedisStore = SharedStore<RedisBackend>;

/// Builds the store for `cfg` (no connection yet: the first heartbeat
/// makes it).
pub fn store(cfg: &ClusterConfig, metrics: Arc<Metrics>) -> RedisStore {
    SharedStore::new(RedisBackend::new(cfg), cfg.timeout, cfg.node.clone(), metrics)
}

/// Sliding window over the current and previous fixed windows (as
/// `MemoryStore::hit`), in the server's milliseconds.
/// KEYS[1] the client's window; ARGV window (ms), n, limit. 1: within.
const RATE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win, n, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local s, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
if not s or now - s >= 2 * win then
  s, c, p = now, 0, 0
elseif now - s >= win then
  s, p, c = s + win, c, 0
end
c = c + n
local into = (now - s) / win
local est = p * math.max(0, 1 - into) + c
redis.call('HSET', KEYS[1], 's', string.format('%d', s), 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], 2 * win)
if est <= limit then return 1 else return 0 end
"#;

/// Postgrey's semantics, as `MemoryStore::greylist`. KEYS[1] the triplet,
/// KEYS[2] its client network; ARGV now, delay, retry_window, max_age,
/// auto_allowlist_after. -1: pass; else the seconds to wait.
const GREYLIST: &str = r#"
local now, delay, rw, maxage, auto = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function pass()
  redis.call('HINCRBY', KEYS[2], 'passes', 1)
  redis.call('HSET', KEYS[2], 'last', now)
  redis.call('EXPIRE', KEYS[2], maxage)
  return -1
end
if auto > 0 then
  local c = redis.call('HMGET', KEYS[2], 'passes', 'last')
  local passes, last = tonumber(c[1]), tonumber(c[2])
  if passes and passes >= auto and math.max(0, now - last) <= maxage then return pass() end
end
local t = redis.call('HMGET', KEYS[1], 'first', 'last', 'passed')
local first, last, passed = tonumber(t[1]), tonumber(t[2]), t[3] == '1'
local stale
if not first then stale = true
elseif passed then stale = math.max(0, now - last) > maxage
else stale = math.max(0, now - first) > rw end
if stale then first, last, passed = now, now, false end
if passed then
  redis.call('HSET', KEYS[1], 'last', now)
  redis.call('EXPIRE', KEYS[1], maxage)
  return pass()
end
local waited = math.max(0, now - first)
if waited >= delay and waited > 0 then
  redis.call('HSET', KEYS[1], 'first', first, 'last', now, 'passed', 1)
  redis.call('EXPIRE', KEYS[1], maxage)
  return pass()
end
redis.call('HSET', KEYS[1], 'first', first, 'last', last, 'passed', 0)
redis.call('EXPIRE', KEYS[1], math.max(1, first + rw - now + 1))
return delay - waited
"#;

/// An offence window, as `MemoryStore::offence`. KEYS[1] the (client,
/// kind) list of times; ARGV now, window, count. The times when the rule
/// fires (then forgotten), else an empty list.
const OFFENCE: &str = r#"
local now, w, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('RPUSH', KEYS[1], now)
while true do
  local f = redis.call('LINDEX', KEYS[1], 0)
  if f and tonumber(f) + w <= now then redis.call('LPOP', KEYS[1]) else break end
end
if redis.call('LLEN', KEYS[1]) >= count then
  local all = redis.call('LRANGE', KEYS[1], 0, -1)
  redis.call('DEL', KEYS[1])
  return all
end
redis.call('EXPIRE', KEYS[1], math.max(1, w))
return {}
"#;

/// Sessions of one client across the nodes. KEYS[1] the client's count
/// per member (a node's run), KEYS[2] the nodes' heartbeats; ARGV member,
/// limit, ttl. Members not heard from within ttl are dropped (a dead
/// node's slots). 1: taken.
const ACQUIRE: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local total = 0
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local m, c = h[i], tonumber(h[i + 1])
  local seen = redis.call('ZSCORE', KEYS[2], m)
  if m ~= ARGV[1] and (not seen or tonumber(seen) < now - ttl) then
    redis.call('HDEL', KEYS[1], m)
  elseif c > 0 then
    total = total + c
  end
end
redis.call('EXPIRE', KEYS[1], 86400)
if total > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  return 0
end
return 1
"#;

/// KEYS[1] the nodes (sorted by last beat, server seconds); ARGV node,
/// ttl. The nodes heard from within ttl.
const HEARTBEAT: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// A client of the store at `endpoint`; with Sentinel, the master the
/// sentinels name now.
pub async fn client(endpoint: &Endpoint) -> Result<redis::Client, StoreError> {
    let client = match endpoint {
        Endpoint::Url(url) => redis::Client::open(url.as_str()).map_err(engine)?,
        Endpoint::Sentinel {
            sentinels,
            master,
            node,
        } => {
            let addrs: Vec<String> = sentinels
                .iter()
                .map(|s| {
                    if s.contains("://") {
                        s.clone()
                    } else {
                        format!("redis://{s}")
                    }
                })
                .collect();
            let mut info = redis::sentinel::SentinelNodeConnectionInfo::default();
            if let Some(url) = node {
                let ci = url.as_str().into_connection_info().map_err(engine)?;
                info = info.set_redis_connection_info(ci.redis_settings().clone());
            }
            let mut sc = redis::sentinel::SentinelClient::build(
                addrs,
                master.clone(),
                Some(info),
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(engine)?;
            sc.async_get_client().await.map_err(engine)?
        }
    };
    Ok(client)
}

pub struct RedisBackend {
    endpoint: Endpoint,
    prefix: String,
    conn: std::sync::RwLock<Option<ConnectionManager>>,
    rate: Script,
    greylist: Script,
    offence: Script,
    acquire: Script,
    heartbeat: Script,
}

fn engine(e: redis::RedisError) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn rate_name(rate: Rate) -> &'static str {
    match rate {
        Rate::Connections => "conn",
        Rate::Messages => "msg",
        Rate::Recipients => "rcpt",
        Rate::Probes => "probe",
    }
}

impl RedisBackend {
    pub fn new(cfg: &ClusterConfig) -> Self {
        Self {
            endpoint: cfg.endpoint.clone(),
            prefix: cfg.prefix.clone(),
            conn: std::sync::RwLock::new(None),
            rate: Script::new(RATE),
            greylist: Script::new(GREYLIST),
            offence: Script::new(OFFENCE),
            acquire: Script::new(ACQUIRE),
            heartbeat: Script::new(HEARTBEAT),
        }
    }

    fn manager_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
    }

    /// The connection, when one was made.
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::NotConnected)
    }

    /// Makes the connection (lazy: it connects on first use). With
    /// Sentinel, asks the sentinels for the master first.
    async fn connect(&self) -> Result<ConnectionManager, StoreError> {
        let client = client(&self.endpoint).await?;
        let m = ConnectionManager::new_lazy_with_config(client, Self::manager_config()).map_err(engine)?;
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
        Ok(m)
    }
}

impl Backend for RedisBackend {
    fn hit(
        &self,
        rate: Rate,
        key: IpAddr,
        n: u32,
        limit: u32,
        window: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn()?;
            let k = format!("{}rate:{}:{key}", self.prefix, rate_name(rate));
            let within: i64 = self
                .rate
                .key(k)
                .arg(window.as_millis().max(1) as u64)
                .arg(n)
                .arg(limit)
                .invoke_async(&mut c)
                .await
                .map_err(engine)?;
            Ok(within == 1)
        })
    }

    fn greylist<'a>(
        &'a self,
        net: &'a str,
        key: &'a str,
        now: u64,
        p: &'a GreyPolicy,
    ) -> StoreFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn()?;
            // One hash tag per client network: both keys on one shard.
            let client = format!("{}grey:{{{net}}}", self.prefix);
            let triplet = format!("{client}:{key}");
            let v: i64 = self
                .greylist
                .key(triplet)
                .key(client)
                .arg(now)
                .arg(p.delay)
                .arg(p.retry_window)
                .arg(p.max_age)
                .arg(p.auto_allowlist_after)
                .invoke_async(&mut c)
                .await
                .map_err(engine)?;
            match v {
                -1 => Ok(Verdict::Pass),
                w if w >= 0 => Ok(Verdict::Wait(w as u64)),
                w => Err(StoreError::Answer(format!("greylist script returned {w}"))),
            }
        })
    }

    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Result<Option<Verified>, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn()?;
            let v: Option<String> = redis::cmd("GET")
                .arg(format!("{}ca:{key}", self.prefix))
                .query_async(&mut c)
                .await
                .map_err(engine)?;
            let Some(v) = v else { return Ok(None) };
            let mut parts = v.splitn(3, '\t');
            let (Some(exists), Some(expires), Some(reply)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(StoreError::Answer(format!("call-ahead entry {v:?}")));
            };
            let expires: u64 = expires
                .parse()
                .map_err(|_| StoreError::Answer(format!("call-ahead entry {v:?}")))?;
            Ok((expires > now).then(|| Verified {
                exists: exists == "1",
                reply: reply.to_string(),
                expires,
            }))
        })
    }

    fn remember<'a>(&'a self, key: &'a str, a: &'a Verified) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.conn()?;
            let value = format!("{}\t{}\t{}", u8::from(a.exists), a.expires, a.reply);
            let () = redis::cmd("SET")
                .arg(format!("{}ca:{key}", self.prefix))
                .arg(value)
                .arg("EXAT")
                .arg(a.expires)
                .query_async(&mut c)
                .await
                .map_err(engine)?;
            Ok(())
        })
    }

    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Result<Option<Vec<u64>>, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn()?;
            let times: Vec<u64> = self
                .offence
                .key(format!("{}off:{kind}:{ip}", self.prefix))
                .arg(now)
                .arg(window)
                .arg(count)
                .invoke_async(&mut c)
                .await
                .map_err(engine)?;
            Ok((!times.is_empty()).then_some(times))
        })
    }

    fn acquire(
        &self,
        key: IpAddr,
        limit: u32,
        member: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>> {
        let member = member.to_string();
        Box::pin(async move {
            let mut c = self.conn()?;
            let taken: i64 = self
                .acquire
                .key(format!("{}sessions:{key}", self.prefix))
                .key(format!("{}nodes", self.prefix))
                .arg(member)
                .arg(limit)
                .arg(ttl.as_secs().max(1))
                .invoke_async(&mut c)
                .await
                .map_err(engine)?;
            Ok(taken == 1)
        })
    }

    fn release(&self, key: IpAddr, member: String) -> StoreFuture<'static, Result<(), StoreError>> {
        let conn = self.conn();
        let k = format!("{}sessions:{key}", self.prefix);
        Box::pin(async move {
            let mut c = conn?;
            let _: i64 = redis::cmd("HINCRBY")
                .arg(k)
                .arg(member)
                .arg(-1)
                .query_async(&mut c)
                .await
                .map_err(engine)?;
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, node: &'a str, ttl: Duration) -> StoreFuture<'a, Result<u32, StoreError>> {
        Box::pin(async move {
            let mut c = match self.conn() {
                Ok(c) => c,
                Err(_) => self.connect().await?,
            };
            let res: Result<u32, _> = self
                .heartbeat
                .key(format!("{}nodes", self.prefix))
                .arg(node)
                .arg(ttl.as_secs().max(1))
                .invoke_async(&mut c)
                .await;
            if res.is_err() && matches!(self.endpoint, Endpoint::Sentinel { .. }) {
                // Ask the sentinels again next time: the master may have moved.
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
            res.map_err(engine)
        })
    }
}
