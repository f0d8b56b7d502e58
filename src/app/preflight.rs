//! Everything a configuration names on disk, loaded once: the STARTTLS
//! certificate, the recipient table, the CA files of next hops with
//! `tls = "required"`, the spam rules and model. `serve` and
//! `check-config` both call [`preflight`], so a file that would fail at
//! start fails the check the same way (exit 64, naming the key).

use std::sync::Arc;

use crate::config::{Config, ConfigError, HopTls};
use crate::delivery::tls::HopTlsConfig;
use crate::policy::recipients::Directory;
use crate::spam::filter::SpamFilter;
use crate::tls::TlsSource;

/// What [`preflight`] loaded, handed to `start`.
pub struct Preflight {
    pub tls: Option<Arc<TlsSource>>,
    pub recipients: Arc<Directory>,
    /// Rules and model, without SPF/DKIM/DMARC (`start` adds them).
    pub spam: Option<SpamFilter>,
}

/// Loads the files `config` names; the first that fails is the error.
pub fn preflight(config: &Config) -> Result<Preflight, ConfigError> {
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(TlsSource::new(t.clone())?)),
        None => None,
    };
    let recipients =
        Arc::new(Directory::new(&config.recipients).map_err(|e| ConfigError::new("recipients.table", e.to_string()))?);
    let r = &config.relay;
    let mut hops = vec![("relay.tls_ca_file".to_string(), r.default_hop())];
    for route in &r.routes {
        hops.push((
            format!("relay.routes.\"{}\".tls_ca_file", route.domains),
            route.hop.clone(),
        ));
    }
    if let Some(b) = &r.bounce_next_hop {
        hops.push(("relay.tls_ca_file".into(), b.clone()));
    }
    for (key, hop) in hops.iter().filter(|(_, h)| h.tls == HopTls::Required) {
        HopTlsConfig::new(hop).map_err(|e| ConfigError::new(key.as_str(), e))?;
    }
    let spam = match &config.spam {
        Some(cfg) => Some(SpamFilter::new(cfg.clone(), None).map_err(|e| ConfigError::new("spam", e.to_string()))?),
        None => None,
    };
    Ok(Preflight { tls, recipients, spam })
}
