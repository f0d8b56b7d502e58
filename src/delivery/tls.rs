//! STARTTLS towards a next hop (rustls, ring provider): a verifying client
//! config for `tls = "required"`, and one that takes any certificate for
//! `tls = "opportunistic"` (encryption against passive listeners only, as
//! Postfix's `may`).

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::{Hop, HopTls};

/// The CA certificates of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in iter {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        // Skip certificates rustls cannot use rather than fail the file.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no usable CA certificate in it", path.display()));
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a connection to one hop does about STARTTLS.
#[derive(Clone)]
pub struct HopTlsConfig {
    pub mode: HopTls,
    config: Option<Arc<ClientConfig>>,
}

impl HopTlsConfig {
    /// Builds the rustls config `hop` needs (reads its CA file when
    /// `required`).
    pub fn new(hop: &Hop) -> Result<Self, String> {
        let config = match hop.tls {
            HopTls::None => None,
            HopTls::Opportunistic => {
                let p = provider();
                let cfg = ClientConfig::builder_with_provider(p.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(p)))
                    .with_no_client_auth();
                Some(Arc::new(cfg))
            }
            HopTls::Required => {
                let roots = load_roots(&hop.ca_file)?;
                let cfg = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(cfg))
            }
        };
        Ok(Self { mode: hop.tls, config })
    }

    /// No STARTTLS (call-ahead fallbacks, tests).
    pub fn plain() -> Self {
        Self {
            mode: HopTls::None,
            config: None,
        }
    }

    pub fn connector(&self) -> Option<tokio_rustls::TlsConnector> {
        self.config.clone().map(tokio_rustls::TlsConnector::from)
    }
}

/// The server name to present and verify: the next hop's host (a DNS
/// name, or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(|e| format!("{host:?}: {e}"))
}

/// Takes any certificate, but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
