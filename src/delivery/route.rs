//! Which next hop each recipient goes to, like Postfix's `transport_maps`:
//! a `[relay.routes]` entry for its domain (most specific first), else the
//! default next hop for our own domains, else (DSNs to outside senders) the
//! bounce relay or the MX hosts of the domain. A message with recipients
//! on several routes is delivered per route from the one spooled copy.

use std::net::IpAddr;
use std::sync::Arc;

use super::client::RcptStatus;
use super::{DeliverFuture, HopState, NextHopTransport, Transport, local};
use crate::config::{DomainPattern, ForwardClient, Hop, HopTls, NextHop, Relay};
use crate::dns::{DnsError, Resolver};
use crate::mail::envelope::Envelope;

/// Where recipients outside our domains and routes go.
enum Outside {
    /// `relay.bounce_next_hop`.
    Relay(Arc<NextHopTransport>),
    /// MX lookup of the recipient's domain, port `relay.mx_port`.
    Mx(Box<MxTransport>),
}

pub struct Router {
    routes: Vec<(DomainPattern, Arc<NextHopTransport>)>,
    default: Arc<NextHopTransport>,
    /// Our domains (`recipients.domains`), lowercase.
    local: Vec<String>,
    outside: Outside,
    /// Told by every next hop here when it is reached again.
    recovered: Arc<tokio::sync::Notify>,
}

/// One next hop as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopView {
    /// The route, as the `sluice_route_*` metrics label it: "default", a
    /// `[relay.routes]` domain pattern, "bounce" or "mx".
    pub route: String,
    /// Where it goes ("MX of the recipient's domain" for "mx").
    pub next_hop: String,
    pub state: HopState,
}

/// The index of the transport a domain goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Route(usize),
    Default,
    Outside,
}

impl Router {
    /// Builds the transports of `cfg`. `resolver` is used for MX lookups
    /// (when no bounce relay is set); `metrics` gets a label per route.
    pub fn new(
        cfg: &Relay,
        local: &[String],
        resolver: Arc<dyn Resolver>,
        metrics: &crate::metrics::Metrics,
    ) -> Router {
        Self::signalling(cfg, local, resolver, metrics, Arc::new(tokio::sync::Notify::new()))
    }

    /// [`Router::new`], its next hops telling `recovered` when one is
    /// reached again (a reload's new router tells the queue's signal).
    pub fn signalling(
        cfg: &Relay,
        local: &[String],
        resolver: Arc<dyn Resolver>,
        metrics: &crate::metrics::Metrics,
        recovered: Arc<tokio::sync::Notify>,
    ) -> Router {
        let default = Arc::new(
            NextHopTransport::new(cfg.clone())
                .with_up_gauge(metrics.next_hop_up.clone())
                .with_route_metrics(metrics, "default")
                .with_recovered(recovered.clone()),
        );
        let routes = cfg
            .routes
            .iter()
            .map(|r| {
                let t = NextHopTransport::for_hop(cfg.clone(), r.hop.clone())
                    .with_route_metrics(metrics, &r.domains.to_string())
                    .with_recovered(recovered.clone());
                (r.domains.clone(), Arc::new(t))
            })
            .collect();
        let outside = match &cfg.bounce_next_hop {
            Some(hop) => Outside::Relay(Arc::new(
                NextHopTransport::for_hop(cfg.clone(), hop.clone())
                    .with_route_metrics(metrics, "bounce")
                    .with_recovered(recovered.clone()),
            )),
            None => Outside::Mx(Box::new(MxTransport {
                cfg: cfg.clone(),
                resolver,
                metrics: metrics.route_deliveries.clone(),
                state: std::sync::Mutex::new(HopState::default()),
            })),
        };
        Router {
            routes,
            default,
            local: local.to_vec(),
            outside,
            recovered,
        }
    }

