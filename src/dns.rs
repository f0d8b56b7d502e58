//! DNS lookups behind a small trait, so checks can be unit-tested with a
//! map-backed fake; the real implementation is hickory-resolver (with its
//! TTL cache), pointed at the system resolver or `dns.resolver` (IP:port).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use dashmap::DashMap;
use std::pin::Pin;
use std::time::Duration;

pub mod health;

pub use health::{Health, HealthConfig, QueryOutcome};

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN or no records of that type: a normal "not listed".
    #[error("no such record")]
    NotFound,
    #[error("DNS timeout")]
    Timeout,
    #[error("DNS failure: {0}")]
    Failed(String),
}

pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// The DNS seam.
pub trait Resolver: Send + Sync + 'static {
    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>>;
    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>>;
    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv6Addr>>;
    /// PTR names of `ip` (without the trailing dot).
    fn lookup_ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>>;
    /// MX records of `name`: (preference, exchange without the trailing
    /// dot; "" for the null MX of RFC 7505).
    fn lookup_mx<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>>;
}

/// hickory-resolver, with its answer cache (entries live for their TTL).
pub struct HickoryResolver {
    inner: hickory_resolver::TokioResolver,
    /// Told the outcome of every query (see [`health`]).
    health: Option<Arc<Health>>,
}

/// A hickory resolver (with its TTL cache) as sluice uses it, for the
/// DNS lists and for mail-auth: `server` (UDP, then TCP on truncation) or
/// /etc/resolv.conf when `None`; `timeout` bounds one query; one attempt;
/// names are absolute (no search domains); a negative answer is cached for
/// at least `negative_ttl`, also without an SOA to give it a TTL (else
/// every message from one sender domain would ask again), and an answer
/// for at least `min_ttl` (as unbound's cache-min-ttl: records with a TTL
/// of 0 or a few seconds would make every message ask, and every lost
/// query stall one).
pub fn tokio_resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
    negative_ttl: Duration,
    min_ttl: Duration,
) -> Result<hickory_resolver::TokioResolver, DnsError> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => hickory_resolver::TokioResolver::builder_tokio().map_err(|e| DnsError::Failed(e.to_string()))?,
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 32 * 1024;
    opts.ndots = 0;
    opts.negative_min_ttl = Some(negative_ttl);
    opts.positive_min_ttl = Some(min_ttl);
    builder.build().map_err(|e| DnsError::Failed(e.to_string()))
}

impl HickoryResolver {
    /// `server`: a resolver to ask (UDP, then TCP on truncation); `None`
    /// reads /etc/resolv.conf. `timeout` bounds one query.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self, DnsError> {
        Ok(Self {
            inner: tokio_resolver(server, timeout, Duration::from_secs(60), Duration::ZERO)?,
            health: None,
        })
    }

    /// Wraps a resolver built by [`tokio_resolver`] (clones share its cache).
    pub fn from_resolver(inner: hickory_resolver::TokioResolver) -> Self {
        Self { inner, health: None }
    }

    /// Reports every query's outcome to `health`.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    async fn lookup(
        &self,
        name: &str,
        rtype: hickory_resolver::proto::rr::RecordType,
    ) -> Result<hickory_resolver::lookup::Lookup, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let mut pending = Pending {
            health: self.health.as_deref(),
            name,
            started: std::time::Instant::now(),
        };
        let res = self.inner.lookup(fqdn.as_str(), rtype).await.map_err(|e| {
            if e.is_no_records_found() || e.is_nx_domain() {
                DnsError::NotFound
            } else if e.to_string().to_ascii_lowercase().contains("timed out") {
                DnsError::Timeout
            } else {
                DnsError::Failed(e.to_string())
            }
        });
        if let Some(h) = pending.health.take() {
            h.record(
                health::key_of(name),
                match &res {
                    Ok(_) | Err(DnsError::NotFound) => QueryOutcome::Answered,
                    Err(DnsError::Timeout) => QueryOutcome::Timeout,
                    Err(DnsError::Failed(_)) => QueryOutcome::Failed,
                },
            );
        }
        res
    }
}

/// A query the health view has not been told about yet. Callers bound
/// their waits (`dns.timeout`, the transaction's budget) and drop the
/// query when they give up, usually just before hickory's own timeout: a
/// query abandoned after [`ABANDONED_AFTER`] counts as timed out (one given
/// up sooner, e.g. by a client hanging up, counts as nothing).
struct Pending<'a> {
    health: Option<&'a Health>,
    name: &'a str,
    started: std::time::Instant,
}

/// See [`Pending`].
const ABANDONED_AFTER: Duration = Duration::from_secs(1);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.health
            && self.started.elapsed() >= ABANDONED_AFTER
        {
            h.record(health::key_of(self.name), QueryOutcome::Timeout);
        }
    }
}

