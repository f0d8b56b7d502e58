//! `[cluster]`: two sluice nodes (in this process) sharing one real
//! redis-server (tests/util/services.rs `Redis`): greylisting and message
//! rates hold across the nodes; with the store killed mid-run mail keeps
//! flowing within `cluster.timeout`; restarted, the state is shared again.

use std::time::Duration;

use crate::util::services::Redis;
use crate::util::*;

/// A node named `node` of a cluster on `redis`, greylisting with a 1 s
/// delay and `rate` messages per minute per client. The store's timeout
/// is generous (a loaded test machine must not fall back by accident),
/// except where a test measures it.
async fn node(sink: &Sink, redis: &str, prefix: &str, node: &str, rate: u32) -> TestRelay {
    node_with(sink, redis, prefix, node, rate, "1s", "").await
}

async fn node_with(
    sink: &Sink,
    redis: &str,
    prefix: &str,
    node: &str,
    rate: u32,
    timeout: &str,
    limits: &str,
) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[greylist]\nenabled = true\ndelay = \"1s\"\nretry_window = \"1h\"\n\
         [limits]\nper_ip_message_rate = {rate}\n{limits}\n\
         [cluster]\nredis = \"{redis}\"\nprefix = \"{prefix}\"\nnode = \"{node}\"\ntimeout = \"{timeout}\"\n",
        base_toml(&sink.next_hop())
    );
    TestRelay::start_in(dir, &toml, |_| {}).await
}

