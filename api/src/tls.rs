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
