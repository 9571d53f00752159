//! First start: the root secret and the router CA are created once in the
//! operator's namespace, read back unchanged by every later replica (also
//! when two race to create them), and refused when too short; a serving
//! certificate issued from the stored CA verifies against it.

mod common;

use std::sync::Arc;

use anyhow::{Result, ensure};
use common::{client, runtime};
use hatchway_e2e::TestNamespace;
use hatchway_operator::bootstrap;
use hatchway_operator::router::tls::RouterTls;

#[test]
fn the_root_secret_and_router_ca_are_created_once_and_reused() -> Result<()> {
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("boot")?;
    let name = ns.name.clone();

    rt.block_on(async {
        // Two replicas starting together: one creates, the other reads it.
        let (a, b) = tokio::join!(
            bootstrap::root_secret(client.clone(), &name, "hatchway-root"),
            bootstrap::root_secret(client.clone(), &name, "hatchway-root"),
        );
        let (a, b) = (a?, b?);
        let (ca1, ca2) = tokio::join!(
            bootstrap::router_ca(client.clone(), &name, "hatchway-router-ca"),
            bootstrap::router_ca(client.clone(), &name, "hatchway-router-ca"),
        );
        let (ca1, ca2) = (ca1?, ca2?);
        // Same secret: the keys they derive agree.
        ensure!(
            a.ctr_key("uid-1").expose_hex() == b.ctr_key("uid-1").expose_hex(),
            "two replicas hold different root secrets"
        );
        ensure!(ca1.cert_pem == ca2.cert_pem, "two replicas hold different CAs");
        // A later start reads the same again.
        let again = bootstrap::root_secret(client.clone(), &name, "hatchway-root").await?;
        ensure!(again.ctr_key("uid-1").expose_hex() == a.ctr_key("uid-1").expose_hex());

        // A certificate issued from the stored CA is trusted by a client
        // that pins that CA (as sidecars and peers do).
        let tls = RouterTls::issue(&ca1, &["hatchway-router".into()])?;
        let server = tls.server_config()?;
        let client_config = tls.peer_client_config()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            tokio_rustls::TlsAcceptor::from(server).accept(tcp).await?;
            anyhow::Ok(())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::clone(&client_config))
            .connect(rustls::pki_types::ServerName::try_from("hatchway-router")?, tcp)
            .await?;
        accept.await??;
        anyhow::Ok(())
    })?;

    // A root secret someone wrote too short is refused, not used.
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "short-root",
        "--from-literal=root-secret=tooshort",
    ])?;
    let err = rt
        .block_on(bootstrap::root_secret(client, &name, "short-root"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("holds 8 bytes; at least 32 are needed"),
        "a short root secret was accepted or refused unclearly: {err:?}"
    );
    ns.passed();
    Ok(())
}