    /// The router of `config`: MX lookups (when no bounce relay is set) go
    /// through `dns` (the server's resolver, shared cache) or a resolver
    /// built from `[dns]`.
    pub fn from_config(
        config: &crate::config::Config,
        dns: Option<&hickory_resolver::TokioResolver>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Router, DnsError> {
        Self::from_config_signalling(config, dns, metrics, Arc::new(tokio::sync::Notify::new()))
    }

    /// [`Router::from_config`] telling `recovered` (see
    /// [`Router::signalling`]).
    pub fn from_config_signalling(
        config: &crate::config::Config,
        dns: Option<&hickory_resolver::TokioResolver>,
        metrics: &crate::metrics::Metrics,
        recovered: Arc<tokio::sync::Notify>,
    ) -> Result<Router, DnsError> {
        let resolver: Arc<dyn Resolver> = match (&config.relay.bounce_next_hop, dns) {
            (Some(_), _) => Arc::new(crate::dns::NoDns),
            (None, Some(inner)) => Arc::new(crate::dns::HickoryResolver::from_resolver(inner.clone())),
            (None, None) => Arc::new(crate::dns::HickoryResolver::from_resolver(crate::dns::tokio_resolver(
                config.dns.resolver,
                config.dns.timeout,
                config.dns.negative_ttl,
                config.dns.min_ttl,
            )?)),
        };
        Ok(Router::signalling(
            &config.relay,
            &config.recipients.domains,
            resolver,
            metrics,
            recovered,
        ))
    }

    /// The default next hop's transport (health probe, quarantine release).
    pub fn default_transport(&self) -> &Arc<NextHopTransport> {
        &self.default
    }

    /// Every next hop, the default first, with its state.
    pub fn hops(&self) -> Vec<HopView> {
        let view = |route: String, t: &NextHopTransport| HopView {
            route,
            next_hop: t.hop().next_hop.to_string(),
            state: t.state(),
        };
        let mut out = vec![view("default".into(), &self.default)];
        out.extend(self.routes.iter().map(|(p, t)| view(p.to_string(), t)));
        out.push(match &self.outside {
            Outside::Relay(t) => view("bounce".into(), t),
            Outside::Mx(mx) => HopView {
                route: "mx".into(),
                next_hop: "MX of the recipient's domain".into(),
                state: mx.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            },
        });
        out
    }

    /// The route (as [`HopView::route`] names it) mail to `domain` takes.
    pub fn route_of(&self, domain: &str) -> String {
        match self.target(domain) {
            Target::Route(i) => self.routes[i].0.to_string(),
            Target::Default => "default".into(),
            Target::Outside => match &self.outside {
                Outside::Relay(_) => "bounce".into(),
                Outside::Mx(_) => "mx".into(),
            },
        }
    }

    fn target(&self, domain: &str) -> Target {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(i) = self.routes.iter().position(|(p, _)| p.matches(&domain)) {
            return Target::Route(i);
        }
        if self.local.contains(&domain) {
            return Target::Default;
        }
        Target::Outside
    }

    async fn deliver_to(&self, t: Target, env: &Envelope, idx: &[usize], body: &[u8]) -> Vec<RcptStatus> {
        match t {
            Target::Route(i) => self.routes[i].1.deliver(env, idx, body).await,
            Target::Default => self.default.deliver(env, idx, body).await,
            Target::Outside => match &self.outside {
                Outside::Relay(t) => t.deliver(env, idx, body).await,
                Outside::Mx(mx) => mx.deliver(env, idx, body).await,
            },
        }
    }

    /// Closes idle pooled connections politely (QUIT) at shutdown.
    pub async fn close_idle(&self) {
        self.default.close_idle().await;
        for (_, t) in &self.routes {
            t.close_idle().await;
        }
        if let Outside::Relay(t) = &self.outside {
            t.close_idle().await;
        }
    }
}

impl Transport for Router {
    /// The default next hop's.
    fn health(&self, within: std::time::Duration) -> super::HealthFuture<'_> {
        self.default.health(within)
    }

