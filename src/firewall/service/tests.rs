use std::time::Duration;

use super::*;
use crate::config::firewall::BanConfig;
use crate::firewall::cluster::{BanChange, Outbox};

fn unknown_user(ip: &str) -> Event {
    Event::RcptRejected {
        via: crate::events::Via::Smtp,
        tx: Default::default(),
        id: String::new(),
        session: 1,
        ip: ip.parse().unwrap(),
        rcpt: "x@example.com".into(),
        reason: crate::events::Reason::UnknownUser,
        reply: crate::proto::Reply::UNKNOWN_USER,
        evidence: String::new(),
    }
}

/// Node `n`'s firewall (no exporter) with `bans`, its files in `dir`.
fn node_config(dir: &std::path::Path, bans: &BanConfig, n: &str) -> FirewallConfig {
    FirewallConfig {
        bans: bans.clone(),
        store: dir.join(format!("bans-{n}.json")),
        flush_interval: Duration::from_millis(100),
        nft: None,
        ipset: None,
        ports: Vec::new(),
        file: None,
        control_socket: dir.join(format!("control-{n}.sock")),
    }
}

/// Two nodes whose offence windows are one store (as `[cluster]`
/// makes them): three probes, one on each, count as three.
#[tokio::test]
async fn offences_on_several_nodes_count_together_in_a_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut bans = BanConfig::default();
    bans.rules.insert(
        Offence::UnknownUser,
        super::super::engine::Rule {
            count: 3,
            window: 60,
            ban: 3600,
        },
    );
    let node = |n: &str| node_config(dir.path(), &bans, n);
    let shared: Arc<dyn crate::state::StateStore> = Arc::new(crate::state::MemoryStore::default());
    let a = Firewall::new(node("a"), EventBus::new(8), shared.clone());
    let (events_b, metrics) = (EventBus::new(8), Arc::new(crate::metrics::Metrics::new()));
    let mut on_b = events_b.subscribe();
    let b = Firewall::new(node("b"), events_b, shared.clone());
    let (out_a, out_b) = (
        Arc::new(Outbox::new(16, metrics.clone())),
        Arc::new(Outbox::new(16, metrics.clone())),
    );
    a.publish_to(out_a.clone());
    b.publish_to(out_b.clone());
    let e = unknown_user("192.0.2.7");
    assert_eq!(a.observe_shared(&e).await, Some(Decision::Counted));
    assert_eq!(b.observe_shared(&e).await, Some(Decision::Counted));
    let Some(Decision::Ban(ban)) = a.observe_shared(&e).await else {
        panic!("the third offence bans");
    };
    assert_eq!(ban.evidence.len(), 3);
    assert!(a.is_banned("192.0.2.7".parse().unwrap()).is_some());
    assert!(
        b.is_banned("192.0.2.7".parse().unwrap()).is_none(),
        "B's own offences did not ban"
    );
    // A's ban goes to its outbox (the ban stream), once; B applies it
    // without publishing it again, and announces who decided it.
    let published = out_a.take();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].change, BanChange::Add { ban: ban.clone() });
    assert!(b.apply_remote(&published[0].change, "a"));
    assert!(b.is_banned("192.0.2.7".parse().unwrap()).is_some());
    assert!(out_b.is_empty(), "a ban from the stream is not published again");
    assert!(!b.apply_remote(&published[0].change, "a"), "already in force");
    let mut announced = None;
    while let Ok(e) = on_b.try_recv() {
        if let Event::BanAdded { net, node, .. } = &*e {
            announced = Some((net.clone(), node.clone()));
        }
    }
    assert_eq!(announced, Some(("192.0.2.7/32".into(), Some("a".into()))));
    // Loopback stays allowlisted whoever banned it.
    let mut lo = ban.clone();
    lo.net = "127.0.0.1/32".parse().unwrap();
    assert!(!b.apply_remote(&BanChange::Add { ban: lo }, "a"));
    // Lifted by hand on B: published; applied on A.
    assert!(b.remove(ban.net).is_some());
    let lifted = out_b.take();
    assert_eq!(lifted.len(), 1);
    assert!(a.apply_remote(&lifted[0].change, "b"));
    assert!(a.is_banned("192.0.2.7".parse().unwrap()).is_none());
    assert!(out_a.is_empty());
}