/// Probes the root (`. NS`) through `resolver` while its health view has
/// seen failures (every 5 s; every second while failing), so a dead
/// resolver is told from a dead sender domain, and a revived one is seen
/// at once. Ends with `stop`.
pub async fn probe_while_troubled(resolver: HickoryResolver, stop: tokio_util::sync::CancellationToken) {
    let Some(health) = resolver.health.clone() else {
        return;
    };
    loop {
        let pause = if health.failing() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if health.failing() || health.troubled() {
            let _ = resolver.lookup(".", hickory_resolver::proto::rr::RecordType::NS).await;
        }
    }
}

impl HickoryResolver {
    /// Looks `name` up and keeps the answers `pick` understands.
    async fn records<T>(
        &self,
        name: &str,
        rtype: hickory_resolver::proto::rr::RecordType,
        pick: impl Fn(&hickory_resolver::proto::rr::RData) -> Option<T>,
    ) -> Result<Vec<T>, DnsError> {
        let l = self.lookup(name, rtype).await?;
        Ok(l.answers().iter().filter_map(|r| pick(&r.data)).collect())
    }
}

impl Resolver for HickoryResolver {
    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Box::pin(self.records(name, RecordType::A, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        }))
    }

    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv6Addr>> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Box::pin(self.records(name, RecordType::AAAA, |d| match d {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        }))
    }

    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Box::pin(self.records(name, RecordType::TXT, |d| {
            match d {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect(),
                ),
                _ => None,
            }
        }))
    }

    fn lookup_mx<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Box::pin(self.records(name, RecordType::MX, |d| match d {
            RData::MX(mx) => Some((
                mx.preference,
                mx.exchange.to_string().trim_end_matches('.').to_ascii_lowercase(),
            )),
            _ => None,
        }))
    }

    fn lookup_ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Box::pin(async move {
            let zone = if ip.is_ipv4() { "in-addr.arpa" } else { "ip6.arpa" };
            self.records(&reverse_name(ip, zone), RecordType::PTR, |d| match d {
                RData::PTR(p) => Some(p.0.to_string().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .await
        })
    }
}

/// One lookup in flight, shared by every caller that asks the same
/// question meanwhile.
type Flight<T> = Arc<tokio::sync::OnceCell<Result<T, DnsError>>>;

/// Coalesces identical lookups in flight: during a storm from one sender
/// domain or one client network, a hundred sessions asking the same name at
/// once send one query and share its answer. Nothing is kept once the
/// answer is in (repeats are the TTL cache's job, below). When the caller
/// that sent the query gives up (its deadline), a waiting caller asks again.
pub struct Coalescing<R> {
    inner: R,
    a: DashMap<String, Flight<Vec<Ipv4Addr>>>,
    aaaa: DashMap<String, Flight<Vec<Ipv6Addr>>>,
    txt: DashMap<String, Flight<Vec<String>>>,
    ptr: DashMap<IpAddr, Flight<Vec<String>>>,
    mx: DashMap<String, Flight<Vec<(u16, String)>>>,
}

impl<R: Resolver> Coalescing<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            a: DashMap::new(),
            aaaa: DashMap::new(),
            txt: DashMap::new(),
            ptr: DashMap::new(),
            mx: DashMap::new(),
        }
    }
}

async fn shared<K, T>(
    flights: &DashMap<K, Flight<T>>,
    key: K,
    lookup: impl Future<Output = Result<T, DnsError>>,
) -> Result<T, DnsError>
where
    K: Eq + std::hash::Hash + Clone,
    T: Clone,
{
    let flight = flights.entry(key.clone()).or_default().clone();
    let answer = flight.get_or_init(|| lookup).await.clone();
    flights.remove_if(&key, |_, f| Arc::ptr_eq(f, &flight));
    answer
}

impl<R: Resolver> Resolver for Coalescing<R> {
    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>> {
        Box::pin(shared(&self.a, name.to_ascii_lowercase(), self.inner.lookup_a(name)))
    }
    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(shared(
            &self.txt,
            name.to_ascii_lowercase(),
            self.inner.lookup_txt(name),
        ))
    }
    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv6Addr>> {
        Box::pin(shared(
            &self.aaaa,
            name.to_ascii_lowercase(),
            self.inner.lookup_aaaa(name),
        ))
    }
    fn lookup_ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(shared(&self.ptr, ip, self.inner.lookup_ptr(ip)))
    }
    fn lookup_mx<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
        Box::pin(shared(&self.mx, name.to_ascii_lowercase(), self.inner.lookup_mx(name)))
    }
}

/// Joins futures concurrently, in one task, so borrowed futures work (the
/// DNS lists ask all their zones at once).
pub(crate) async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The resolver of a configuration that needs no DNS: every lookup fails
/// (nothing asks it).
pub struct NoDns;

