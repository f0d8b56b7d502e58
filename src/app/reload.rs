//! A reload that reloads (SIGHUP, `sluice reload`): the configuration file
//! is read and validated again; a file that fails changes nothing (the
//! failing key is logged and counted); otherwise every part built from
//! the configuration is built again (the pre-DATA checks and their lists,
//! limits and greylisting, the content filter and clamd endpoints, the
//! spam thresholds, rules and model, STARTTLS files, next hops and routes,
//! ban rules and allowlist, log level) and put in place. Open sessions take
//! the new settings at their next transaction; a message in progress
//! finishes with the settings it started with. Settings bound at start
//! (listen addresses, the spool, ...: `config::restart`) keep their running
//! value, and a warning names them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::core::Core;
use super::front::Lasting;
use super::pipeline::Held;
use crate::config::{Config, ConfigError};
use crate::delivery::route::Routes;
use crate::events::Event;
use crate::firewall::service::Firewall;
use crate::policy::recipients::Directory;
use crate::smtp::session::{Front, Shared};

/// What a reload did, as `sluice reload` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadResult {
    /// The new settings are in use; `restart_needed` kept their running
    /// value.
    Applied { restart_needed: Vec<String> },
    /// Nothing changed: `error` says which key failed.
    Failed { error: String },
}

/// The parts built once, which each generation is built around.
pub(super) struct Lasts {
    pub core: Core,
    pub held: Held,
    pub lasting: Lasting,
    pub firewall: Option<Arc<Firewall>>,
    pub routes: Arc<Routes>,
}

pub(super) struct Reloader {
    pub lasts: Lasts,
    pub front: Arc<Front>,
    /// The configuration file (`None`: started from a built `Config`, as
    /// tests do; a reload then re-reads only the files it names).
    pub path: Option<PathBuf>,
    /// The running generation. Held while a reload runs, so reloads do
    /// not interleave.
    pub current: tokio::sync::Mutex<Generation>,
}

/// The running generation: its configuration, the token its tasks stop
/// on, and its recipient table.
pub(super) struct Generation {
    pub config: Arc<Config>,
    pub scope: CancellationToken,
    pub recipients: Arc<Directory>,
}

