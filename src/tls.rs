//! STARTTLS server configuration (rustls, ring provider), reloaded when the
//! certificate or key file changes on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, Tls};

/// Builds a rustls server config from the PEM files in `tls`.
pub fn load_server_config(tls: &Tls) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new("tls.cert", format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "tls.cert",
            format!("{}: no certificate found", tls.cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ConfigError::new("tls.key", format!("{}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::new("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new("tls.key", format!("does not match tls.cert: {e}")))?;
    Ok(Arc::new(cfg))
}

/// Modification times of the certificate and key files.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn mtimes(tls: &Tls) -> Stamp {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&tls.cert), m(&tls.key))
}

/// The current TLS config; checks the files' modification times on each
/// STARTTLS (two `stat` calls) and rebuilds when they changed, so a renewed
/// certificate is used without a restart.
pub struct TlsSource {
    paths: Tls,
    /// A std mutex: held only to compare timestamps and swap an `Arc`,
    /// never across an await.
    current: Mutex<(Arc<ServerConfig>, Stamp)>,
}

impl TlsSource {
    pub fn new(paths: Tls) -> Result<Self, ConfigError> {
        let cfg = load_server_config(&paths)?;
        let stamp = mtimes(&paths);
        Ok(Self {
            paths,
            current: Mutex::new((cfg, stamp)),
        })
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        let stamp = mtimes(&self.paths);
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.1 != stamp {
            match load_server_config(&self.paths) {
                Ok(cfg) => {
                    tracing::info!(cert = %self.paths.cert.display(), "TLS certificate reloaded");
                    *cur = (cfg, stamp);
                }
                // Half-written files during renewal: keep the old config,
                // try again on the next STARTTLS.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificate")
                }
            }
        }
        cur.0.clone()
    }
}
