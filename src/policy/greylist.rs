//! Greylisting with postgrey's semantics.
//!
//! A triplet (client network: IPv4 /24 or IPv6 /64, sender, recipient) seen
//! for the first time gets `451 4.7.1` with a retry hint. A retry after
//! `delay` (300 s) and within `retry_window` (2 d) passes, and the triplet
//! is then accepted until unused for `max_age` (35 d). A client network
//! with `auto_allowlist_after` (5) passed deliveries skips greylisting.
//!
//! The triplets live in the [`StateStore`] (decided and recorded in one
//! atomic step). The in-process store is written to a snapshot file every
//! few seconds when it changed and at shutdown (temp file, fsync, rename),
//! and read back at start: it survives restarts. A crash loses at most the
//! last few seconds of changes, which means a few senders are greylisted
//! once more, never that mail is lost.

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Check, CheckFuture, Decision, Refusal, SessionCtx, Stage};
use crate::proto::{Mailbox, Reply};
use crate::state::{GreyPolicy, GreyRecord, StateStore};

pub use crate::config::greylist::GreylistConfig;
pub use crate::state::Verdict;

/// Seconds since the epoch; injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Greylist {
    cfg: GreylistConfig,
    clock: Clock,
    store: Arc<dyn StateStore>,
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
    pub fn new(cfg: GreylistConfig, clock: Clock, store: Arc<dyn StateStore>) -> Self {
        Self { cfg, clock, store }
    }

    pub fn system_clock() -> Clock {
        Arc::new(crate::mail::date::now_secs)
    }

    fn key(net: &str, sender: Option<&Mailbox>, rcpt: &Mailbox) -> String {
        let s = sender.map_or_else(|| "<>".to_string(), Mailbox::key);
        format!("{net}/{s}/{}", rcpt.key())
    }

    fn policy(&self) -> GreyPolicy {
        GreyPolicy {
            delay: self.cfg.delay.as_secs(),
            retry_window: self.cfg.retry_window.as_secs(),
            max_age: self.cfg.max_age.as_secs(),
            auto_allowlist_after: self.cfg.auto_allowlist_after,
            on_store_failure: self.cfg.on_store_failure,
        }
    }

    /// Decides for one (client, sender, recipient) and records it.
    pub async fn check(&self, ip: IpAddr, sender: Option<&Mailbox>, rcpt: &Mailbox) -> Verdict {
        let net = client_net(ip);
        let key = Self::key(&net, sender, rcpt);
        let policy = self.policy();
        self.store.greylist(&net, &key, (self.clock)(), &policy).await
    }

    /// Drops expired entries (of this node's store; a shared store expires
    /// its own).
    pub fn expire(&self) {
        self.store.local().greylist_expire((self.clock)(), &self.policy());
    }

    /// Writes the snapshot if anything changed (temp file, fsync, rename).
    pub fn save(&self) -> std::io::Result<bool> {
        let (records, changed) = self.store.local().greylist_snapshot();
        if !changed {
            return Ok(false);
        }
        let path = &self.cfg.state;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(w, "# sluice greylist v1")?;
        for r in &records {
            match r {
                GreyRecord::Triplet {
                    key,
                    first,
                    last,
                    passed,
                } => writeln!(w, "T\t{key}\t{first}\t{last}\t{}", u8::from(*passed))?,
                GreyRecord::Client { net, passes, last } => writeln!(w, "C\t{net}\t{passes}\t{last}")?,
            }
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(true)
    }

    /// Reads a snapshot written by [`save`](Self::save); a missing file is
    /// an empty state, a bad line is skipped. Returns the triplets read.
    pub fn load(&self) -> std::io::Result<usize> {
        let f = match std::fs::File::open(&self.cfg.state) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        for line in std::io::BufReader::new(f).lines() {
            if let Some(r) = parse_record(&line?) {
                records.push(r);
            }
        }
        let n = records
            .iter()
            .filter(|r| matches!(r, GreyRecord::Triplet { .. }))
            .count();
        self.store.local().greylist_restore(records);
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
        Box::pin(self.decide(stage, ctx))
    }
}

impl GreylistCheck {
    async fn decide(&self, stage: &Stage<'_>, ctx: &SessionCtx) -> Decision {
        match stage {
            Stage::RcptTo { rcpt, from } if !ctx.allowlisted => match self.greylist.check(ctx.ip, *from, rcpt).await {
                Verdict::Pass => {
                    self.metrics.greylist_pass();
                    Decision::Continue
                }
                Verdict::Wait(secs) => Decision::Defer(Refusal::new(
                    Reply::greylisted(secs),
                    super::Reason::Greylist,
                    format!(
                        "new triplet ({}, <{}>, {rcpt}); retry in {secs}s",
                        client_net(ctx.ip),
                        from.map(|s| s.to_string()).unwrap_or_default()
                    ),
                )),
            },
            _ => Decision::Continue,
        }
    }
}

