//! Greylisting with postgrey's semantics.
//!
//! A triplet (client network: IPv4 /24 or IPv6 /64, sender, recipient) seen
//! for the first time gets `451 4.7.1` with a retry hint. A retry after
//! `delay` (300 s) and within `retry_window` (2 d) passes, and the triplet
//! is then accepted until unused for `max_age` (35 d). A client network
//! with `auto_allowlist_after` (5) passed deliveries skips greylisting.
//!
//! State is in memory (sharded maps) and written to a snapshot file every
//! few seconds when it changed and at shutdown (temp file, fsync, rename),
//! and read back at start: it survives restarts. A crash loses at most the
//! last few seconds of changes, which means a few senders are greylisted
//! once more, never that mail is lost.

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::{Check, CheckFuture, Decision, Refusal, SessionCtx, Stage};
use crate::proto::{Mailbox, Reply};

pub use crate::config::greylist::GreylistConfig;

/// Seconds since the epoch; injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    first: u64,
    last: u64,
    passed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientEntry {
    passes: u32,
    last: u64,
}

/// What greylisting says about one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Come back in this many seconds.
    Wait(u64),
}

pub struct Greylist {
    cfg: GreylistConfig,
    clock: Clock,
    triplets: DashMap<String, Entry>,
    clients: DashMap<String, ClientEntry>,
    dirty: AtomicBool,
}

/// The client network a triplet is keyed by.
pub fn client_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    }
}

impl Greylist {
    pub fn new(cfg: GreylistConfig, clock: Clock) -> Self {
        Self {
            cfg,
            clock,
            triplets: DashMap::new(),
            clients: DashMap::new(),
            dirty: AtomicBool::new(false),
        }
    }

    pub fn system_clock() -> Clock {
        Arc::new(crate::mail::date::now_secs)
    }

    fn key(net: &str, sender: Option<&Mailbox>, rcpt: &Mailbox) -> String {
        let s = sender.map_or_else(|| "<>".to_string(), Mailbox::key);
        format!("{net}/{s}/{}", rcpt.key())
    }

    /// Decides for one (client, sender, recipient) and records it.
    pub fn check(&self, ip: IpAddr, sender: Option<&Mailbox>, rcpt: &Mailbox) -> Verdict {
        let now = (self.clock)();
        let net = client_net(ip);
        let (delay, window, max_age) = (
            self.cfg.delay.as_secs(),
            self.cfg.retry_window.as_secs(),
            self.cfg.max_age.as_secs(),
        );
        // Copy out of the map before updating it (a DashMap guard held
        // across another access to the same shard would deadlock).
        let client = self.clients.get(&net).map(|c| *c);
        if self.cfg.auto_allowlist_after > 0
            && let Some(c) = client
            && c.passes >= self.cfg.auto_allowlist_after
            && now.saturating_sub(c.last) <= max_age
        {
            self.count_pass(&net, now);
            return Verdict::Pass;
        }
        let key = Self::key(&net, sender, rcpt);
        self.dirty.store(true, Ordering::Relaxed);
        let mut e = self.triplets.entry(key).or_insert(Entry {
            first: now,
            last: now,
            passed: false,
        });
        let fresh = Entry {
            first: now,
            last: now,
            passed: false,
        };
        let stale = if e.passed {
            now.saturating_sub(e.last) > max_age
        } else {
            now.saturating_sub(e.first) > window
        };
        if stale {
            *e = fresh;
        }
        if e.passed {
            e.last = now;
            drop(e);
            self.count_pass(&net, now);
            return Verdict::Pass;
        }
        let waited = now.saturating_sub(e.first);
        if waited >= delay && waited > 0 {
            e.passed = true;
            e.last = now;
            drop(e);
            self.count_pass(&net, now);
            Verdict::Pass
        } else {
            Verdict::Wait(delay - waited)
        }
    }

    fn count_pass(&self, net: &str, now: u64) {
        let mut c = self
            .clients
            .entry(net.to_string())
            .or_insert(ClientEntry { passes: 0, last: now });
        c.passes = c.passes.saturating_add(1);
        c.last = now;
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Drops expired entries.
    pub fn expire(&self) {
        let now = (self.clock)();
        let (window, max_age) = (self.cfg.retry_window.as_secs(), self.cfg.max_age.as_secs());
        self.triplets.retain(|_, e| {
            if e.passed {
                now.saturating_sub(e.last) <= max_age
            } else {
                now.saturating_sub(e.first) <= window
            }
        });
        self.clients.retain(|_, c| now.saturating_sub(c.last) <= max_age);
    }

    /// Writes the snapshot if anything changed (temp file, fsync, rename).
    pub fn save(&self) -> std::io::Result<bool> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let path = &self.cfg.state;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(w, "# sluice greylist v1")?;
        for r in self.triplets.iter() {
            let e = r.value();
            writeln!(w, "T\t{}\t{}\t{}\t{}", r.key(), e.first, e.last, u8::from(e.passed))?;
        }
        for r in self.clients.iter() {
            writeln!(w, "C\t{}\t{}\t{}", r.key(), r.value().passes, r.value().last)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(true)
    }

    /// Reads a snapshot written by [`save`](Self::save); a missing file is
    /// an empty state, a bad line is skipped.
    pub fn load(&self) -> std::io::Result<usize> {
        let f = match std::fs::File::open(&self.cfg.state) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            let p: Vec<&str> = line.split('\t').collect();
            match p.as_slice() {
                ["T", key, first, last, passed] => {
                    if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                        self.triplets.insert(
                            key.to_string(),
                            Entry {
                                first,
                                last,
                                passed: *passed == "1",
                            },
                        );
                        n += 1;
                    }
                }
                ["C", net, passes, last] => {
                    if let (Ok(passes), Ok(last)) = (passes.parse(), last.parse()) {
                        self.clients.insert(net.to_string(), ClientEntry { passes, last });
                    }
                }
                _ => {}
            }
        }
        Ok(n)
    }

    pub fn state_path(&self) -> &Path {
        &self.cfg.state
    }

    /// Saves every `every` until `stop`, then once more.
    pub async fn persist(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        let mut expire_at = 0u32;
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.cancelled() => true,
            };
            expire_at += 1;
            let this = self.clone();
            let expire = expire_at.is_multiple_of(360);
            let res = tokio::task::spawn_blocking(move || {
                if expire {
                    this.expire();
                }
                this.save()
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, path = %self.cfg.state.display(), "cannot save greylist state");
            }
            if last {
                return;
            }
        }
    }
}