/// Waits until `sluice_cluster_up` is `up` (the heartbeat is every second).
async fn cluster_up(relay: &TestRelay, up: i64) {
    let m = relay.running().events.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.cluster_up.get() != up {
        assert!(tokio::time::Instant::now() < deadline, "sluice_cluster_up never {up}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unique_prefix() -> String {
    format!("t{}:", std::process::id() ^ rand_u32())
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triplet_greylisted_on_one_node_passes_on_the_other_after_the_delay() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let a = node(&sink, &redis.url(), &p, "a", 0).await;
    let b = node(&sink, &redis.url(), &p, "b", 0).await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    // A counts B from its next heartbeat on.
    let m = a.running().events.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while m.cluster_nodes.get() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A sees {} nodes",
            m.cluster_nodes.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut c = a.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<s@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    c.cmd("QUIT", "221").await;
    // On B at once: the same triplet, still waiting.
    let mut c = b.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<s@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // After the delay, on B: passes (B never saw the first try itself).
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(
        c.data(&test_message("greylisted-on-a-passed-on-b"))
            .await
            .starts_with("250")
    );
    assert_eq!(sink.wait_for(1).await.len(), 1);
    let m = b.running().events.metrics();
    assert_eq!(m.cluster_fallbacks.with_label_values(&["greylist"]).get(), 0);
    assert!(m.cluster_op.with_label_values(&["greylist"]).get_sample_count() >= 2);
}

/// MAIL attempts from one client, alternating between the nodes; the
/// accepted ones.
async fn mails(nodes: &[&TestRelay], sessions: usize) -> usize {
    let mut accepted = 0;
    for i in 0..sessions {
        let mut c = nodes[i % nodes.len()].client().await;
        c.cmd("EHLO client.example", "250").await;
        for _ in 0..2 {
            c.send("MAIL FROM:<s@client.example>").await;
            let r = c.reply().await;
            if r.starts_with("250") {
                accepted += 1;
                c.cmd("RSET", "250").await;
            } else {
                assert!(r.starts_with("451 4.7"), "{r}");
            }
        }
        c.cmd("QUIT", "221").await;
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_rate_holds_across_the_nodes() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let a = node(&sink, &redis.url(), &p, "a", 6).await;
    let b = node(&sink, &redis.url(), &p, "b", 6).await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    // 20 attempts, 10 on each node: 6 accepted in all (each node alone
    // would have taken 6).
    let accepted = mails(&[&a, &b], 10).await;
    assert!((5..=7).contains(&accepted), "{accepted} accepted of 20 at 6 per minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_killed_mail_flows_and_with_it_back_the_state_is_shared_again() {
    let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    // What a session waits for the store at most (the default is 50 ms;
    // 200 ms here keeps a loaded test machine from falling back while the
    // store is up).
    let a = node_with(&sink, &redis.url(), &p, "a", 100, "200ms", "").await;
    let b = node_with(&sink, &redis.url(), &p, "b", 100, "200ms", "").await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;

    redis.kill();
    // Mail keeps flowing: greylisting fails open, the rate counts locally;
    // MAIL and RCPT together wait no longer than one cluster.timeout (the
    // first failure marks the store down; then nothing waits on it).
    for (i, relay) in [&a, &b, &a, &b].into_iter().enumerate() {
        let mut c = relay.client().await;
        c.cmd("EHLO client.example", "250").await;
        let t0 = std::time::Instant::now();
        c.cmd("MAIL FROM:<down@client.example>", "250").await;
        c.cmd("RCPT TO:<user@example.com>", "250").await;
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "MAIL+RCPT took {took:?} with the store down"
        );
        assert!(
            c.data(&test_message(&format!("store-down-{i}")))
                .await
                .starts_with("250")
        );
        c.cmd("QUIT", "221").await;
    }
    assert_eq!(sink.wait_for(4).await.len(), 4);
    cluster_up(&a, 0).await;
    cluster_up(&b, 0).await;
    let m = a.running().events.metrics();
    assert!(m.cluster_fallbacks.with_label_values(&["greylist"]).get() >= 1);
    assert!(
        m.cluster_errors.with_label_values(&["heartbeat"]).get() >= 1
            || m.cluster_errors.with_label_values(&["rate"]).get() >= 1
    );

    // Back, empty (no persistence): shared again once the heartbeat
    // answers.
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    let mut c = a.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<back@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    let mut c = b.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<back@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(redis.ping());
}

/// The Lua scripts against a real server, step by step with the same
/// clock as `MemoryStore` (the reference): postgrey's greylisting, the
/// offence window, the call-ahead cache and the heartbeat's node count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_keep_the_memory_store_semantics() {
    use sluice::state::shared::Backend;
    use sluice::state::{GreyPolicy, MemoryStore, StoreFailure, Verdict, Verified};

    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let cfg = sluice::config::Config::from_toml(
        &format!(
            "[cluster]\nredis = \"{}\"\nprefix = \"{}\"\n",
            redis.url(),
            unique_prefix()
        ),
        std::path::Path::new("/"),
    )
    .unwrap()
    .cluster
    .unwrap();
    let r = sluice::state::redis::RedisBackend::new(&cfg);
    assert_eq!(r.heartbeat("n1", Duration::from_secs(10)).await.unwrap(), 1);
    assert_eq!(r.heartbeat("n2", Duration::from_secs(10)).await.unwrap(), 2);
    assert_eq!(r.heartbeat("n1", Duration::from_secs(10)).await.unwrap(), 2);

    let m = MemoryStore::default();
    let p = GreyPolicy {
        delay: 300,
        retry_window: 2 * 86400,
        max_age: 35 * 86400,
        auto_allowlist_after: 2,
        on_store_failure: StoreFailure::Open,
    };
    let t0 = 1_800_000_000u64;
    // (net, triplet, seconds after t0): first try, too early, at the
    // delay, a second triplet to the auto-allowlist, a third passing at
    // once, a stale retry, a passed one unused past max_age.
    let steps: &[(&str, &str, u64)] = &[
        ("192.0.2", "a", 0),
        ("192.0.2", "a", 100),
        ("192.0.2", "a", 300),
        ("192.0.2", "a", 301),
        ("198.51.100", "b", 0),
        ("198.51.100", "b", 299),
        ("198.51.100", "c", 400),
        ("198.51.100", "c", 3 * 86400),
        ("203.0.113", "d", 0),
        ("203.0.113", "d", 300),
        ("203.0.113", "d", 40 * 86400),
    ];
    for &(net, key, at) in steps {
        let key = format!("{net}/{key}");
        let want = m.greylist(net, &key, t0 + at, &p);
        let got = r.greylist(net, &key, t0 + at, &p).await.unwrap();
        assert_eq!(got, want, "{key} at +{at}");
    }
    assert_eq!(
        r.greylist("192.0.2", "192.0.2/e", t0 + 400, &p).await.unwrap(),
        Verdict::Pass,
        "192.0.2 passed twice: auto-allowlisted"
    );

    let ip: std::net::IpAddr = "192.0.2.50".parse().unwrap();
    // 3 within 60 s: the first falls out of the window at +65, the rule
    // fires at +66 with the three left, which are then forgotten.
    for (at, fires) in [(0, false), (10, false), (65, false), (66, true), (67, false)] {
        let want = m.offence(ip, "protocol", t0 + at, 60, 3);
        let got = r.offence(ip, "protocol", t0 + at, 60, 3).await.unwrap();
        assert_eq!(got, want, "+{at}");
        assert_eq!(got.is_some(), fires, "+{at}");
    }

    // Sessions across the runs heard from ("n1", "n2" beat above): a run
    // never heard from counts only for itself, and is dropped by the next.
    let ttl = Duration::from_secs(10);
    assert!(r.acquire(ip, 2, "n1", ttl).await.unwrap());
    assert!(r.acquire(ip, 2, "n2", ttl).await.unwrap());
    assert!(!r.acquire(ip, 2, "n1", ttl).await.unwrap(), "2 held across the nodes");
    r.release(ip, "n2".into()).await.unwrap();
    assert!(r.acquire(ip, 2, "n2", ttl).await.unwrap(), "given back");
    assert!(r.acquire(ip, 10, "gone", ttl).await.unwrap());
    assert!(
        r.acquire(ip, 3, "n1", ttl).await.unwrap(),
        "the dead run's slot is dropped: 3 held, not 4"
    );

    let now = sluice::mail::date::now_secs();
    let answer = Verified {
        exists: false,
        reply: "550 5.1.1 <u@example.org>: unknown\tuser".into(),
        expires: now + 60,
    };
    r.remember("u@example.org", &answer).await.unwrap();
    assert_eq!(r.verified("u@example.org", now).await.unwrap(), Some(answer));
    assert_eq!(r.verified("u@example.org", now + 61).await.unwrap(), None);
    assert_eq!(r.verified("v@example.org", now).await.unwrap(), None);

    let w = Duration::from_secs(60);
    let hits: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(r.hit(sluice::state::Rate::Messages, ip, 1, 3, w).await.unwrap());
        }
        v
    };
    assert_eq!(hits, [true, true, true, false]);
    assert!(
        r.hit(sluice::state::Rate::Recipients, ip, 3, 3, w).await.unwrap(),
        "another rate"
    );
}

