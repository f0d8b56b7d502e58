//! DNS lookups behind a small trait, so checks can be unit-tested with a
//! map-backed fake; the real implementation is hickory-resolver (with its
//! TTL cache), pointed at the system resolver or `dns.resolver` (IP:port).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

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
}

/// A hickory resolver (with its TTL cache) as sluice uses it, for the
/// DNS lists and for mail-auth: `server` (UDP, then TCP on truncation) or
/// /etc/resolv.conf when `None`; `timeout` bounds one query; one attempt;
/// names are absolute (no search domains); a negative answer is cached for
/// at least `negative_ttl`, also without an SOA to give it a TTL (else
/// every message from one sender domain would ask again).
pub fn tokio_resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
    negative_ttl: Duration,
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
    builder.build().map_err(|e| DnsError::Failed(e.to_string()))
}

impl HickoryResolver {
    /// `server`: a resolver to ask (UDP, then TCP on truncation); `None`
    /// reads /etc/resolv.conf. `timeout` bounds one query.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self, DnsError> {
        Ok(Self {
            inner: tokio_resolver(server, timeout, Duration::from_secs(60))?,
        })
    }

    /// Wraps a resolver built by [`tokio_resolver`] (clones share its cache).
    pub fn from_resolver(inner: hickory_resolver::TokioResolver) -> Self {
        Self { inner }
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
        self.inner.lookup(fqdn.as_str(), rtype).await.map_err(|e| {
            if e.is_no_records_found() || e.is_nx_domain() {
                DnsError::NotFound
            } else if e.to_string().to_ascii_lowercase().contains("timed out") {
                DnsError::Timeout
            } else {
                DnsError::Failed(e.to_string())
            }
        })
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
