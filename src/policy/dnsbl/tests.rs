use super::*;
use crate::dns::FakeResolver;

#[test]
fn zone_specs() {
    let z = Zone::parse("zen.example=127.0.0.[2..11]*3").unwrap();
    assert_eq!((z.name.as_str(), z.weight), ("zen.example", 3));
    assert!(z.counts("127.0.0.2".parse().unwrap()));
    assert!(z.counts("127.0.0.11".parse().unwrap()));
    assert!(!z.counts("127.0.0.12".parse().unwrap()));
    let z = Zone::parse("list.dnswl.example=127.0.[0..255].[1;3]*-2").unwrap();
    assert_eq!(z.weight, -2);
    assert!(z.counts("127.0.9.3".parse().unwrap()));
    assert!(!z.counts("127.0.9.2".parse().unwrap()));
    let z = Zone::parse("BL.Test.").unwrap();
    assert_eq!((z.name.as_str(), z.weight), ("bl.test", 1));
    assert!(z.counts("127.0.0.4".parse().unwrap()));
    assert!(!z.counts("10.0.0.1".parse().unwrap()));
    for bad in [
        "",
        "*3",
        "bl.test*x",
        "bl.test=127.0.0*3",
        "bl.test=127.0.0.[5..2]",
        "bl.test*0",
        "bl test",
    ] {
        assert!(Zone::parse(bad).is_err(), "{bad:?} should be refused");
    }
}

fn dnsbl(fake: FakeResolver, zones: &[&str], threshold: i32) -> Dnsbl {
    Dnsbl::new(
        zones.iter().map(|z| Zone::parse(z).unwrap()).collect(),
        vec![Zone::parse("dbl.example*2").unwrap()],
        threshold,
        HashMap::from([("hidden.example".to_string(), "Go away, $client".to_string())]),
        Duration::from_millis(200),
        Arc::new(fake),
        EventBus::new(16),
    )
}

#[tokio::test]
async fn weights_add_up_and_allowlists_subtract() {
    let mut fake = FakeResolver::default();
    fake.a
        .insert("2.2.0.192.a.example".into(), vec!["127.0.0.2".parse().unwrap()]);
    fake.a
        .insert("2.2.0.192.b.example".into(), vec!["127.0.0.4".parse().unwrap()]);
    fake.a
        .insert("2.2.0.192.wl.example".into(), vec!["127.0.10.2".parse().unwrap()]);
    let d = dnsbl(fake, &["a.example*2", "b.example=127.0.0.[2..3]*5", "wl.example*-1"], 2);
    let s = d.score_ip("192.0.2.2".parse().unwrap()).await;
    // b.example answered 127.0.0.4, outside its filter: not counted.
    assert_eq!(s.total, 1);
    assert!(!d.listed(&s));
    assert_eq!(s.evidence(), "a.example=127.0.0.2(+2), wl.example=127.0.10.2(-1)");
    let s = d.score_ip("192.0.2.3".parse().unwrap()).await;
    assert_eq!(s, Score::default());
}

#[tokio::test]
async fn slow_zone_times_out_and_counts_as_not_listed() {
    let mut fake = FakeResolver::default();
    fake.slow.push("2.2.0.192.slow.example".into());
    fake.a
        .insert("2.2.0.192.fast.example".into(), vec!["127.0.0.2".parse().unwrap()]);
    let d = dnsbl(fake, &["slow.example*5", "fast.example*3"], 3);
    let t = std::time::Instant::now();
    let s = d.score_ip("192.0.2.2".parse().unwrap()).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(s.total, 3);
    assert!(d.listed(&s));
    assert_eq!(s.errors, vec![("slow.example".to_string(), DnsError::Timeout)]);
}

#[tokio::test]
async fn zone_listing_127_0_0_1_is_disabled() {
    let mut fake = FakeResolver::default();
    fake.a
        .insert("1.0.0.127.broken.example".into(), vec!["127.0.0.2".parse().unwrap()]);
    fake.a
        .insert("2.2.0.192.broken.example".into(), vec!["127.0.0.2".parse().unwrap()]);
    let d = dnsbl(fake, &["broken.example*5"], 1);
    assert!(d.listed(&d.score_ip("192.0.2.2".parse().unwrap()).await));
    d.health_check().await;
    assert!(!d.listed(&d.score_ip("192.0.2.2".parse().unwrap()).await));
}

