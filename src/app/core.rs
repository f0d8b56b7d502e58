//! What every subsystem is built with: the configuration, the metrics
//! registry and the event bus, the shutdown token, and the task trackers.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::events::EventBus;
use crate::metrics::Metrics;

#[derive(Clone)]
pub(super) struct Core {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub events: EventBus,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// What [`Core::spawn`]ed tasks stop on: the shutdown for the parts
    /// built once, a generation's own token for the parts a reload
    /// replaces (cancelled when the next generation takes over).
    pub scope: CancellationToken,
    /// Background work (queue, scanners, firewall, listeners of status).
    pub background: TaskTracker,
    /// Listeners and the sessions they spawn.
    pub sessions: TaskTracker,
    /// Per-client state: rates, sessions, greylisting, call-ahead answers.
    pub state: Arc<dyn crate::state::StateStore>,
    /// The resolver's health, fed by the lists' and HELO checks' queries.
    pub dns_health: Arc<crate::dns::Health>,
    /// The event log: stopped last, after sessions and deliveries, so
    /// every event emitted before exit is written.
    pub log_stop: CancellationToken,
    pub log_task: TaskTracker,
    /// Memory for whole bodies (`server.check_memory`): the end-of-DATA
    /// checks and delivery share it.
    pub body_budget: crate::spool::incoming::BodyBudget,
}

impl Core {
    /// The registry (counting off when `[metrics]` is off), the bus, and
    /// the event log writer.
    pub fn new(config: Config) -> Core {
        let config = Arc::new(config);
        let metrics = Arc::new(match config.metrics {
            Some(_) => Metrics::new(),
            None => Metrics::disabled(),
        });
        let events = EventBus::with_metrics(64 * 1024, metrics.clone());
        let bus = events.clone();
        let dns_health = Arc::new(crate::dns::Health::new(config.dns.health).observed(
            metrics.clone(),
            Box::new(move |t| {
                bus.emit(crate::events::Event::ResolverHealth {
                    failing: t.failing,
                    ratio: t.ratio,
                    queries: t.queries,
                })
            }),
        ));
        let shutdown = CancellationToken::new();
        // `[cluster]`: the state shared in Valkey/Redis, its heartbeat
        // spawned below; else this process's memory.
        let shared = config
            .cluster
            .as_ref()
            .map(|c| Arc::new(crate::state::redis::store(c, metrics.clone())));
        let state: Arc<dyn crate::state::StateStore> = match &shared {
            Some(s) => s.clone(),
            None => Arc::new(crate::state::MemoryStore::default()),
        };
        let core = Core {
            scope: shutdown.clone(),
            shutdown,
            events,
            dns_health,
            body_budget: crate::spool::incoming::BodyBudget::new(config.server.check_memory),
            log_stop: CancellationToken::new(),
            log_task: TaskTracker::new(),
            metrics,
            background: TaskTracker::new(),
            sessions: TaskTracker::new(),
            state,
            config,
        };
        if let Some(s) = shared {
            core.spawn(move |stop| s.run(stop));
        }
        core.log_task.spawn(crate::events::log::run(
            core.events.clone(),
            core.config.log.events.clone(),
            core.log_stop.clone(),
        ));
        core.log_task.close();
        core
    }

    /// Runs `task` in the background until shutdown, or until its
    /// generation is replaced (it gets its own token).
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.scope.child_token()));
    }

    /// The same core for the parts built from `config` that a reload
    /// replaces: their tasks stop on the returned core's `scope`.
    pub fn generation(&self, config: Arc<Config>) -> Core {
        Core {
            config,
            scope: self.shutdown.child_token(),
            ..self.clone()
        }
    }

    /// One resolver (and one answer cache) for the DNS lists, the HELO
    /// checks and SPF/DKIM/DMARC, when any of them is on.
    pub fn resolver(&self) -> anyhow::Result<Option<hickory_resolver::TokioResolver>> {
        let c = &self.config;
        if !needs_dns(c) && !c.spam.as_ref().is_some_and(|s| s.auth) {
            return Ok(None);
        }
        crate::dns::tokio_resolver(c.dns.resolver, c.dns.timeout, c.dns.negative_ttl, c.dns.min_ttl)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("dns.resolver: {e}"))
    }
}

/// The pre-DATA checks need DNS (lists, FCrDNS).
pub(super) fn needs_dns(c: &Config) -> bool {
    !c.dnsbl.zones.is_empty() || !c.dnsbl.domain_zones.is_empty() || c.helo.fcrdns != crate::policy::helo::Action::Off
}