/// A node that finds the store through Sentinel shares it with a node
/// given its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_finds_the_master_through_sentinel() {
    let (redis, sentinel) = tokio::task::spawn_blocking(|| {
        let r = Redis::start();
        let s = crate::util::services::Sentinel::start(&r, "sluicemaster");
        (r, s)
    })
    .await
    .unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[greylist]\nenabled = true\ndelay = \"1s\"\nretry_window = \"1h\"\n\
         [cluster]\nsentinels = [\"127.0.0.1:{}\"]\nmaster = \"sluicemaster\"\nprefix = \"{p}\"\nnode = \"s\"\ntimeout = \"1s\"\n",
        base_toml(&sink.next_hop()),
        sentinel.port
    );
    let a = TestRelay::start_in(dir, &toml, |_| {}).await;
    let b = node(&sink, &redis.url(), &p, "b", 0).await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    let mut c = a.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<s@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = b.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<s@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(
        sentinel.log().contains("+monitor master sluicemaster"),
        "{}",
        sentinel.log()
    );
}

/// `limits.per_ip_connections` holds across the nodes: the listener
/// counts each node's sessions, the store all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_count_across_the_nodes() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let limits = "per_ip_connections = 2";
    let a = node_with(&sink, &redis.url(), &p, "a", 0, "1s", limits).await;
    let b = node_with(&sink, &redis.url(), &p, "b", 0, "1s", limits).await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    let mut one = a.client().await;
    let _two = b.client().await;
    // A third on A: this node has one, the cluster two.
    let mut c = Client::connect(a.addr).await;
    c.expect("421 4.7.0").await;
    one.cmd("QUIT", "221").await;
    drop(one);
    // Given back in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(a.addr).await;
        let r = c.reply().await;
        if r.starts_with("220") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot never came back: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bans, as `sluice bans`: a node with the firewall on (no kernel
/// exporter) and its control socket in its directory.
const FIREWALL: &str = "[firewall]\nflush_interval = \"100ms\"\ncontrol_socket = \"control.sock\"\n";

async fn ban_node(sink: &Sink, redis: &str, prefix: &str, name: &str) -> TestRelay {
    node_with(sink, redis, prefix, name, 0, "1s", FIREWALL).await
}

async fn bans(relay: &TestRelay, req: sluice::firewall::control::Request) -> sluice::firewall::control::Response {
    // The socket is made by a task of the node's own: a node just started
    // may not have it yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sluice::control::request(&relay.path("control.sock"), &req).await {
            Ok(r) => return r,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("control socket: {e}"),
        }
    }
}

/// The nets banned on `relay`.
async fn banned(relay: &TestRelay) -> Vec<String> {
    match bans(relay, sluice::firewall::control::Request::List).await {
        sluice::firewall::control::Response::Bans(b) => b.iter().map(|b| b.net.to_string()).collect(),
        other => panic!("{other:?}"),
    }
}