/// Escalation is cluster-wide: a ban another node decided counts in
/// this node's history, so its next ban of that client is the
/// second strike (twice as long), as on the deciding node.
#[tokio::test]
async fn a_ban_from_another_node_counts_as_a_strike_here() {
    let dir = tempfile::tempdir().unwrap();
    let mut bans = BanConfig::default();
    let rule = super::super::engine::Rule {
        count: 1,
        window: 60,
        ban: 600,
    };
    bans.rules.insert(Offence::UnknownUser, rule);
    let node = |n: &str| node_config(dir.path(), &bans, n);
    let own = || -> Arc<dyn crate::state::StateStore> { Arc::new(crate::state::MemoryStore::default()) };
    let a = Firewall::new(node("a"), EventBus::new(8), own());
    let b = Firewall::new(node("b"), EventBus::new(8), own());
    let e = unknown_user("192.0.2.8");
    let Some(Decision::Ban(first)) = a.observe_shared(&e).await else {
        panic!("one offence bans");
    };
    assert_eq!((first.strike, first.until - first.since), (1, 600));
    assert!(b.apply_remote(&BanChange::Add { ban: first.clone() }, "a"));
    assert!(!b.apply_remote(&BanChange::Add { ban: first.clone() }, "a"));
    assert!(b.remove(first.net).is_some());
    let Some(Decision::Ban(second)) = b.observe_shared(&e).await else {
        panic!("banned again on b");
    };
    assert_eq!((second.strike, second.until - second.since), (2, 1200));
}

#[test]
fn bans_are_announced_exported_to_files_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut bans = BanConfig::default();
    bans.rules.insert(
        Offence::UnknownUser,
        super::super::engine::Rule {
            count: 2,
            window: 60,
            ban: 3600,
        },
    );
    let cfg = FirewallConfig {
        bans,
        store: dir.path().join("bans.json"),
        flush_interval: Duration::from_millis(100),
        nft: None,
        ipset: None,
        ports: Vec::new(),
        file: Some(dir.path().join("banned.txt")),
        control_socket: dir.path().join("control.sock"),
    };
    let events = EventBus::new(64);
    let mut rx = events.subscribe();
    let fw = Firewall::new(
        cfg.clone(),
        events.clone(),
        Arc::new(crate::state::MemoryStore::default()),
    );
    assert_eq!(fw.observe(&unknown_user("192.0.2.9")), Some(Decision::Counted));
    assert!(matches!(fw.observe(&unknown_user("192.0.2.9")), Some(Decision::Ban(_))));
    assert!(fw.is_banned("192.0.2.9".parse().unwrap()).is_some());
    let e = rx.try_recv().unwrap();
    assert!(
        matches!(&*e, Event::BanAdded { net, offence: Offence::UnknownUser, strike: 1, dry_run: false, .. } if net == "192.0.2.9/32")
    );
    // The last flush writes the files before it returns (the others on
    // a thread of their own).
    fw.flush_with(true);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("banned.txt")).unwrap(),
        "192.0.2.9/32\n"
    );
    let json: Vec<Ban> = serde_json::from_slice(&std::fs::read(dir.path().join("banned.txt.json")).unwrap()).unwrap();
    assert_eq!(json.len(), 1);
    // A new process restores the ban from the store.
    let again = Firewall::new(cfg, EventBus::new(4), Arc::new(crate::state::MemoryStore::default()));
    assert!(again.is_banned("192.0.2.9".parse().unwrap()).is_some());
    assert!(again.is_banned("192.0.2.10".parse().unwrap()).is_none());
    // An admin's ban and its removal are events too.
    let mut rx = events.subscribe();
    let net: IpNet = "198.51.100.0/24".parse().unwrap();
    let ban = Ban {
        net,
        offence: Offence::Protocol,
        since: now(),
        until: now() + 60,
        rule: "added by hand (sluice bans add)".into(),
        strike: 1,
        evidence: Vec::new(),
    };
    fw.insert(ban).unwrap();
    let e = rx.try_recv().unwrap();
    assert!(matches!(&*e, Event::BanAdded { net, rule, .. } if net == "198.51.100.0/24" && rule.contains("by hand")));
    fw.remove(net);
    let e = rx.try_recv().unwrap();
    assert!(matches!(&*e, Event::BanRemoved { net, by: "admin" } if net == "198.51.100.0/24"));
}

