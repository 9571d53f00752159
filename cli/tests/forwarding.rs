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

/// A UDP server that answers each datagram with `to PORT: ` and the
/// datagram, PORT being the sender's (so each client sees its own flow).
async fn udp_echo() -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut answer = format!("to {}: ", from.port()).into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    port
}

/// `port-forward job :PORT/udp` as alice: the child and its local address.
async fn udp_forward(rig: &Rig, port: u16) -> (tokio::process::Child, std::net::SocketAddr) {
    let stdout = rig.dir.path().join(format!("udp-{port}.out"));
    let mut hatch = rig.hatch();
    hatch
        .args(["port-forward", "job", &format!(":{port}/udp")])
        .args(rig.connection("alice-token"))
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::null());
    let child = hatch.spawn().unwrap();
    let printed = wait_for_text(&stdout, "Forwarding from").await;
    assert!(printed.contains(&format!("-> {port}/udp")), "{printed}");
    let local = printed
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {printed:?}"));
    (child, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_forward_gives_each_local_client_its_own_flow() {
    let echo = udp_echo().await;
    let rig = rig().await;
    let (_forward, local) = udp_forward(&rig, echo).await;
    // Two local clients; each gets its own answers, datagrams whole.
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut answers = Vec::new();
    for (socket, text) in [(&a, "from a"), (&b, "from b"), (&a, "again a")] {
        socket.send_to(text.as_bytes(), local).await.unwrap();
        let mut buf = [0u8; 256];
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), socket.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(from, local);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.ends_with(&format!(": {text}")), "{answer}");
        answers.push(answer);
    }
    // In the pod, a's two datagrams came from one socket, b's from another.
    let port = |answer: &str| answer.split(':').next().unwrap().to_owned();
    assert_eq!(port(&answers[0]), port(&answers[2]), "{answers:?}");
    assert_ne!(port(&answers[0]), port(&answers[1]), "{answers:?}");
}
