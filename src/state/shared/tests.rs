use super::*;
use std::sync::atomic::AtomicU8;

/// An engine that is a second [`MemoryStore`] (what the other nodes
/// see), and can fail or hang on demand.
#[derive(Default)]
struct Fake {
    shared: MemoryStore,
    /// 0 answers, 1 fails, 2 hangs, 3 answers after 100 ms.
    mode: AtomicU8,
    nodes: AtomicU32,
}

impl Fake {
    fn answer<'a, T: Send + 'a>(&'a self, v: impl FnOnce() -> T + Send + 'a) -> StoreFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            match self.mode.load(Ordering::Relaxed) {
                0 => Ok(v()),
                1 => Err(StoreError::Engine("connection refused".into())),
                3 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(v())
                }
                _ => std::future::pending().await,
            }
        })
    }
}

impl Backend for Fake {
    fn hit(
        &self,
        rate: Rate,
        key: IpAddr,
        n: u32,
        limit: u32,
        window: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>> {
        self.answer(move || self.shared.hit(rate, key, n, limit, window, Instant::now()))
    }
    fn greylist<'a>(
        &'a self,
        net: &'a str,
        key: &'a str,
        now: u64,
        p: &'a GreyPolicy,
    ) -> StoreFuture<'a, Result<Verdict, StoreError>> {
        self.answer(move || self.shared.greylist(net, key, now, p))
    }
    fn verified<'a>(&'a self, key: &'a str, now: u64) -> StoreFuture<'a, Result<Option<Verified>, StoreError>> {
        self.answer(move || self.shared.verified(key, now))
    }
    fn remember<'a>(&'a self, key: &'a str, answer: &'a Verified) -> StoreFuture<'a, Result<(), StoreError>> {
        self.answer(move || self.shared.remember(key, answer.clone()))
    }
    fn offence(
        &self,
        ip: IpAddr,
        kind: &'static str,
        now: u64,
        window: u64,
        count: u32,
    ) -> StoreFuture<'_, Result<Option<Vec<u64>>, StoreError>> {
        self.answer(move || self.shared.offence(ip, kind, now, window, count))
    }
    fn acquire(
        &self,
        key: IpAddr,
        limit: u32,
        _member: &str,
        _ttl: Duration,
    ) -> StoreFuture<'_, Result<bool, StoreError>> {
        self.answer(move || self.shared.acquire(key, limit))
    }
    fn release(&self, _key: IpAddr, _member: String) -> StoreFuture<'static, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn heartbeat<'a>(&'a self, _node: &'a str, _ttl: Duration) -> StoreFuture<'a, Result<u32, StoreError>> {
        self.answer(move || self.nodes.load(Ordering::Relaxed))
    }
}

fn store(nodes: u32) -> (Arc<SharedStore<Fake>>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let fake = Fake::default();
    fake.nodes.store(nodes, Ordering::Relaxed);
    let s = SharedStore::new(fake, Duration::from_millis(50), "n1".into(), metrics.clone());
    (Arc::new(s), metrics)
}

