//! The router's TLS material: one certificate (signed by the router CA)
//! serves users, tunnels and peers; the CA is what sidecars pin and what
//! replicas verify each other with when forwarding.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

/// Why the TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block is missing or malformed.
    #[error("{what}: {reason}")]
    Pem {
        /// Which file or field.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// PEM certificate chain, key and CA (as mounted from a
/// `kubernetes.io/tls` Secret with a `ca.crt`).
#[derive(Clone)]
pub struct RouterTls {
    /// The serving certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// The router CA.
    pub ca_pem: String,
}

/// The router CA: its certificate (public: pinned by sidecars) and key
/// (kept in a Secret only the operator reads).
#[derive(Clone)]
pub struct RouterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for RouterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCa").finish_non_exhaustive()
    }
}

/// The CA's parameters. Issuing needs only its name and key: leaf
/// certificates name the issuer by this exact distinguished name.
fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hatchway router CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl RouterCa {
    /// A fresh CA (valid for rcgen's default span).
    pub fn generate() -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params()?, key)?;
        Ok(Self {
            cert_pem: ca.pem(),
            key_pem: ca.key().serialize_pem(),
        })
    }
}

impl std::fmt::Debug for RouterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterTls")
            .field("fingerprint", &self.fingerprint().unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl RouterTls {
    /// A fresh CA and a serving certificate it signs for `names` (DNS names
    /// or IP addresses).
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let ca = RouterCa::generate()?;
        Self::issue(&ca, names)
    }

    /// A serving certificate for `names`, signed by `ca`. Every replica
    /// issues its own at start (its pod IP differs); all chain to the one
    /// CA that sidecars pin and peers trust.
    pub fn issue(ca: &RouterCa, names: &[String]) -> Result<Self, TlsError> {
        let issuer = rcgen::Issuer::new(ca_params()?, rcgen::KeyPair::from_pem(&ca.key_pem)?);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hatchway router");
        // A year (rcgen's default is the year 4096: a key that leaked
        // would be good forever), from an hour back for clocks a little
        // behind. Every replica issues its own at start; one that never
        // restarts shows its expiry in
        // `hatchway_router_certificate_expiry_timestamp_seconds`, which the
        // chart's alert watches.
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: ca.cert_pem.clone(),
        })
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                reason: "no PEM certificate found".into(),
            });
        }
        Ok(chain)
    }

    /// Unix time the leaf certificate's validity ends (`notAfter`).
    pub fn not_after(&self) -> Result<i64, TlsError> {
        let leaf = self.chain()?.remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| TlsError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
        Ok(cert.validity().not_after.timestamp())
    }

    /// Lowercase hex SHA-256 of the leaf certificate (what the router logs
    /// so users can check what they connect to).
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        Ok(hatchway_api::proof::certificate_sha256(&self.chain()?[0]))
    }

    /// The server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_with(Arc::new(rustls::server::NoClientAuth))
    }

    /// The aggregated port's server configuration: as [`Self::server_config`],
    /// asking every client for a certificate that `clients` verifies (the
    /// API server's front proxy; a client without one may still connect,
    /// and is refused per request with a sentence rather than a failed
    /// handshake).
    pub fn server_config_verifying(
        &self,
        clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_with(clients)
    }

    fn server_config_with(
        &self,
        clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        let mut config = ServerConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_single_cert(self.chain()?, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), hatchway_api::tls::ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// The client configuration for forwarding to a peer replica: trusts
    /// only the router CA; HTTP/1.1 (forwarded requests may upgrade).
    pub fn peer_client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let config =
            hatchway_api::tls::client_trusting(self.ca_pem.as_bytes()).map_err(|e| TlsError::Pem {
                what: "CA",
                reason: e.to_string(),
            })?;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_builds_both_configurations() {
        let tls = RouterTls::generate(&["hatchway-router".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(tls.server_config().unwrap().alpn_protocols[0], b"h2");
        tls.peer_client_config().unwrap();
        assert_eq!(tls.fingerprint().unwrap().len(), 64);
        // Valid for a while from now, and not forever.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let left = tls.not_after().unwrap() - now;
        assert!(left > 364 * 86_400 && left <= 365 * 86_400, "{left} s");
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn certificates_issued_later_by_a_stored_ca_verify_against_it() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::ServerName;
        let ca = RouterCa::generate().unwrap();
        // Stored and read back (as the operator does with its Secret).
        let stored = RouterCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        let a = RouterTls::issue(&stored, &["hatchway-router".into(), "10.0.0.1".into()]).unwrap();
        let b = RouterTls::issue(&stored, &["hatchway-router".into()]).unwrap();
        let leaf = a.chain().unwrap().remove(0);
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(b.ca_pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                Arc::new(roots)
            },
            hatchway_api::tls::provider(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("hatchway-router").unwrap(),
                &[],
                now,
            )
            .expect("a certificate issued by the stored CA verifies against it");
        assert!(!format!("{stored:?}").contains("PRIVATE"));
    }

    #[test]
    fn garbage_is_refused_with_the_part_named() {
        let mut tls = RouterTls::generate(&["x".into()]).unwrap();
        tls.ca_pem = "nothing".into();
        let err = tls.peer_client_config().unwrap_err().to_string();
        assert!(err.starts_with("CA:"), "{err}");
        tls.cert_chain_pem = String::new();
        assert!(
            tls.server_config()
                .unwrap_err()
                .to_string()
                .starts_with("certificate:")
        );
    }
}