/// A zone whose A answers can change between probes.
#[derive(Default)]
struct Switchable(std::sync::Mutex<HashMap<String, Vec<Ipv4Addr>>>);

impl Resolver for Switchable {
    fn lookup_a<'a>(&'a self, name: &'a str) -> crate::dns::DnsFuture<'a, Vec<Ipv4Addr>> {
        let hit = self.0.lock().unwrap().get(name).cloned();
        Box::pin(async move { hit.ok_or(DnsError::NotFound) })
    }
    fn lookup_txt<'a>(&'a self, _: &'a str) -> crate::dns::DnsFuture<'a, Vec<String>> {
        Box::pin(async { Err(DnsError::NotFound) })
    }
    fn lookup_aaaa<'a>(&'a self, _: &'a str) -> crate::dns::DnsFuture<'a, Vec<std::net::Ipv6Addr>> {
        Box::pin(async { Err(DnsError::NotFound) })
    }
    fn lookup_ptr<'a>(&'a self, _: IpAddr) -> crate::dns::DnsFuture<'a, Vec<String>> {
        Box::pin(async { Err(DnsError::NotFound) })
    }
    fn lookup_mx<'a>(&'a self, _: &'a str) -> crate::dns::DnsFuture<'a, Vec<(u16, String)>> {
        Box::pin(async { Err(DnsError::NotFound) })
    }
}

#[tokio::test]
async fn zone_that_lists_nothing_is_disabled_and_re_enabled_when_it_answers_again() {
    let answers = Arc::new(Switchable::default());
    let set = |name: &str, on: bool| {
        let mut m = answers.0.lock().unwrap();
        if on {
            m.insert(name.to_string(), vec![Ipv4Addr::new(127, 0, 0, 2)]);
        } else {
            m.remove(name);
        }
    };
    set("2.2.0.192.flaky.example", true);
    let d = Dnsbl::new(
        vec![Zone::parse("flaky.example*5").unwrap()],
        vec![],
        1,
        HashMap::new(),
        Duration::from_millis(200),
        answers.clone(),
        EventBus::new(16),
    );
    let client: IpAddr = "192.0.2.2".parse().unwrap();
    let gauge = |d: &Dnsbl| {
        d.events
            .metrics()
            .dnsbl_zone_enabled
            .with_label_values(&["flaky.example"])
            .get()
    };
    // The test entry 127.0.0.2 is missing: the zone lists nothing.
    d.health_check().await;
    assert_eq!(gauge(&d), 0);
    assert!(!d.listed(&d.score_ip(client).await));
    // The zone is repaired: the next probe turns it back on.
    set("2.0.0.127.flaky.example", true);
    d.health_check().await;
    assert_eq!(gauge(&d), 1);
    assert!(d.listed(&d.score_ip(client).await));
    // It stops answering (the probes time out): off, then back on.
    let slow = Dnsbl::new(
        vec![Zone::parse("flaky.example*5").unwrap()],
        vec![],
        1,
        HashMap::new(),
        Duration::from_millis(200),
        Arc::new(FakeResolver {
            slow: vec!["1.0.0.127.flaky.example".into(), "2.0.0.127.flaky.example".into()],
            ..Default::default()
        }),
        d.events.clone(),
    );
    slow.health_check().await;
    assert_eq!(gauge(&slow), 0);
    d.health_check().await;
    assert_eq!(gauge(&d), 1);
    // It starts listing everyone, 127.0.0.1 included: off again.
    set("1.0.0.127.flaky.example", true);
    d.health_check().await;
    assert_eq!(gauge(&d), 0);
    assert!(!d.listed(&d.score_ip(client).await));
}

#[tokio::test]
async fn rhsbl_and_reply_text() {
    let mut fake = FakeResolver::default();
    fake.a
        .insert("spammer.example.dbl.example".into(), vec!["127.0.1.2".parse().unwrap()]);
    fake.a
        .insert("2.2.0.192.hidden.example".into(), vec!["127.0.0.2".parse().unwrap()]);
    let d = dnsbl(fake, &["hidden.example*3"], 2);
    let s = d
        .score_domains(&["client.example", "spammer.example", "[192.0.2.1]"])
        .await;
    assert_eq!(s.total, 2);
    let ip: IpAddr = "192.0.2.2".parse().unwrap();
    let s = d.score_ip(ip).await;
    // The configured text hides the zone name.
    assert_eq!(d.reply(ip, &s).to_string(), "554 5.7.1 Go away, 192.0.2.2");
}
