//! Per-client state behind one seam: the connection, message and
//! recipient rates, concurrent sessions, greylisting's triplets, the
//! call-ahead cache and the ban engine's offence windows. Each operation
//! is atomic on its key and says what it means (no read-modify-write by
//! the caller), so a shared engine runs each as one script on one key and
//! several nodes see one state.
//!
//! [`MemoryStore`] keeps it in this process (sharded maps, no global
//! lock). With `[cluster]`, [`redis::RedisStore`] shares it in
//! Valkey/Redis ([`shared`] decides what each operation falls back to when
//! the store is away). What the listener asks before the greeting (the
//! connection rate, concurrent sessions), the greylist snapshot and the
//! strike history stay per node, in [`StateStore::local`]. The bans
//! themselves are the firewall's (its store and exporters).
mod memory;
pub mod redis;
pub mod shared;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::config::greylist::StoreFailure;
pub use memory::MemoryStore;

/// The rates counted per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    Connections,
    Messages,
    Recipients,
    /// Call-ahead probes a client causes.
    Probes,
}

/// Greylisting's timing (postgrey's semantics), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreyPolicy {
    /// A retry passes after this long.
    pub delay: u64,
    /// ... and within this long of the first try.
    pub retry_window: u64,
    /// A passed triplet (and a client's pass count) is kept this long.
    pub max_age: u64,
    /// A client network with this many passes skips greylisting (0: never).
    pub auto_allowlist_after: u32,
    /// When a shared store cannot answer.
    pub on_store_failure: StoreFailure,
}

/// What greylisting says about one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Come back in this many seconds.
    Wait(u64),
}

/// One greylist record, for snapshots: a triplet (`first`, `last`,
/// `passed`) or a client network (`passes`, `last`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreyRecord {
    Triplet {
        key: String,
        first: u64,
        last: u64,
        passed: bool,
    },
    Client {
        net: String,
        passes: u32,
        last: u64,
    },
}

/// A call-ahead answer: the recipient exists or not, with the next hop's
/// reply, until `expires` (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub exists: bool,
    pub reply: String,
    pub expires: u64,
}

/// What a shared operation returns: the in-process store answers at once,
/// a network store within `cluster.timeout`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The state a transaction asks about, behind one seam. The operations a
/// session awaits are async (a shared store answers over the network,
/// within a deadline); each is atomic on its key. What the listener asks
/// synchronously before the greeting (connection rate, concurrent
/// sessions), the greylist snapshot and the ban engine's strike history
/// are per node: they live in [`local`](Self::local).
pub trait StateStore: Send + Sync + 'static {
    /// The in-process store: the connection filters, the snapshot, and
    /// what a shared store falls back to.
    fn local(&self) -> &MemoryStore;

    /// Counts `n` events of `rate` for the client `key` (an IPv4 address
    /// or an IPv6 /64) over a sliding `window`; false when that goes over
    /// `limit` (the events still count, so a client hammering on stays
    /// refused).
    fn hit(&self, rate: Rate, key: IpAddr, n: u32, limit: u32, window: Duration, now: Instant)
    -> StoreFuture<'_, bool>;

    /// Greylisting of the triplet `key` of the client network `net` at
    /// `now`: decides and records in one step.
    fn greylist<'a>(&'a self, net: &'a str, key: &'a str, now: u64, policy: &'a GreyPolicy)
    -> StoreFuture<'a, Verdict>;

    /// The call-ahead answer for `key` while it is fresh at `now`.
    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Option<Verified>>;

    fn remember<'a>(&'a self, key: &'a str, answer: Verified) -> StoreFuture<'a, ()>;

    /// Records an offence of `kind` by `ip` at `now`: when `count` of them
    /// fall within `window` seconds, their times (the evidence of a ban,
    /// then forgotten); `None` while fewer.
    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Option<Vec<u64>>>;

    /// Whether the store is shared by several nodes: then the sessions
    /// per client are also counted across the nodes
    /// ([`acquire_shared`](Self::acquire_shared)), on top of each node's
    /// own count.
    fn is_shared(&self) -> bool {
        false
    }

    /// Takes a session slot for `key` in the count across the nodes when
    /// fewer than `limit` are held there; `None` when not. The in-process
    /// store counts nothing here (the listener's count is the node's).
    fn acquire_shared(&self, _key: IpAddr, _limit: u32) -> StoreFuture<'_, Option<SharedSlotId>> {
        Box::pin(std::future::ready(Some(SharedSlotId::Untracked)))
    }

    /// Gives back a slot [`acquire_shared`](Self::acquire_shared) took (in
    /// the background: a session's end does not wait).
    fn release_shared(&self, _key: IpAddr, _slot: SharedSlotId) {}
}

/// Where a session slot across the nodes was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedSlotId {
    /// Nowhere: no shared count (or the store was away).
    Untracked,
    /// In the shared store, under this node's member name.
    Shared(String),
}