fn policy(on_store_failure: StoreFailure) -> GreyPolicy {
    GreyPolicy {
        delay: 300,
        retry_window: 2 * 86400,
        max_age: 35 * 86400,
        auto_allowlist_after: 0,
        on_store_failure,
    }
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const MIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn down_until_the_first_heartbeat_then_shared() {
    let (s, m) = store(2);
    assert!(!s.is_up());
    // Before the heartbeat: this node's count, at 4 / 1 node.
    assert!((0..4).all(|_| s.local.hit(Rate::Messages, IP, 1, 4, MIN, Instant::now())));
    assert!(s.beat().await);
    assert_eq!((m.cluster_up.get(), m.cluster_nodes.get(), s.nodes()), (1, 2, 2));
    for _ in 0..4 {
        assert!(StateStore::hit(&*s, Rate::Messages, IP, 1, 4, MIN, Instant::now()).await);
    }
    assert!(!StateStore::hit(&*s, Rate::Messages, IP, 1, 4, MIN, Instant::now()).await);
    assert_eq!(s.backend.shared.clients(Rate::Messages), 1, "counted in the engine");
}

#[tokio::test]
async fn a_failing_engine_falls_back_to_the_limit_shared_by_the_nodes_last_seen() {
    let (s, m) = store(3);
    assert!(s.beat().await);
    s.backend.mode.store(1, Ordering::Relaxed);
    // 9 per minute over 3 nodes: 3 here.
    let hits: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(StateStore::hit(&*s, Rate::Messages, IP, 1, 9, MIN, Instant::now()).await);
        }
        v
    };
    assert_eq!(hits, [true, true, true, false]);
    assert_eq!(m.cluster_up.get(), 0);
    assert_eq!(
        m.cluster_errors.with_label_values(&["rate"]).get(),
        1,
        "one failure, then not asked"
    );
    assert_eq!(m.cluster_fallbacks.with_label_values(&["rate"]).get(), 4);
    assert!(!s.beat().await, "still failing");
    s.backend.mode.store(0, Ordering::Relaxed);
    assert!(s.beat().await);
    assert!(
        StateStore::hit(&*s, Rate::Messages, IP, 1, 9, MIN, Instant::now()).await,
        "shared again"
    );
    assert_eq!(s.backend.shared.clients(Rate::Messages), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_heartbeat_keeps_a_store_away_down_but_does_not_take_one_down() {
    let (s, m) = store(2);
    s.backend.mode.store(3, Ordering::Relaxed);
    assert!(!s.beat().await, "away, and answering late: stays away");
    assert_eq!(m.cluster_up.get(), 0);
    s.backend.mode.store(0, Ordering::Relaxed);
    assert!(s.beat().await);
    s.backend.mode.store(3, Ordering::Relaxed);
    assert!(s.beat().await, "up: one slow beat does not take it down");
    assert_eq!(m.cluster_up.get(), 1);
    // An operation that is late does.
    assert!(StateStore::hit(&*s, Rate::Messages, IP, 1, 10, MIN, Instant::now()).await);
    assert_eq!(m.cluster_up.get(), 0);
    assert_eq!(m.cluster_fallbacks.with_label_values(&["rate"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_engine_costs_one_timeout_then_nothing() {
    let (s, m) = store(1);
    assert!(s.beat().await);
    s.backend.mode.store(2, Ordering::Relaxed);
    let p = policy(StoreFailure::Open);
    let t0 = Instant::now();
    assert_eq!(
        StateStore::greylist(&*s, "192.0.2", "k", 1000, &p).await,
        Verdict::Pass,
        "fails open"
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(50));
    let t1 = Instant::now();
    assert_eq!(StateStore::greylist(&*s, "192.0.2", "k", 1000, &p).await, Verdict::Pass);
    assert_eq!(t1.elapsed(), Duration::ZERO, "down: not asked again");
    assert_eq!(m.cluster_fallbacks.with_label_values(&["greylist"]).get(), 2);
    let closed = policy(StoreFailure::Closed);
    assert_eq!(
        StateStore::greylist(&*s, "192.0.2", "k", 1000, &closed).await,
        Verdict::Wait(300)
    );
}

#[tokio::test]
async fn greylisting_and_callahead_are_shared_while_up_and_local_when_not() {
    let (a, _) = store(2);
    assert!(a.beat().await);
    let p = policy(StoreFailure::Open);
    assert_eq!(
        StateStore::greylist(&*a, "192.0.2", "k", 1000, &p).await,
        Verdict::Wait(300)
    );
    assert_eq!(StateStore::greylist(&*a, "192.0.2", "k", 1300, &p).await, Verdict::Pass);
    let answer = Verified {
        exists: false,
        reply: "550 5.1.1 no".into(),
        expires: 2000,
    };
    StateStore::remember(&*a, "u@example.com", answer.clone()).await;
    assert_eq!(a.backend.shared.verified("u@example.com", 1500), Some(answer.clone()));
    a.backend.mode.store(1, Ordering::Relaxed);
    assert_eq!(
        StateStore::verified(&*a, "u@example.com", 1500).await,
        Some(answer),
        "the local cache answers"
    );
    assert_eq!(
        StateStore::offence(&*a, IP, "protocol", 10, 60, 1).await,
        Some(vec![10])
    );
}

#[tokio::test]
async fn sessions_count_across_the_nodes_and_only_per_node_while_away() {
    let (s, m) = store(2);
    assert!(s.is_shared());
    assert!(s.beat().await);
    let held = StateStore::acquire_shared(&*s, IP, 1).await;
    assert!(matches!(held, Some(SharedSlotId::Shared(ref n)) if n.starts_with("n1#")));
    assert_eq!(
        StateStore::acquire_shared(&*s, IP, 1).await,
        None,
        "the limit across the nodes"
    );
    s.backend.mode.store(1, Ordering::Relaxed);
    assert_eq!(
        StateStore::acquire_shared(&*s, IP, 1).await,
        Some(SharedSlotId::Untracked)
    );
    assert_eq!(m.cluster_fallbacks.with_label_values(&["session"]).get(), 1);
    let Some(SharedSlotId::Shared(before)) = held else {
        unreachable!()
    };
    assert!(!s.is_up());
    s.backend.mode.store(0, Ordering::Relaxed);
    assert!(s.beat().await);
    let after = s.run_name();
    assert!(
        after.starts_with("n1#") && after != before,
        "a new run after the store was away"
    );
}