impl Reloader {
    /// Reads, validates and applies the configuration file.
    pub async fn reload(&self) -> ReloadResult {
        let mut current = self.current.lock().await;
        let running = current.config.clone();
        let loaded = match &self.path {
            Some(p) => Config::load(p),
            None => Ok((*running).clone()),
        };
        let result = match loaded {
            Ok(new) => match self.apply(&current, new).await {
                Ok((next, restart_needed)) => {
                    let old = std::mem::replace(&mut *current, next);
                    // The old generation's watchers and probes stop; its
                    // sessions finish with the objects they hold.
                    old.scope.cancel();
                    Ok(restart_needed)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let events = &self.lasts.core.events;
        match result {
            Ok(restart_needed) => {
                if !restart_needed.is_empty() {
                    tracing::warn!(
                        settings = ?restart_needed,
                        "configuration reloaded, but these changed settings need a restart; they keep their running value"
                    );
                }
                tracing::info!("configuration reloaded");
                events.emit(Event::ConfigReload {
                    result: "applied",
                    restart_needed: restart_needed.clone(),
                    error: None,
                });
                ReloadResult::Applied {
                    restart_needed: restart_needed.into_iter().map(String::from).collect(),
                }
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(error = %error, "configuration not reloaded; the running configuration stays");
                events.emit(Event::ConfigReload {
                    result: "failed",
                    restart_needed: Vec::new(),
                    error: Some(error.clone()),
                });
                ReloadResult::Failed { error }
            }
        }
    }

    /// Builds the new generation and puts it in place.
    async fn apply(
        &self,
        running: &Generation,
        mut new: Config,
    ) -> Result<(Generation, Vec<&'static str>), ConfigError> {
        for w in new.warnings() {
            tracing::warn!("configuration: {w}");
        }
        new.narrow(running.config.role);
        let restart_needed = crate::config::restart::carry_over(&running.config, &mut new);
        let mut pre = super::preflight(&new)?;
        // The same table settings: the running table is reloaded in place,
        // so even a transaction in progress sees it (as when the file
        // watcher reloads it).
        if format!("{:?}", running.config.recipients) == format!("{:?}", new.recipients) {
            running
                .recipients
                .reload(true)
                .map_err(|e| ConfigError::new("recipients.table", e.to_string()))?;
            pre.recipients = running.recipients.clone();
        }
        let recipients = pre.recipients.clone();
        let new = Arc::new(new);
        let next = self.lasts.core.generation(new.clone());
        let built = match resolver(&next).and_then(|dns| {
            let signal = self.lasts.routes.signal();
            let router = super::delivery::router(&next, dns.as_ref(), Some(signal))?;
            Ok((router, build(&next, &self.lasts, pre, false, dns)?))
        }) {
            Ok(b) => b,
            Err(e) => {
                next.scope.cancel();
                return Err(ConfigError::new("(reload)", format!("{e:#}")));
            }
        };
        if let Err(e) = crate::logging::set_level(&new.log.level) {
            next.scope.cancel();
            return Err(ConfigError::new("log.level", e));
        }
        if let (Some(fw), Some(cfg)) = (&self.lasts.firewall, &new.firewall) {
            fw.reconfigure(cfg.bans.clone());
        }
        let (router, built) = built;
        if let (Some(slot), Some(filter)) = (&self.lasts.held.content, &built.content) {
            slot.store(filter.clone());
        }
        self.front.store(built.shared);
        self.lasts.routes.replace(router).await;
        let scope = next.scope.clone();
        Ok((
            Generation {
                config: new,
                scope,
                recipients,
            },
            restart_needed,
        ))
    }
}

/// One generation: everything built from the configuration that a reload
/// replaces.
pub(super) struct Built {
    pub shared: Arc<Shared>,
    pub content: Option<Arc<crate::scan::ContentFilter>>,
}

/// A generation's resolver (one answer cache for the lists, HELO checks,
/// SPF/DKIM/DMARC and MX lookups), probed while it is troubled.
pub(super) fn resolver(next: &Core) -> anyhow::Result<Option<hickory_resolver::TokioResolver>> {
    let dns = next.resolver()?;
    if let Some(inner) = &dns {
        let probe = crate::dns::HickoryResolver::from_resolver(inner.clone()).with_health(next.dns_health.clone());
        next.spawn(move |stop| crate::dns::probe_while_troubled(probe, stop));
    }
    Ok(dns)
}

/// Builds a generation on `next` (its tasks stop on `next.scope`) over its
/// resolver `dns`: the content filter, the spam filter, the checks, the
/// connection filters. `first`: the generation built at start (it loads
/// the greylist state).
pub(super) fn build(
    next: &Core,
    lasts: &Lasts,
    pre: super::Preflight,
    first: bool,
    dns: Option<hickory_resolver::TokioResolver>,
) -> anyhow::Result<Built> {
    // Content checks stay on once on (the deferred scanner was built for
    // them); turning them on needs a restart.
    let content = match &lasts.held.content {
        Some(_) => super::pipeline::content(next, true),
        None => None,
    };
    let super::Preflight { tls, recipients, spam } = pre;
    let (r, every) = (recipients.clone(), next.config.recipients.reload_interval);
    next.spawn(move |stop| r.watch(every, stop));
    let spam = super::pipeline::spam_filter(next, spam, dns.clone())?;
    let pipeline = super::pipeline::pipeline(next, &lasts.held, content.clone(), spam);
    let limits = super::front::limits(next);
    let checks = super::front::checks(next, recipients, dns, limits.clone(), first)?;
    let filters = super::front::connection_filters(next, lasts.firewall.clone(), limits);
    let shared = super::front::shared(next, checks, pipeline, tls, filters, &lasts.lasting);
    Ok(Built { shared, content })
}
