//! Forwarding on the real cluster: a Container's port rule met by
//! `kubectl hatch port-forward` (the gateway refuses, the CLI exits 2 with
//! the rule's words), and listening ports in the status in both modes —
//! without tunnels (the reconciler asks the sidecar) and through tunnels
//! only (the tunnel reports) — with `port-forward NAME` offering them.

mod common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::release::*;
use hatchway_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

/// Echo on 7070 at once; on 7071 once /tmp/go exists (the "new port");
/// UDP echo on 7073.
const SCRIPT: &str = "udp-echo 7073 & nc -ll -p 7070 -e cat & while [ ! -e /tmp/go ]; do sleep 0.2; done; \
                      exec nc -ll -p 7071 -e cat";

fn listening(c: &Value) -> Vec<u64> {
    c["status"]["listeningPorts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_u64())
        .collect()
}

/// `port-forward NAME :PORT` as `user` (`PORT` may end in `/udp`): the
/// child and the local address.
fn forward(user: &User, port: &str) -> Result<(std::process::Child, std::net::SocketAddr)> {
    let out = user.dir.path().join(format!("pf-{}.out", port.replace('/', "-")));
    let mut pf = user.hatch(&["port-forward", "ports", &format!(":{port}")])?;
    pf.stdout(std::fs::File::create(&out)?).stderr(Stdio::piped());
    let child = pf.spawn()?;
    let local = wait_until("port-forward to listen", WAIT, POLL, || {
        let text = std::fs::read_to_string(&out)?;
        Ok(text.split_whitespace().nth(2).and_then(|a| a.parse().ok()))
    })?;
    Ok((child, local))
}

fn ports_in_every_mode(prefix: &str, values: &[&str]) -> Result<()> {
    let users = TestNamespace::new(prefix)?;
    let release = Release::install(prefix, &users, values)?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    let mut spec: Value = serde_json::from_str(&container("ports", SCRIPT, json!([])))?;
    spec["spec"]["portForward"] = json!({"ports": ["7070", "7073"]});
    users.apply(&spec.to_string())?;
    wait_phase(&users, "ports", "Running")?;
    alice.wait_rights("ports")?;
    wait_until("7070 in the status", WAIT, POLL, || {
        let c = get_container(&users, "ports")?;
        Ok(listening(&c).contains(&7070).then_some(()))
    })?;

    // A port opened later is in the status within 10 s.
    let out = alice.run(&["shell", "ports", "--", "touch /tmp/go"])?;
    ensure!(out.status.success(), "touch /tmp/go: {}", show(&out));
    let opened = Instant::now();
    wait_until("7071 in the status", Duration::from_secs(10), POLL, || {
        let c = get_container(&users, "ports")?;
        Ok(listening(&c).contains(&7071).then_some(()))
    })?;
    eprintln!(
        "{prefix}: a new port in the status after {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    // `port-forward NAME` offers them.
    let out = alice.run(&["port-forward", "ports"])?;
    ensure!(
        out.status.code() == Some(64)
            && String::from_utf8_lossy(&out.stderr)
                .contains("ports listens on 7070, 7071. Forward one: kubectl hatch port-forward ports 7070"),
        "port-forward without a port: {}",
        show(&out)
    );

    // The rule: 7070 relays, 7071 (listening) is refused in its words.
    let (mut pf, local) = forward(&alice, "7070")?;
    let mut conn = std::net::TcpStream::connect(local)?;
    conn.set_read_timeout(Some(WAIT))?;
    conn.write_all(b"ping\n")?;
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).context("the echo through 7070")?;
    ensure!(&back == b"ping\n", "echo: {back:?}");
    let _ = pf.kill();
    let _ = pf.wait();
    let (pf, local) = forward(&alice, "7071")?;
    let _conn = std::net::TcpStream::connect(local)?;
    let out = pf.wait_with_output()?;
    ensure!(
        out.status.code() == Some(2)
            && String::from_utf8_lossy(&out.stderr)
                .contains("port 7071 is not forwardable: spec.portForward.ports allows 7070,7073"),
        "port-forward to 7071: {}",
        show(&out)
    );
    // UDP: datagrams to the pod's echo and back, through the same route.
    let echoed = udp_round_trip(
        alice.hatch(&["port-forward", "ports", ":7073/udp"])?,
        alice.dir.path(),
        b"dig hatchway",
    )?;
    ensure!(echoed == b"dig hatchway", "the UDP echo: {echoed:?}");

    // The audit trail has the refusal and who asked.
    let out = alice.run(&["logs", "ports", "gateway.txt"])?;
    ensure!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("forward refused (port 7071")
                && l.contains(&format!("user=\"system:serviceaccount:{}:alice\"", users.name))),
        "gateway.txt: {}",
        show(&out)
    );
    eprintln!("{prefix}: 7070 forwarded, 7071 refused by spec.portForward.ports (exit 2)");
    users.passed();
    release.ns.passed();
    Ok(())
}

#[test]
fn without_tunnels_ports_show_and_the_rule_holds() -> Result<()> {
    ports_in_every_mode("fwd-direct", &["--set", "router.tunnels=false"])
}

#[test]
fn with_tunnels_only_ports_show_and_the_rule_holds() -> Result<()> {
    ports_in_every_mode("fwd-tun", &["--set", "router.directAccess=false"])
}