/// One line of a snapshot.
fn parse_record(line: &str) -> Option<GreyRecord> {
    let p: Vec<&str> = line.split('\t').collect();
    match p.as_slice() {
        ["T", key, first, last, passed] => Some(GreyRecord::Triplet {
            key: key.to_string(),
            first: first.parse().ok()?,
            last: last.parse().ok()?,
            passed: *passed == "1",
        }),
        ["C", net, passes, last] => Some(GreyRecord::Client {
            net: net.to_string(),
            passes: passes.parse().ok()?,
            last: last.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::parse_mailbox;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::state::MemoryStore;

    fn setup(dir: &Path) -> (Arc<AtomicU64>, Greylist, Arc<MemoryStore>) {
        let t = Arc::new(AtomicU64::new(1_000_000));
        let t2 = t.clone();
        let store = Arc::new(MemoryStore::default());
        let g = Greylist::new(
            GreylistConfig {
                delay: Duration::from_secs(300),
                retry_window: Duration::from_secs(2 * 86400),
                max_age: Duration::from_secs(35 * 86400),
                auto_allowlist_after: 5,
                on_store_failure: crate::state::StoreFailure::Open,
                state: dir.join("greylist.state"),
            },
            Arc::new(move || t2.load(Ordering::Relaxed)),
            store.clone(),
        );
        (t, g, store)
    }

    #[tokio::test]
    async fn postgrey_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, _store) = setup(dir.path());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let s = parse_mailbox("a@sender.example").unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Wait(300));
        t.fetch_add(100, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Wait(200), "too early");
        // Another host in the same /24 retries: same triplet.
        t.fetch_add(200, Ordering::Relaxed);
        assert_eq!(
            g.check("192.0.2.99".parse().unwrap(), Some(&s), &r).await,
            Verdict::Pass
        );
        // Passed triplets stay passed...
        t.fetch_add(30 * 86400, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Pass);
        // ...until unused for more than 35 days.
        t.fetch_add(36 * 86400, Ordering::Relaxed);
        assert!(matches!(g.check(ip, Some(&s), &r).await, Verdict::Wait(_)));
        // A retry after the 2-day window starts over.
        let r2 = parse_mailbox("v@example.com").unwrap();
        assert_eq!(g.check(ip, None, &r2).await, Verdict::Wait(300));
        t.fetch_add(3 * 86400, Ordering::Relaxed);
        assert_eq!(g.check(ip, None, &r2).await, Verdict::Wait(300));
    }

    #[tokio::test]
    async fn auto_allowlist_after_five_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, _store) = setup(dir.path());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let s = parse_mailbox("list@lists.example").unwrap();
        for i in 0..5 {
            let r = parse_mailbox(&format!("u{i}@example.com")).unwrap();
            assert!(matches!(g.check(ip, Some(&s), &r).await, Verdict::Wait(_)));
            t.fetch_add(301, Ordering::Relaxed);
            assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Pass);
        }
        // A brand-new triplet from this client now passes at once.
        let r = parse_mailbox("new@example.com").unwrap();
        assert_eq!(
            g.check(ip, Some(&parse_mailbox("x@y.example").unwrap()), &r).await,
            Verdict::Pass
        );
    }

    #[tokio::test]
    async fn state_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, _store) = setup(dir.path());
        let ip: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert!(matches!(g.check(ip, None, &r).await, Verdict::Wait(_)));
        assert!(g.save().unwrap());
        assert!(!g.save().unwrap(), "unchanged: no write");
        let (t2, g2, _store) = setup(dir.path());
        assert_eq!(g2.load().unwrap(), 1);
        t2.store(t.load(Ordering::Relaxed) + 301, Ordering::Relaxed);
        // Same /64, after the delay: passes only because the state was kept.
        assert_eq!(
            g2.check("2001:db8:1:2::77".parse().unwrap(), None, &r).await,
            Verdict::Pass
        );
    }

    #[tokio::test]
    async fn delay_and_retry_window_boundaries_to_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, _store) = setup(dir.path());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let s = parse_mailbox("a@sender.example").unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Wait(300));
        // Retries do not move the start of the delay.
        t.fetch_add(299, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Wait(1), "one second early");
        t.fetch_add(1, Ordering::Relaxed);
        assert_eq!(g.check(ip, Some(&s), &r).await, Verdict::Pass, "exactly at the delay");
        // The retry window counts from the first attempt, its last second
        // included.
        let r2 = parse_mailbox("v@example.com").unwrap();
        assert_eq!(g.check(ip, Some(&s), &r2).await, Verdict::Wait(300));
        t.fetch_add(2 * 86400, Ordering::Relaxed);
        assert_eq!(
            g.check(ip, Some(&s), &r2).await,
            Verdict::Pass,
            "at the end of the window"
        );
        let r3 = parse_mailbox("w@example.com").unwrap();
        assert_eq!(g.check(ip, Some(&s), &r3).await, Verdict::Wait(300));
        t.fetch_add(2 * 86400 + 1, Ordering::Relaxed);
        assert_eq!(
            g.check(ip, Some(&s), &r3).await,
            Verdict::Wait(300),
            "past it: starts over"
        );
    }

    #[tokio::test]
    async fn expire_drops_stale_triplets_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, store) = setup(dir.path());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        assert!(matches!(g.check(ip, None, &r).await, Verdict::Wait(_)));
        t.fetch_add(2 * 86400, Ordering::Relaxed);
        g.expire();
        assert_eq!(store.grey_counts().0, 1, "inside the window: kept");
        t.fetch_add(1, Ordering::Relaxed);
        g.expire();
        assert_eq!(store.grey_counts().0, 0, "past the window: dropped");
        // A passed triplet and its client live until unused for max_age.
        assert!(matches!(g.check(ip, None, &r).await, Verdict::Wait(_)));
        t.fetch_add(300, Ordering::Relaxed);
        assert_eq!(g.check(ip, None, &r).await, Verdict::Pass);
        t.fetch_add(35 * 86400, Ordering::Relaxed);
        g.expire();
        assert_eq!(store.grey_counts(), (1, 1));
        t.fetch_add(1, Ordering::Relaxed);
        g.expire();
        assert_eq!(store.grey_counts(), (0, 0));
    }

    #[tokio::test]
    async fn the_check_defers_with_the_time_left_then_passes_and_counts_the_pass() {
        use crate::policy::{Check, Decision, Reason, Stage};
        let dir = tempfile::tempdir().unwrap();
        let (t, g, store) = setup(dir.path());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let check = GreylistCheck {
            greylist: Arc::new(g),
            metrics: metrics.clone(),
        };
        let passes = || metrics.greylist.with_label_values(&["pass"]).get();
        let ctx = SessionCtx::new("192.0.2.10".parse().unwrap(), &[]);
        let sender = parse_mailbox("a@sender.example").unwrap();
        let r = parse_mailbox("u@example.com").unwrap();
        let rcpt = Stage::RcptTo {
            rcpt: &r,
            from: Some(&sender),
        };
        let run = |stage: &Stage<'_>, ctx: &SessionCtx| {
            let f = check.check(stage, ctx);
            // The check is synchronous: its future is ready at once.
            futures_ready(f)
        };
        match run(&rcpt, &ctx) {
            Decision::Defer(refusal) => {
                assert_eq!(refusal.reply, Reply::greylisted(300));
                assert_eq!(refusal.reason, Reason::Greylist);
                assert!(refusal.evidence.contains("192.0.2"), "{}", refusal.evidence);
            }
            d => panic!("{d:?}"),
        }
        t.fetch_add(120, Ordering::Relaxed);
        assert!(matches!(run(&rcpt, &ctx), Decision::Defer(r) if r.reply == Reply::greylisted(180)));
        assert_eq!(passes(), 0);
        t.fetch_add(180, Ordering::Relaxed);
        assert_eq!(run(&rcpt, &ctx), Decision::Continue);
        assert_eq!(passes(), 1, "the pass is counted");
        // Other stages and allowlisted clients are not greylisted.
        assert_eq!(run(&Stage::Connect, &ctx), Decision::Continue);
        let allowed = SessionCtx::new("198.51.100.1".parse().unwrap(), &["198.51.100.0/24".parse().unwrap()]);
        let fresh = parse_mailbox("fresh@example.com").unwrap();
        let fresh_rcpt = Stage::RcptTo {
            rcpt: &fresh,
            from: Some(&sender),
        };
        assert_eq!(run(&fresh_rcpt, &allowed), Decision::Continue);
        assert_eq!(passes(), 1, "an allowlisted client is not a greylist pass");
        assert_eq!(store.grey_counts().0, 1, "nothing recorded for the allowlisted client");
    }

    /// The output of a future that is ready at once.
    fn futures_ready<T>(f: std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>) -> T {
        let mut f = f;
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the greylist check waited"),
        }
    }
}