/// An exporter that fails (as nft does without CAP_NET_ADMIN) until
/// told otherwise, and records what reached "the kernel".
struct Flaky {
    fail: Arc<std::sync::atomic::AtomicBool>,
    kernel: Arc<Mutex<Vec<IpNet>>>,
}

impl Exporter for Flaky {
    fn name(&self) -> &'static str {
        "nft"
    }
    fn apply(&self, add: &[Element], _: &[IpNet]) -> Result<(), super::super::export::ExportError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(super::super::export::ExportError::Failed {
                program: "nft",
                stderr: "/dev/stdin:1:1-22: Error: Could not process rule: Operation not permitted".into(),
            });
        }
        self.kernel.lock().unwrap().extend(add.iter().map(|e| e.net));
        Ok(())
    }
    fn reconcile(&self, all: &[Element]) -> Result<(), super::super::export::ExportError> {
        self.kernel.lock().unwrap().clear();
        self.apply(all, &[])
    }
}

#[tokio::test]
async fn a_failing_exporter_says_why_once_and_a_ban_by_hand_is_told_it_is_not_in_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FirewallConfig {
        bans: BanConfig::default(),
        store: dir.path().join("bans.json"),
        flush_interval: Duration::from_millis(10),
        nft: None,
        ipset: None,
        ports: Vec::new(),
        file: None,
        control_socket: dir.path().join("control.sock"),
    };
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let kernel = Arc::new(Mutex::new(Vec::new()));
    let events = EventBus::new(256);
    let mut rx = events.subscribe();
    let flaky = Flaky {
        fail: fail.clone(),
        kernel: kernel.clone(),
    };
    let fw = Arc::new(Firewall::with_exporter(cfg, events.clone(), Some(Box::new(flaky))));
    let stop = CancellationToken::new();
    let task = tokio::spawn(fw.clone().run(stop.clone()));
    let ban = |net: &str| Ban {
        net: net.parse().unwrap(),
        offence: Offence::Protocol,
        since: now(),
        until: now() + 600,
        rule: "added by hand (sluice bans add)".into(),
        strike: 1,
        evidence: Vec::new(),
    };
    let why = "exporter nft: Operation not permitted — needs CAP_NET_ADMIN";
    fw.insert(ban("192.0.2.7/32")).unwrap();
    assert_eq!(fw.kernel_state().await.as_deref(), Some(why));
    assert_eq!(fw.exporter_problem().as_deref(), Some(why));
    // Failing again at each flush and check (one a second) is not news.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut warnings = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Warning { message, .. } = &*e {
            warnings.push(message.clone());
        }
    }
    assert_eq!(warnings, [why]);
    assert!(kernel.lock().unwrap().is_empty());
    // Given the capability, the next check puts every ban back.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while fw.exporter_problem().is_some() {
        assert!(std::time::Instant::now() < deadline, "still failing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*kernel.lock().unwrap(), ["192.0.2.7/32".parse::<IpNet>().unwrap()]);
    fw.insert(ban("198.51.100.0/24")).unwrap();
    assert_eq!(fw.kernel_state().await, None);
    assert!(kernel.lock().unwrap().contains(&"198.51.100.0/24".parse().unwrap()));
    stop.cancel();
    task.await.unwrap();
}
