//! The gateway's self-signed certificate, fresh at every start.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh self-signed certificate and the TLS configuration serving it.
pub struct GatewayCert {
    /// The certificate DER: what the router's proof is computed over.
    pub der: CertificateDer<'static>,
    /// Lowercase hex SHA-256 of `der`, reported as the gateway's fingerprint.
    pub sha256: String,
    /// TLS 1.3 only, ALPN http/1.1.
    pub server_config: Arc<ServerConfig>,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to generate or sign.
    #[error("generating the gateway certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl GatewayCert {
    /// Generates an ECDSA P-256 certificate for `name` (informational: the
    /// router authenticates the certificate by proof, not by name).
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
        let der = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)?;
        config.alpn_protocols = vec![hatchway_api::tls::ALPN_HTTP1.to_vec()];
        Ok(Self {
            sha256: hatchway_api::proof::certificate_sha256(&der),
            der,
            server_config: Arc::new(config),
        })
    }
}
