//! Sessions that survive: the built `kubectl-hatch` (as ssh's
//! ProxyCommand, and as `port-forward`) keeps a shell and a held
//! connection going while the router is stopped and started again, with
//! every byte delivered once and in order.

mod rig;

use std::time::Duration;

use hatchway_testkit::line_echo_server;
use rig::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_command_outlives_two_router_restarts_line_for_line() {
    let mut rig = rig().await;
    let stdout = rig.dir.path().join("shell.out");
    let stderr = rig.dir.path().join("shell.err");
    let mut hatch = rig.hatch();
    hatch
        .args(["shell", "job"])
        .args(rig.connection("alice-token"))
        .args([
            "--",
            "for i in $(seq 1 80); do echo line $i; sleep 0.05; done; exit 3",
        ])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = hatch.spawn().unwrap();
    for (restart, after) in [(1, "line 10\n"), (2, "line 40\n")] {
        wait_for_text(&stdout, after).await;
        rig.restart_router(async {
            wait_for_count(&stderr, "hatchway: connection lost, resuming…", restart).await;
        })
        .await;
        wait_for_count(&stderr, "hatchway: resumed after ", restart).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the shell ends")
        .unwrap();
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    let expected: String = (1..=80).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, expected, "every line once, in order; stderr: {err}");
    assert_eq!(status.code(), Some(3), "the command's exit code; stderr: {err}");
    // Said once per outage, and only on stderr.
    assert_eq!(err.matches("connection lost").count(), 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_port_forward_connection_outlives_two_router_restarts() {
    let mut rig = rig().await;
    let port = line_echo_server().await;
    let (mut child, local, stderr) = rig.port_forward(port).await;

    let conn = tokio::net::TcpStream::connect(local).await.unwrap();
    let (r, mut w) = conn.into_split();
    let mut lines = tokio::io::BufReader::new(r).lines();
    let mut restarts = 0;
    for i in 0..300 {
        w.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        if i == 100 || i == 200 {
            // Sent, not yet echoed: the bytes in flight must arrive once.
            restarts += 1;
            rig.restart_router(async {
                wait_for_count(&stderr, "hatchway: connection lost, resuming…", restarts).await;
            })
            .await;
        }
        let line = next_line(&mut lines).await.expect("the connection stays open");
        assert_eq!(line, format!("line {i}"));
    }
    wait_for_count(&stderr, "hatchway: resumed after ", 2).await;
    drop(w);
    assert_eq!(next_line(&mut lines).await, None, "the end comes through too");
    assert!(child.try_wait().unwrap().is_none(), "port-forward still runs");
    let _ = child.kill().await;
}