/// How long until `relay` has (or has not) `net` banned; panics after 5 s.
async fn until_banned(relay: &TestRelay, net: &str, want: bool) -> Duration {
    let start = tokio::time::Instant::now();
    while banned(relay).await.iter().any(|n| n == net) != want {
        assert!(start.elapsed() < Duration::from_secs(5), "{net} banned: never {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn add(net: &str) -> sluice::firewall::control::Request {
    sluice::firewall::control::Request::Add {
        net: format!("{net}/32").parse().unwrap(),
        seconds: 3600,
    }
}

fn del(net: &str) -> sluice::firewall::control::Request {
    sluice::firewall::control::Request::Del {
        net: format!("{net}/32").parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_decided_on_one_node_is_enforced_on_the_other_and_bans_by_hand_act_on_all() {
    use sluice::events::Event;
    use sluice::firewall::control::Response;
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let a = ban_node(&sink, &redis.url(), &p, "a").await;
    let b = ban_node(&sink, &redis.url(), &p, "b").await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    // Let B's follower start reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_b = b.running().events.subscribe();

    // An offence on A (a pregreet bans at once: loopback clients are never
    // banned, so the event is the one a real client would cause).
    a.running().events.emit(Event::Pregreet {
        session: 1,
        ip: "192.0.2.9".parse().unwrap(),
        evidence: "EHLO".into(),
    });
    until_banned(&a, "192.0.2.9/32", true).await;
    let took = until_banned(&b, "192.0.2.9/32", true).await;
    assert!(took < Duration::from_millis(500), "A -> B took {took:?}");
    let announced = loop {
        let e = tokio::time::timeout(Duration::from_secs(2), on_b.recv())
            .await
            .expect("ban_added on B")
            .unwrap();
        if let Event::BanAdded { net, node, offence, .. } = &*e {
            break (net.clone(), node.clone(), *offence);
        }
    };
    assert_eq!(
        announced,
        (
            "192.0.2.9/32".to_string(),
            Some("a".to_string()),
            sluice::firewall::engine::Offence::Pregreet
        )
    );
    let mb = b.running().events.metrics();
    assert_eq!(mb.cluster_bans.with_label_values(&["applied"]).get(), 1);
    assert_eq!(mb.cluster_ban_propagation.get_sample_count(), 1);
    assert!(mb.cluster_ban_propagation.get_sample_sum() < 0.5);
    assert_eq!(
        a.running()
            .events
            .metrics()
            .cluster_bans
            .with_label_values(&["published"])
            .get(),
        1
    );
    assert!(mb.render().contains("sluice_cluster_ban_stream_lag_seconds"));

    // `bans add` on B acts on A; `bans del` on A acts on B.
    assert!(matches!(bans(&b, add("198.51.100.7")).await, Response::Done));
    let took = until_banned(&a, "198.51.100.7/32", true).await;
    assert!(took < Duration::from_millis(500), "B -> A took {took:?}");
    assert!(matches!(bans(&a, del("192.0.2.9")).await, Response::Done));
    let took = until_banned(&b, "192.0.2.9/32", false).await;
    assert!(took < Duration::from_millis(500), "del A -> B took {took:?}");
    // The active set holds what is in force, for the nodes to come.
    let c = ban_node(&sink, &redis.url(), &p, "c").await;
    until_banned(&c, "198.51.100.7/32", true).await;
    assert_eq!(banned(&c).await, ["198.51.100.7/32"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_while_the_store_is_down_is_enforced_locally_and_published_when_it_is_back() {
    use sluice::firewall::control::Response;
    let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let sink = Sink::start().await;
    let p = unique_prefix();
    let a = ban_node(&sink, &redis.url(), &p, "a").await;
    let b = ban_node(&sink, &redis.url(), &p, "b").await;
    cluster_up(&a, 1).await;
    cluster_up(&b, 1).await;
    assert!(matches!(bans(&a, add("192.0.2.10")).await, Response::Done));
    until_banned(&b, "192.0.2.10/32", true).await;

    redis.kill();
    cluster_up(&a, 0).await;
    assert!(matches!(bans(&a, add("192.0.2.11")).await, Response::Done));
    // Enforced on A at once (its listener refuses it), queued for the others.
    assert!(banned(&a).await.contains(&"192.0.2.11/32".to_string()));
    let ma = a.running().events.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while ma.cluster_ban_outbox.get() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox {}",
            ma.cluster_ban_outbox.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!banned(&b).await.contains(&"192.0.2.11/32".to_string()));
    // Bans already in force stay.
    assert!(banned(&b).await.contains(&"192.0.2.10/32".to_string()));

    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    until_banned(&b, "192.0.2.11/32", true).await;
    assert_eq!(ma.cluster_ban_outbox.get(), 0);
}
