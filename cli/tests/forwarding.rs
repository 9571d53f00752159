//! The Container's forwarding rule as users meet it: the built
//! `kubectl-hatch port-forward` against a real router and sidecar whose
//! rule allows one port.

mod rig;

use std::time::Duration;

use rig::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that echoes what each connection sends.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = conn.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_allowed_port_and_exits_2_naming_the_rule_for_another() {
    let allowed = echo_server().await;
    // Listening too: what refuses it is the rule.
    let refused = echo_server().await;
    let rule = format!("spec.portForward.ports allows {allowed}");
    let rig = rig_with(|args| {
        args.forward_ports = allowed.to_string().parse().unwrap();
        args.forward_rule = rule.clone();
    })
    .await;

    let (mut forward, local, _) = rig.port_forward(allowed).await;
    let mut conn = TcpStream::connect(local).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), conn.read_exact(&mut back))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&back, b"ping");
    drop(conn);
    forward.kill().await.unwrap();

    let (mut forward, local, stderr) = rig.port_forward(refused).await;
    // The refusal comes with the first connection; the forward ends.
    let _conn = TcpStream::connect(local).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), forward.wait())
        .await
        .expect("the forward ends")
        .unwrap();
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("port {refused} is not forwardable: {rule}")),
        "{said}"
    );
}