/// Greylisting as the last RCPT check (after recipient validation, so an
/// unknown user gets 550, not 451).
pub struct GreylistCheck {
    pub greylist: Arc<Greylist>,
    /// Counts passes (`sluice_greylist_decisions_total{decision="pass"}`);
    /// deferrals are counted from their events.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Check for GreylistCheck {
    fn name(&self) -> &'static str {
        "greylist"
    }

    fn check<'a>(&'a self, stage: &'a Stage<'a>, ctx: &'a SessionCtx) -> CheckFuture<'a> {
        let d = match stage {
            Stage::RcptTo(rcpt) if !ctx.allowlisted => {
                let sender = ctx
                    .mail_from
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .flatten();
                match self.greylist.check(ctx.ip, sender.as_ref(), rcpt) {
                    Verdict::Pass => {
                        self.metrics.greylist_pass();
                        Decision::Continue
                    }
                    Verdict::Wait(secs) => Decision::Defer(Refusal::new(
                        Reply::greylisted(secs),
                        super::Reason::Greylist,
                        format!(
                            "new triplet ({}, {:?}, {rcpt}); retry in {secs}s",
                            client_net(ctx.ip),
                            sender.map(|s| s.to_string())
                        ),
                    )),
                }
            }
            _ => Decision::Continue,
        };
        Box::pin(std::future::ready(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::parse_mailbox;
    use std::sync::atomic::AtomicU64;

    fn setup(dir: &Path) -> (Arc<AtomicU64>, Greylist) {
        let t = Arc::new(AtomicU64::new(1_000_000));
        let t2 = t.clone();
        let g = Greylist::new(
            GreylistConfig {
                delay: Duration::from_secs(300),
                retry_window: Duration::from_secs(2 * 86400),
                max_age: Duration::from_secs(35 * 86400),
                auto_allowlist_after: 5,
                state: dir.join("greylist.state"),
            },
            Arc::new(move || t2.load(Ordering::Relaxed)),
        );
        (t, g)
    }

    #[test]
    fn postgrey_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g) = setup(dir.path());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let s = parse_mailbox("a@sender.example").unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert_eq!(g.check(ip, Some(&s), &r), Verdict::Wait(300));
        t.fetch_add(100, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r), Verdict::Wait(200), "too early");
        // Another host in the same /24 retries: same triplet.
        t.fetch_add(200, Ordering::Relaxed);
        assert_eq!(g.check("192.0.2.99".parse().unwrap(), Some(&s), &r), Verdict::Pass);
        // Passed triplets stay passed...
        t.fetch_add(30 * 86400, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r), Verdict::Pass);
        // ...until unused for more than 35 days.
        t.fetch_add(36 * 86400, Ordering::Relaxed);
        assert!(matches!(g.check(ip, Some(&s), &r), Verdict::Wait(_)));
        // A retry after the 2-day window starts over.
        let r2 = parse_mailbox("v@example.com").unwrap();
        assert_eq!(g.check(ip, None, &r2), Verdict::Wait(300));
        t.fetch_add(3 * 86400, Ordering::Relaxed);
        assert_eq!(g.check(ip, None, &r2), Verdict::Wait(300));
    }

    #[test]
    fn auto_allowlist_after_five_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g) = setup(dir.path());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let s = parse_mailbox("list@lists.example").unwrap();
        for i in 0..5 {
            let r = parse_mailbox(&format!("u{i}@example.com")).unwrap();
            assert!(matches!(g.check(ip, Some(&s), &r), Verdict::Wait(_)));
            t.fetch_add(301, Ordering::Relaxed);
            assert_eq!(g.check(ip, Some(&s), &r), Verdict::Pass);
        }
        // A brand-new triplet from this client now passes at once.
        let r = parse_mailbox("new@example.com").unwrap();
        assert_eq!(
            g.check(ip, Some(&parse_mailbox("x@y.example").unwrap()), &r),
            Verdict::Pass
        );
    }

    #[test]
    fn state_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g) = setup(dir.path());
        let ip: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert!(matches!(g.check(ip, None, &r), Verdict::Wait(_)));
        assert!(g.save().unwrap());
        assert!(!g.save().unwrap(), "unchanged: no write");
        let (t2, g2) = setup(dir.path());
        assert_eq!(g2.load().unwrap(), 1);
        t2.store(t.load(Ordering::Relaxed) + 301, Ordering::Relaxed);
        // Same /64, after the delay: passes only because the state was kept.
        assert_eq!(g2.check("2001:db8:1:2::77".parse().unwrap(), None, &r), Verdict::Pass);
    }
}