    /// Any of its next hops (not MX hosts: those are many and come and go).
    fn recovered(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.recovered.clone())
    }

    fn retry_now(&self) {
        self.default.retry_now();
        for (_, t) in &self.routes {
            t.retry_now();
        }
        if let Outside::Relay(t) = &self.outside {
            t.retry_now();
        }
    }

    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a> {
        Box::pin(async move {
            // Group the recipients by target, keeping their positions.
            let mut groups: Vec<(Target, Vec<usize>, Vec<usize>)> = Vec::new();
            for (pos, &i) in idx.iter().enumerate() {
                let t = self.target(&env.rcpts[i].addr.domain);
                match groups.iter_mut().find(|g| g.0 == t) {
                    Some(g) => {
                        g.1.push(pos);
                        g.2.push(i);
                    }
                    None => groups.push((t, vec![pos], vec![i])),
                }
            }
            if let [(t, _, _)] = groups.as_slice() {
                return self.deliver_to(*t, env, idx, body).await;
            }
            let mut out: Vec<Option<RcptStatus>> = vec![None; idx.len()];
            let runs = groups
                .iter()
                .map(|(t, _, rcpts)| -> DeliverFuture<'_> { Box::pin(self.deliver_to(*t, env, rcpts, body)) });
            let results = crate::dns::join_all(runs).await;
            for ((_, positions, _), st) in groups.iter().zip(results) {
                for (&pos, s) in positions.iter().zip(st) {
                    out[pos] = Some(s);
                }
            }
            out.into_iter()
                .map(|s| s.unwrap_or_else(|| RcptStatus::Temporary(local(451, "4.3.0 no status"))))
                .collect()
        })
    }
}

/// Delivery to the MX hosts of each recipient's domain (RFC 5321 §5.1):
/// by preference, an implicit MX when there is none, nothing for a null MX
/// (RFC 7505). Opportunistic STARTTLS, no client forwarding, no pooling
/// (bounces are rare).
pub struct MxTransport {
    cfg: Relay,
    resolver: Arc<dyn Resolver>,
    metrics: prometheus::IntCounterVec,
    /// The last reply (up stays unknown: each domain has its own hosts).
    state: std::sync::Mutex<HopState>,
}

/// Why a domain has no address to deliver to.
enum NoHost {
    Temporary(String),
    Permanent(&'static str, String),
}

impl MxTransport {
    /// The addresses to try, in order.
    async fn addresses(&self, domain: &str) -> Result<Vec<IpAddr>, NoHost> {
        let t = self.cfg.command_timeout.min(std::time::Duration::from_secs(30));
        let hosts = match tokio::time::timeout(t, self.resolver.lookup_mx(domain)).await {
            Err(_) => return Err(NoHost::Temporary(format!("MX lookup of {domain} timed out"))),
            Ok(Ok(mut mx)) => {
                mx.sort_by_key(|(pref, _)| *pref);
                if mx.iter().all(|(_, h)| h.is_empty()) {
                    return Err(NoHost::Permanent(
                        "5.1.10",
                        format!("{domain} accepts no mail (null MX)"),
                    ));
                }
                mx.into_iter().map(|(_, h)| h).filter(|h| !h.is_empty()).collect()
            }
            Ok(Err(DnsError::NotFound)) => vec![domain.to_string()],
            Ok(Err(e)) => return Err(NoHost::Temporary(format!("MX lookup of {domain}: {e}"))),
        };
        let mut addrs = Vec::new();
        let mut temp = None;
        for h in &hosts {
            let (a, aaaa) = tokio::join!(
                tokio::time::timeout(t, self.resolver.lookup_a(h)),
                tokio::time::timeout(t, self.resolver.lookup_aaaa(h))
            );
            match a {
                Ok(Ok(v)) => addrs.extend(v.into_iter().map(IpAddr::V4)),
                Ok(Err(DnsError::NotFound)) => {}
                Ok(Err(e)) => temp = Some(format!("address of {h}: {e}")),
                Err(_) => temp = Some(format!("address of {h}: timed out")),
            }
            if let Ok(Ok(v)) = aaaa {
                addrs.extend(v.into_iter().map(IpAddr::V6));
            }
        }
        match (addrs.is_empty(), temp) {
            (false, _) => Ok(addrs),
            (true, Some(t)) => Err(NoHost::Temporary(t)),
            (true, None) => Err(NoHost::Permanent("5.1.2", format!("no mail host for {domain}"))),
        }
    }