impl NoDns {
    fn fail<'a, T: Send + 'a>() -> DnsFuture<'a, T> {
        Box::pin(async { Err(DnsError::Failed("no DNS resolver in this configuration".into())) })
    }
}

impl Resolver for NoDns {
    fn lookup_a<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>> {
        Self::fail()
    }
    fn lookup_txt<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Self::fail()
    }
    fn lookup_aaaa<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv6Addr>> {
        Self::fail()
    }
    fn lookup_ptr<'a>(&'a self, _ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Self::fail()
    }
    fn lookup_mx<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
        Self::fail()
    }
}

/// A map-backed resolver for tests: names not in the map are NXDOMAIN;
/// names in `slow` never answer (until the caller's deadline).
#[derive(Default)]
pub struct FakeResolver {
    pub a: HashMap<String, Vec<Ipv4Addr>>,
    pub ptr: HashMap<IpAddr, Vec<String>>,
    pub txt: HashMap<String, Vec<String>>,
    pub mx: HashMap<String, Vec<(u16, String)>>,
    pub slow: Vec<String>,
}

impl Resolver for FakeResolver {
    fn lookup_aaaa<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv6Addr>> {
        Box::pin(async move { Err(DnsError::NotFound) })
    }

    fn lookup_ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move { self.ptr.get(&ip).cloned().ok_or(DnsError::NotFound) })
    }

    fn lookup_a<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>> {
        Box::pin(async move {
            if self.slow.iter().any(|s| s == name) {
                std::future::pending::<()>().await;
            }
            self.a.get(name).cloned().ok_or(DnsError::NotFound)
        })
    }

    fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move { self.txt.get(name).cloned().ok_or(DnsError::NotFound) })
    }

    fn lookup_mx<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
        Box::pin(async move {
            if self.slow.iter().any(|s| s == name) {
                std::future::pending::<()>().await;
            }
            self.mx.get(name).cloned().ok_or(DnsError::NotFound)
        })
    }
}

/// The DNSBL query name for `ip` in `zone`: reversed octets for IPv4,
/// reversed nibbles for IPv6 (RFC 5782 §2.1, §2.4). (Sessions turn
/// IPv4-mapped client addresses into IPv4 before they get here.)
pub fn reverse_name(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + zone.len());
            for b in v6.octets().iter().rev() {
                for n in [b & 0xf, b >> 4] {
                    s.push(char::from_digit(u32::from(n), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str(zone);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every A query after 50 ms, counting the queries it gets.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Resolver for Counting {
        fn lookup_a<'a>(&'a self, _: &'a str) -> DnsFuture<'a, Vec<Ipv4Addr>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(vec![Ipv4Addr::new(127, 0, 0, 2)])
            })
        }
        fn lookup_txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
            NoDns.lookup_txt(name)
        }
        fn lookup_aaaa<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<Ipv6Addr>> {
            NoDns.lookup_aaaa(name)
        }
        fn lookup_ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
            NoDns.lookup_ptr(ip)
        }
        fn lookup_mx<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
            NoDns.lookup_mx(name)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identical_lookups_in_flight_send_one_query() {
        let dns = Coalescing::new(Counting::default());
        let ask = |name: &'static str| dns.lookup_a(name);
        let same = (0..20).map(|i| {
            ask(if i % 2 == 0 {
                "2.0.0.127.bl.test"
            } else {
                "2.0.0.127.BL.test"
            })
        });
        let answers = join_all(same.chain([ask("3.0.0.127.bl.test")])).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Ok(&[Ipv4Addr::new(127, 0, 0, 2)][..]))
        );
        // Twenty askers of one name (any case), one of another: two queries.
        assert_eq!(dns.inner.0.load(Ordering::SeqCst), 2);
        // Once answered nothing is kept: the next question is asked again.
        dns.lookup_a("2.0.0.127.bl.test").await.unwrap();
        assert_eq!(dns.inner.0.load(Ordering::SeqCst), 3);
        assert!(dns.a.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_asks_again_when_the_first_caller_gives_up() {
        let dns = Coalescing::new(Counting::default());
        let impatient = tokio::time::timeout(Duration::from_millis(10), dns.lookup_a("x.bl.test"));
        let patient = dns.lookup_a("x.bl.test");
        let (gave_up, answer) = tokio::join!(impatient, patient);
        assert!(gave_up.is_err());
        assert_eq!(answer, Ok(vec![Ipv4Addr::new(127, 0, 0, 2)]));
        assert_eq!(dns.inner.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("127.0.0.2".parse().unwrap(), "bl.test"),
            "2.0.0.127.bl.test"
        );
        assert_eq!(
            reverse_name("::ffff:127.0.0.2".parse().unwrap(), "bl.test"),
            "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test"
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap(), "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
    }
}
