use super::*;
use crate::events::{Event, Reason};

#[test]
fn samples_are_per_second_differences_by_reason() {
    let m = Arc::new(Metrics::new());
    let h = History::new(m.clone(), Vec::new(), Watch::default(), "mx".into());
    h.sample(100);
    let rej = Event::RcptRejected {
        via: crate::events::Via::Smtp,
        tx: Default::default(),
        id: String::new(),
        session: 1,
        ip: "192.0.2.9".parse().unwrap(),
        rcpt: "a@b".into(),
        reason: Reason::UnknownUser,
        reply: crate::proto::Reply::UNKNOWN_USER,
        evidence: String::new(),
    };
    for _ in 0..3 {
        m.observe(&rej);
    }
    m.messages.with_label_values(&["accepted", "ok"]).inc_by(2);
    m.scanner_duration.with_label_values(&["tcp://c"]).observe(0.010);
    m.scanner_duration.with_label_values(&["tcp://c"]).observe(0.030);
    h.sample(101);
    h.sample(102);
    let s = h.status();
    assert_eq!(s.t, [100, 101, 102]);
    assert_eq!(s.accepted, [0, 2, 0]);
    assert_eq!(s.rejected["unknown_user"], [0, 3, 0]);
    assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
    let lat = s.scan_latency_ms[1].unwrap();
    assert!((lat - 20.0).abs() < 1e-9, "{lat}");
    assert_eq!(s.scan_latency_ms[2], None);
}

fn spam(action: crate::events::SpamAction) -> Event {
    Event::SpamScored {
        session: 1,
        ip: "192.0.2.9".parse().unwrap(),
        id: "X".into(),
        tx: Default::default(),
        score: 7.0,
        action,
        rules: String::new(),
        bayes: None,
        ngram: None,
    }
}

#[test]
fn spam_actions_and_quarantined_are_per_second_by_action() {
    use crate::events::{Cause, SpamAction};
    let m = Arc::new(Metrics::new());
    let h = History::new(m.clone(), Vec::new(), Watch::default(), "mx".into());
    h.sample(100);
    m.observe(&spam(SpamAction::Tag));
    m.observe(&spam(SpamAction::Tag));
    m.observe(&spam(SpamAction::Quarantine));
    m.observe(&spam(SpamAction::Reject));
    h.sample(101);
    // A virus found by the deferred scan: quarantined too.
    m.observe(&Event::Quarantined {
        ip: "192.0.2.9".parse().unwrap(),
        id: "Y".into(),
        tx: Default::default(),
        reason: Cause::Virus("Eicar".into()),
    });
    m.observe(&Event::VirusFound {
        session: 0,
        ip: "192.0.2.9".parse().unwrap(),
        id: "Y".into(),
        tx: Default::default(),
        name: "Eicar".into(),
        mode: crate::events::ScanMode::Deferred,
    });
    h.sample(102);
    let now = crate::mail::date::now_secs();
    assert!(!h.watched(now), "nobody has read the page");
    let s = h.status();
    assert!(h.watched(now) && !h.watched(now + WATCHED_FOR + 1));
    assert_eq!(s.spam_actions["tag"], [0, 2, 0]);
    assert_eq!(s.spam_actions["quarantine"], [0, 1, 0]);
    assert_eq!(s.spam_actions["reject"], [0, 1, 0]);
    assert_eq!(
        s.spam_actions.len(),
        3,
        "actions never taken are left out: {:?}",
        s.spam_actions
    );
    assert_eq!(s.quarantined, [0, 1, 1]);
    assert_eq!(s.rejected["spam"], [0, 1, 0]);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["spam_actions"]["tag"], serde_json::json!([0, 2, 0]));
    assert_eq!(json["top_networks_grouping"], serde_json::json!({"v4": 24, "v6": 64}));
    assert_eq!(
        json["quarantine"],
        serde_json::Value::Null,
        "not sampled without a quarantine"
    );
}

#[test]
fn clamd_endpoints_show_up_in_flight_and_last_minute_latency() {
    let m = Arc::new(Metrics::new());
    let h = History::new(m.clone(), Vec::new(), Watch::default(), "mx".into());
    m.scanner_up.with_label_values(&["tcp://a"]).set(1);
    m.scanner_up.with_label_values(&["tcp://b"]).set(0);
    m.scanner_in_flight.with_label_values(&["tcp://a"]).set(3);
    m.scanner_queue.set(7);
    // Before the window: a slow scan that must not count.
    m.scanner_duration.with_label_values(&["tcp://a"]).observe(20.0);
    h.sample(100);
    // 10 scans in the last minute: 9 fast (in the 5-10 ms bucket), one slow.
    for _ in 0..9 {
        m.scanner_duration.with_label_values(&["tcp://a"]).observe(0.008);
    }
    m.scanner_duration.with_label_values(&["tcp://a"]).observe(0.2);
    h.sample(130);
    h.sample(150);
    let s = h.status();
    assert_eq!(s.scan_backlog, [7, 7, 7]);
    assert_eq!(s.clamd.len(), 2, "{:?}", s.clamd);
    let a = &s.clamd[0];
    assert_eq!(
        (a.endpoint.as_str(), a.up, a.in_flight, a.scans),
        ("tcp://a", true, 3, 10)
    );
    let mean = a.mean_ms.unwrap();
    assert!((mean - 27.2).abs() < 1e-6, "{mean}");
    // Rank 5 of 10 in (5 ms, 10 ms], 9 there: 5 + 5 * 5/9 ms.
    let p50 = a.p50_ms.unwrap();
    assert!((p50 - (5.0 + 5.0 * 5.0 / 9.0)).abs() < 1e-6, "{p50}");
    // Rank 9.5: the slow one, in (100 ms, 250 ms].
    let p95 = a.p95_ms.unwrap();
    assert!(p95 > 100.0 && p95 <= 250.0, "{p95}");
    let b = &s.clamd[1];
    assert_eq!(
        (b.endpoint.as_str(), b.up, b.scans, b.p50_ms),
        ("tcp://b", false, 0, None)
    );
    // A minute later the window has moved past the scans.
    h.sample(200);
    h.sample(215);
    let a = &h.status().clamd[0];
    assert_eq!((a.scans, a.p95_ms), (0, None), "{a:?}");
}

#[test]
fn queued_messages_count_once_per_route_of_their_remaining_recipients() {
    use crate::delivery::queue::control::State as Q;
    let entry = |rcpts: &[&str]| Entry {
        id: "I".into(),
        received_at: 1,
        size: 10,
        from: String::new(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        attempts: 0,
        state: Q::Deferred,
        next_attempt: None,
        last_reply: None,
    };
    let entries = [
        entry(&["a@example.com", "b@example.com"]),
        entry(&["a@example.com", "c@lmtp.example"]),
        entry(&["x@outside.example"]),
    ];
    let route = |d: &str| match d {
        "example.com" => "default".to_string(),
        "lmtp.example" => "lmtp.example".to_string(),
        _ => "mx".to_string(),
    };
    let q = queued_by_route(&entries, route);
    let want: BTreeMap<String, usize> = [("default", 2), ("lmtp.example", 1), ("mx", 1)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(q, want);
}
