//! The in-process [`StateStore`]: sharded maps (sessions on every worker
//! thread update them without a global lock). Rates are sliding windows
//! approximated from the current and previous fixed window, as in
//! Cloudflare's and pingora's estimators: O(1) memory per client, no
//! timestamps per event.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{GreyPolicy, GreyRecord, Rate, StateStore, StoreFuture, Verdict, Verified};

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Triplet {
    first: u64,
    last: u64,
    passed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientPasses {
    passes: u32,
    last: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    connections: DashMap<IpAddr, Window>,
    messages: DashMap<IpAddr, Window>,
    recipients: DashMap<IpAddr, Window>,
    probes: DashMap<IpAddr, Window>,
    sessions: DashMap<IpAddr, u32>,
    triplets: DashMap<String, Triplet>,
    clients: DashMap<String, ClientPasses>,
    grey_dirty: AtomicBool,
    verified: DashMap<String, Verified>,
    /// Offence times per (address, kind), oldest first.
    offences: DashMap<(IpAddr, &'static str), std::collections::VecDeque<u64>>,
    /// Start times of past bans per address, for escalation.
    strikes: DashMap<IpAddr, Vec<u64>>,
}

impl MemoryStore {
    fn rates(&self, rate: Rate) -> &DashMap<IpAddr, Window> {
        match rate {
            Rate::Connections => &self.connections,
            Rate::Messages => &self.messages,
            Rate::Recipients => &self.recipients,
            Rate::Probes => &self.probes,
        }
    }

    /// Greylist triplets and client networks held.
    pub fn grey_counts(&self) -> (usize, usize) {
        (self.triplets.len(), self.clients.len())
    }

    /// Clients with a rate window (tests, metrics).
    pub fn clients(&self, rate: Rate) -> usize {
        self.rates(rate).len()
    }

    fn count_pass(&self, net: &str, now: u64) {
        let mut c = self
            .clients
            .entry(net.to_string())
            .or_insert(ClientPasses { passes: 0, last: now });
        c.passes = c.passes.saturating_add(1);
        c.last = now;
        self.grey_dirty.store(true, Ordering::Relaxed);
    }
}

/// The operations, answered at once. Those a shared store also has are
/// reached through [`StateStore`] too; the rest are per node.
impl MemoryStore {
    pub fn hit(&self, rate: Rate, key: IpAddr, n: u32, limit: u32, window: Duration, now: Instant) -> bool {
        let mut w = self.rates(rate).entry(key).or_insert(Window {
            start: now,
            current: 0,
            previous: 0,
        });
        let elapsed = now.saturating_duration_since(w.start);
        if elapsed >= window * 2 {
            *w = Window {
                start: now,
                current: 0,
                previous: 0,
            };
        } else if elapsed >= window {
            *w = Window {
                start: w.start + window,
                current: 0,
                previous: w.current,
            };
        }
        w.current = w.current.saturating_add(n);
        let into = now.saturating_duration_since(w.start).as_secs_f64() / window.as_secs_f64();
        let estimate = f64::from(w.previous) * (1.0 - into).max(0.0) + f64::from(w.current);
        estimate <= f64::from(limit)
    }

    pub fn sweep(&self, rate: Rate, window: Duration, now: Instant) {
        self.rates(rate)
            .retain(|_, w| now.saturating_duration_since(w.start) < window * 2);
    }

    pub fn acquire(&self, key: IpAddr, limit: u32) -> bool {
        let mut n = self.sessions.entry(key).or_insert(0);
        if limit != 0 && *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, key: IpAddr) {
        self.sessions.remove_if_mut(&key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    pub fn greylist(&self, net: &str, key: &str, now: u64, p: &GreyPolicy) -> Verdict {
        // Copy out of the map before updating it (a DashMap guard held
        // across another access to the same shard would deadlock).
        let client = self.clients.get(net).map(|c| *c);
        if p.auto_allowlist_after > 0
            && let Some(c) = client
            && c.passes >= p.auto_allowlist_after
            && now.saturating_sub(c.last) <= p.max_age
        {
            self.count_pass(net, now);
            return Verdict::Pass;
        }
        self.grey_dirty.store(true, Ordering::Relaxed);
        let fresh = Triplet {
            first: now,
            last: now,
            passed: false,
        };
        let mut e = self.triplets.entry(key.to_string()).or_insert(fresh);
        let stale = if e.passed {
            now.saturating_sub(e.last) > p.max_age
        } else {
            now.saturating_sub(e.first) > p.retry_window
        };
        if stale {
            *e = fresh;
        }
        if e.passed {
            e.last = now;
            drop(e);
            self.count_pass(net, now);
            return Verdict::Pass;
        }
        let waited = now.saturating_sub(e.first);
        if waited >= p.delay && waited > 0 {
            e.passed = true;
            e.last = now;
            drop(e);
            self.count_pass(net, now);
            Verdict::Pass
        } else {
            Verdict::Wait(p.delay - waited)
        }
    }

    pub fn greylist_expire(&self, now: u64, p: &GreyPolicy) {
        self.triplets.retain(|_, e| {
            if e.passed {
                now.saturating_sub(e.last) <= p.max_age
            } else {
                now.saturating_sub(e.first) <= p.retry_window
            }
        });
        self.clients.retain(|_, c| now.saturating_sub(c.last) <= p.max_age);
    }

    pub fn greylist_snapshot(&self) -> (Vec<GreyRecord>, bool) {
        let changed = self.grey_dirty.swap(false, Ordering::Relaxed);
        let mut out = Vec::with_capacity(self.triplets.len() + self.clients.len());
        for r in self.triplets.iter() {
            let e = r.value();
            out.push(GreyRecord::Triplet {
                key: r.key().clone(),
                first: e.first,
                last: e.last,
                passed: e.passed,
            });
        }
        for r in self.clients.iter() {
            out.push(GreyRecord::Client {
                net: r.key().clone(),
                passes: r.value().passes,
                last: r.value().last,
            });
        }
        (out, changed)
    }

    pub fn greylist_restore(&self, records: Vec<GreyRecord>) {
        for r in records {
            match r {
                GreyRecord::Triplet {
                    key,
                    first,
                    last,
                    passed,
                } => {
                    self.triplets.insert(key, Triplet { first, last, passed });
                }
                GreyRecord::Client { net, passes, last } => {
                    self.clients.insert(net, ClientPasses { passes, last });
                }
            }
        }
    }

    pub fn verified(&self, key: &str, now: u64) -> Option<Verified> {
        // Clone out of the map before touching it again (no guard held).
        let hit = self.verified.get(key).map(|e| e.value().clone());
        match hit {
            Some(v) if v.expires > now => Some(v),
            Some(_) => {
                self.verified.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remember(&self, key: &str, answer: Verified) {
        self.verified.insert(key.to_string(), answer);
    }

    pub fn offence(&self, ip: IpAddr, kind: &'static str, now: u64, window: u64, count: u32) -> Option<Vec<u64>> {
        let mut q = self.offences.entry((ip, kind)).or_default();
        q.push_back(now);
        while q.front().is_some_and(|&t| t + window <= now) {
            q.pop_front();
        }
        ((q.len() as u64) >= u64::from(count)).then(|| q.drain(..).collect())
    }

    pub fn strike(&self, ip: IpAddr, now: u64, memory: u64) -> u32 {
        let mut past = self.strikes.entry(ip).or_default();
        past.retain(|&t| t + memory > now);
        past.push(now);
        past.len() as u32
    }

    /// Records a ban of `ip` at `at` decided elsewhere (another node of
    /// the cluster), so that this node's next ban of it escalates as the
    /// deciding node's would. A ban already recorded (same time) counts
    /// once.
    pub fn remember_strike(&self, ip: IpAddr, at: u64, now: u64, memory: u64) {
        if at + memory <= now {
            return;
        }
        let mut past = self.strikes.entry(ip).or_default();
        past.retain(|&t| t + memory > now);
        if !past.contains(&at) {
            past.push(at);
            past.sort_unstable();
        }
    }

    pub fn sweep_offences(&self, now: u64, window: &dyn Fn(&'static str) -> u64, memory: u64) {
        self.offences
            .retain(|(_, kind), q| q.back().is_some_and(|&t| t + window(kind) > now));
        self.strikes.retain(|_, past| past.iter().any(|&t| t + memory > now));
    }
}

impl StateStore for MemoryStore {
    fn local(&self) -> &MemoryStore {
        self
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
        Box::pin(std::future::ready(MemoryStore::hit(
            self, rate, key, n, limit, window, now,
        )))
    }

    fn greylist<'a>(&'a self, net: &'a str, key: &'a str, now: u64, p: &'a GreyPolicy) -> StoreFuture<'a, Verdict> {
        Box::pin(std::future::ready(MemoryStore::greylist(self, net, key, now, p)))
    }

    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Option<Verified>> {
        Box::pin(std::future::ready(MemoryStore::verified(self, key, now)))
    }

    fn remember<'a>(&'a self, key: &'a str, answer: Verified) -> StoreFuture<'a, ()> {
        MemoryStore::remember(self, key, answer);
        Box::pin(std::future::ready(()))
    }

    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Option<Vec<u64>>> {
        Box::pin(std::future::ready(MemoryStore::offence(
            self, ip, kind, now, window, count,
        )))
    }
}
