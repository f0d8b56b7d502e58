//! Per-client state behind one seam: the connection, message and
//! recipient rates, concurrent sessions, greylisting's triplets and the
//! call-ahead cache. Each operation is atomic on its key and says what it
//! means (no read-modify-write by the caller), so a shared engine can run
//! each as one script on one key and several nodes see one state.
//!
//! [`MemoryStore`] keeps it in this process (sharded maps, no global
//! lock). The ban engine's offence windows and strike history live here
//! too; the bans themselves are the firewall's (its store and exporters).

mod memory;

use std::net::IpAddr;
use std::time::Duration;

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

pub trait StateStore: Send + Sync + 'static {
    /// Counts `n` events of `rate` for the client `key` (an IPv4 address
    /// or an IPv6 /64) over a sliding `window`; false when that goes over
    /// `limit` (the events still count, so a client hammering on stays
    /// refused).
    fn hit(&self, rate: Rate, key: IpAddr, n: u32, limit: u32, window: Duration, now: tokio::time::Instant) -> bool;
    /// Forgets clients idle for two windows of `rate`.
    fn sweep(&self, rate: Rate, window: Duration, now: tokio::time::Instant);
    /// Takes a session slot for `key` if fewer than `limit` are held.
    fn acquire(&self, key: IpAddr, limit: u32) -> bool;
    /// Gives a slot back.
    fn release(&self, key: IpAddr);
    /// Greylisting of the triplet `key` of the client network `net` at
    /// `now`: decides and records in one step.
    fn greylist(&self, net: &str, key: &str, now: u64, policy: &GreyPolicy) -> Verdict;
    /// Drops expired greylist records.
    fn greylist_expire(&self, now: u64, policy: &GreyPolicy);
    /// Every greylist record, and whether any changed since the last call.
    fn greylist_snapshot(&self) -> (Vec<GreyRecord>, bool);
    /// Loads records (a saved snapshot).
    fn greylist_restore(&self, records: Vec<GreyRecord>);
    /// The call-ahead answer for `key` while it is fresh at `now`.
    fn verified(&self, key: &str, now: u64) -> Option<Verified>;
    fn remember(&self, key: &str, answer: Verified);
    /// Records an offence of `kind` by `ip` at `now`: when `count` of them
    /// fall within `window` seconds, their times (the evidence of a ban,
    /// then forgotten); `None` while fewer.
    fn offence(&self, ip: IpAddr, kind: &'static str, now: u64, window: u64, count: u32) -> Option<Vec<u64>>;
    /// Records a ban of `ip` at `now`; its strike number counting the bans
    /// within `memory` seconds (1 for the first).
    fn strike(&self, ip: IpAddr, now: u64, memory: u64) -> u32;
    /// Forgets offences whose newest is older than their `window(kind)`, and
    /// strikes older than `memory`.
    fn sweep_offences(&self, now: u64, window: &dyn Fn(&'static str) -> u64, memory: u64);
}
