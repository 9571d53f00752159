//! TLS pieces shared by the router and the sidecar.
//!
//! aws-lc-rs is the one crypto provider everywhere (russh brings it anyway).
//! Gateways present a fresh self-signed certificate; the router cannot
//! verify it against a CA, so [`SelfSignedGateway`] accepts any certificate
//! whose handshake signature verifies (the peer holds its private key), and
//! authentication happens afterwards with the HMAC proof over exactly that
//! certificate (see [`crate::proof`]). Only TLS 1.3 is offered.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// The ALPN protocol both ends speak on gateway connections.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The aws-lc-rs provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A verifier for gateway certificates: any certificate is accepted *as a
/// certificate*, but the handshake signature must verify with its key. The
/// caller must then authenticate the gateway by the HMAC proof over
/// `peer_certificates()[0]`.
#[derive(Debug)]
pub struct SelfSignedGateway {
    algorithms: WebPkiSupportedAlgorithms,
}

impl SelfSignedGateway {
    /// A verifier using the provider's signature algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SelfSignedGateway {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered; a TLS 1.2 handshake is a downgrade.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The router's client configuration for gateway connections (direct or
/// through a tunnel stream): TLS 1.3, HTTP/1.1, [`SelfSignedGateway`].
pub fn gateway_client_config() -> ClientConfig {
    let provider = provider();
    let verifier = Arc::new(SelfSignedGateway::new(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("aws-lc-rs supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    config
}

/// Why a CA bundle cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A PEM block is malformed.
    #[error("the CA is not valid PEM: {0}")]
    Pem(String),
    /// No certificate at all.
    #[error("no PEM certificate found in the CA")]
    Empty,
    /// A certificate rustls cannot use as a trust anchor.
    #[error("the CA certificate is not usable: {0}")]
    Certificate(rustls::Error),
}

/// A TLS 1.3 client configuration that trusts exactly the certificates in
/// `ca_pem` (every PEM block must parse: a damaged bundle is an error, not
/// a silently smaller one), speaking HTTP/1.1. The one way any part trusts
/// a CA: the router's peers, the sidecar's tunnel, the CLI.
pub fn client_trusting(ca_pem: &[u8]) -> Result<ClientConfig, CaError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| CaError::Pem(e.to_string()))?;
        roots.add(cert).map_err(CaError::Certificate)?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty);
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("aws-lc-rs supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    }

    #[test]
    fn a_ca_is_trusted_whole_or_refused_with_a_reason() {
        let pem = ca_pem();
        let config = client_trusting(pem.as_bytes()).unwrap();
        assert_eq!(config.alpn_protocols, [ALPN_HTTP1]);
        assert!(matches!(client_trusting(b""), Err(CaError::Empty)));
        assert!(matches!(
            client_trusting(b"not a certificate"),
            Err(CaError::Empty)
        ));
        // A good certificate followed by a damaged one: refused, not
        // trusted as the good half.
        let damaged = format!("{pem}-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        assert!(
            matches!(client_trusting(damaged.as_bytes()), Err(CaError::Pem(_))),
            "damaged"
        );
        // Parses as PEM but is no certificate.
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(client_trusting(garbage.as_bytes()).is_err());
    }
}
