//! The tunnel proof is bound to one TLS session and one container: real
//! rustls sessions (in memory) export the keying material on both ends.

use std::sync::Arc;

use hatchway_api::proof::ctr_key;
use hatchway_api::tunnel::{
    EKM_LABEL, EKM_LEN, stream_proof, tunnel_proof, verify_stream_proof, verify_tunnel_proof,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const UID_A: &str = "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90";
const UID_B: &str = "0d4f3b21-8c6a-4e1f-a2b7-5e9c0f1d2a33";

struct Session {
    client: ClientConnection,
    server: ServerConnection,
}

impl Session {
    /// A real TLS 1.3 handshake between a client and a server, shuttled
    /// through memory.
    fn establish() -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = rcgen::generate_simple_self_signed(vec!["router.test".to_owned()]).unwrap();
        let cert_der = certified.cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));

        let server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert_der).unwrap();
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut client = ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("router.test").unwrap(),
        )
        .unwrap();
        let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(
            !client.is_handshaking() && !server.is_handshaking(),
            "handshake did not finish"
        );
        Session { client, server }
    }

    fn client_ekm(&self) -> [u8; EKM_LEN] {
        self.client
            .export_keying_material([0; EKM_LEN], EKM_LABEL, None)
            .unwrap()
    }

    fn server_ekm(&self) -> [u8; EKM_LEN] {
        self.server
            .export_keying_material([0; EKM_LEN], EKM_LABEL, None)
            .unwrap()
    }
}

#[test]
fn a_proof_verifies_at_the_other_end_of_its_own_session() {
    let key = ctr_key(b"root secret", UID_A);
    let session = Session::establish();
    let proof = tunnel_proof(&key, &session.client_ekm());
    assert!(verify_tunnel_proof(&key, &session.server_ekm(), &proof));
}

#[test]
fn a_proof_from_one_session_never_verifies_in_another() {
    let key = ctr_key(b"root secret", UID_A);
    let first = Session::establish();
    let second = Session::establish();
    let captured = tunnel_proof(&key, &first.client_ekm());
    assert!(!verify_tunnel_proof(&key, &second.server_ekm(), &captured));
}

#[test]
fn a_proof_for_one_container_never_verifies_for_another() {
    let key_a = ctr_key(b"root secret", UID_A);
    let key_b = ctr_key(b"root secret", UID_B);
    let session = Session::establish();
    let proof_a = tunnel_proof(&key_a, &session.client_ekm());
    // A's proof presented as container B: the router checks it with B's
    // key, over the same session's keying material, and refuses it.
    assert!(!verify_tunnel_proof(&key_b, &session.server_ekm(), &proof_a));
    // B's own proof in the same session verifies, so the refusal above is
    // the key, not the session.
    let proof_b = tunnel_proof(&key_b, &session.client_ekm());
    assert!(verify_tunnel_proof(&key_b, &session.server_ekm(), &proof_b));
    assert_ne!(proof_a, proof_b);
}

#[test]
fn a_stream_proof_is_bound_to_its_tunnel_session_and_container() {
    let key_a = ctr_key(b"root secret", UID_A);
    let key_b = ctr_key(b"root secret", UID_B);
    let first = Session::establish();
    let second = Session::establish();
    // The router computes it from its end, the sidecar expects it from its
    // end of the same tunnel: equal.
    let sent = stream_proof(&key_a, &first.server_ekm());
    assert!(verify_stream_proof(
        &stream_proof(&key_a, &first.client_ekm()),
        &sent
    ));
    // Not on another tunnel of the same container, not for another
    // container on the same tunnel.
    assert!(!verify_stream_proof(
        &stream_proof(&key_a, &second.client_ekm()),
        &sent
    ));
    assert!(!verify_stream_proof(
        &stream_proof(&key_b, &first.client_ekm()),
        &sent
    ));
    // Not the sidecar's own tunnel proof over the same keying material
    // (which the router saw), and not the direct path's proof.
    assert_ne!(sent, tunnel_proof(&key_a, &first.client_ekm()));
    let direct = hatchway_api::proof::request_auth(&key_a, b"a gateway certificate");
    assert!(!verify_stream_proof(
        &stream_proof(&key_a, &first.client_ekm()),
        &direct
    ));
}