    fn hop(&self, ip: IpAddr) -> Hop {
        Hop {
            next_hop: NextHop::Smtp {
                host: ip.to_string(),
                port: self.cfg.mx_port,
            },
            tls: HopTls::Opportunistic,
            ca_file: self.cfg.ca_file.clone(),
            forward_client: ForwardClient::None,
        }
    }

    /// One domain's recipients: each MX address in turn until one answers.
    async fn deliver_domain(&self, domain: &str, env: &Envelope, idx: &[usize], body: &[u8]) -> Vec<RcptStatus> {
        let addrs = match self.addresses(domain).await {
            Ok(a) => a,
            Err(NoHost::Temporary(why)) => {
                return idx
                    .iter()
                    .map(|_| RcptStatus::Temporary(local(451, format!("4.4.3 {why}"))))
                    .collect();
            }
            Err(NoHost::Permanent(code, why)) => {
                return idx
                    .iter()
                    .map(|_| RcptStatus::Permanent(local(550, format!("{code} {why}"))))
                    .collect();
            }
        };
        let mut last = Vec::new();
        for ip in addrs.into_iter().take(5) {
            let t = NextHopTransport::for_hop(self.cfg.clone(), self.hop(ip));
            match t.attempt(env, idx, body).await {
                Ok(st) => return st,
                Err(e) => last = super::all_temporary(idx, &e),
            }
        }
        last
    }
}

impl Transport for MxTransport {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let mut out: Vec<Option<RcptStatus>> = vec![None; idx.len()];
            let mut domains: Vec<&str> = idx.iter().map(|&i| env.rcpts[i].addr.domain.as_str()).collect();
            domains.sort_unstable();
            domains.dedup();
            for d in domains {
                let (pos, rcpts): (Vec<usize>, Vec<usize>) = idx
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| env.rcpts[**i].addr.domain == d)
                    .map(|(p, i)| (p, *i))
                    .unzip();
                let st = self.deliver_domain(d, env, &rcpts, body).await;
                self.state.lock().unwrap_or_else(|p| p.into_inner()).record(&st);
                for (p, s) in pos.into_iter().zip(st) {
                    let result = match &s {
                        RcptStatus::Delivered(_) => "delivered",
                        RcptStatus::Temporary(_) => "deferred",
                        RcptStatus::Permanent(_) => "bounced",
                    };
                    self.metrics.with_label_values(&["mx", result]).inc();
                    out[p] = Some(s);
                }
            }
            out.into_iter()
                .map(|s| s.unwrap_or_else(|| RcptStatus::Temporary(local(451, "4.3.0 no status"))))
                .collect()
        })
    }
}

/// The router in use, replaced whole when the configuration is reloaded
/// (next hops and routes): an attempt keeps the router it started with;
/// the replaced one's idle connections are closed.
pub struct Routes(crate::swap::Swap<Router>);

impl Routes {
    pub fn new(router: Router) -> Self {
        Routes(crate::swap::Swap::new(Arc::new(router)))
    }

    pub fn current(&self) -> Arc<Router> {
        self.0.load()
    }

    /// What the next hops tell when one is reached again; build the
    /// replacement router with it ([`Router::from_config_signalling`]).
    pub fn signal(&self) -> Arc<tokio::sync::Notify> {
        self.current().recovered.clone()
    }

    /// Puts `router` in place; the old one's idle connections get QUIT.
    pub async fn replace(&self, router: Router) {
        let old = self.0.store(Arc::new(router));
        old.close_idle().await;
    }

    pub async fn close_idle(&self) {
        self.current().close_idle().await;
    }
}

impl Transport for Routes {
    /// The routers' shared signal (each router a reload builds is made
    /// with it: [`Routes::signal`]).
    fn recovered(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.signal())
    }

    fn health(&self, within: std::time::Duration) -> super::HealthFuture<'_> {
        Box::pin(async move { self.current().health(within).await })
    }

    fn retry_now(&self) {
        self.current().retry_now();
    }

    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a> {
        Box::pin(async move { self.current().deliver(env, idx, body).await })
    }
}
