//! Sessions that survive: the built `kubectl-hatch` (as ssh's
//! ProxyCommand, and as `port-forward`) keeps a shell and a held
//! connection going while the router is stopped and started again, with
//! every byte delivered once and in order.

mod rig;

use std::path::PathBuf;
use std::time::Duration;

use hatchway_testkit::{eventually, line_echo_server};
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

fn pty_shell(rig: &Rig, name: &str, resume: &[&str]) -> (tokio::process::Child, PathBuf, PathBuf) {
    rig.pty_shell("alice-token", name, resume)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_whose_client_was_killed_is_taken_over_with_resume() {
    let rig = rig().await;
    let gateway = rig.sidecar.running.gateway.clone();
    let (mut first, first_out, _) = pty_shell(&rig, "first", &[]);
    let mut stdin = first.stdin.take().unwrap();
    // Ticks go on while nobody watches; `ready` marks the loop started.
    stdin
        .write_all(b"echo rea''dy; for i in $(seq 1 60); do echo tick-$i; sleep 0.05; done; echo do''ne\n")
        .await
        .unwrap();
    wait_for_text(&first_out, "ready\r\n").await;
    let old = gateway.resumable.list(None);
    assert_eq!(old.len(), 1, "one resumable session: {old:?}");
    let old = old[0].id.clone();

    // The laptop's lid closes: the CLI, ssh and the ProxyCommand die at once.
    let pid = first.id().unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("the CLI's process group is killed");
    tokio::time::timeout(Duration::from_secs(20), first.wait())
        .await
        .expect("the killed CLI is reaped")
        .unwrap();
    let seen = std::fs::read_to_string(&first_out).unwrap();
    assert!(!seen.contains("done\r\n"), "killed before the loop ended: {seen}");

    // Another user cannot take it, even naming it (403 from the gateway).
    rig.auth
        .grant("bob", NS, hatchway_operator::router::auth::Permission::SHELL);
    let mut bob = rig.hatch();
    bob.args(["connect-ssh", "job", &format!("--resume={old}")])
        .args(rig.connection("bob-token"));
    let refused = tokio::time::timeout(Duration::from_secs(30), bob.output())
        .await
        .unwrap()
        .unwrap();
    let said = text(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("403") && said.contains("not one of your SSH sessions"),
        "{said}"
    );

    // `sessions` shows it detached, to alice only.
    let sessions = |token: &'static str| {
        let mut hatch = rig.hatch();
        hatch.args(["sessions", "job"]).args(rig.connection(token));
        hatch
    };
    // Detached once the router saw the connection end.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = sessions("alice-token").output().await.unwrap();
        let listed = text(&out.stdout);
        let row: Vec<&str> = listed.lines().nth(1).unwrap_or("").split_whitespace().collect();
        if let [id, "shell", _started, detached, "shell"] = row[..]
            && id == old
            && detached != "-"
        {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not listed as detached: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed.starts_with("ID "), "{listed}");
    let out = sessions("bob-token").output().await.unwrap();
    let listed = text(&out.stdout);
    assert!(
        listed.starts_with("No resumable sessions of yours in job.\n"),
        "{listed}"
    );

    // Alice resumes it: the pty is back with what it wrote meanwhile.
    let (mut second, second_out, second_err) = pty_shell(&rig, "second", &["--resume"]);
    let mut stdin = second.stdin.take().unwrap();
    let screen = wait_for_text(&second_out, "done\r\n").await;
    let ticks: Vec<usize> = screen
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("tick-")?.parse().ok())
        .collect();
    assert_eq!(
        ticks,
        (1..=60).collect::<Vec<_>>(),
        "every tick once, in order: {screen}"
    );
    // Still the same shell, and it takes input.
    stdin.write_all(b"exit 7\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .expect("the shell ends")
        .unwrap();
    let err = std::fs::read_to_string(&second_err).unwrap();
    assert_eq!(status.code(), Some(7), "the shell's exit code; stderr: {err}");
    // The earlier session ended when its pty was taken over.
    eventually("the earlier session ends", || {
        let gone = gateway.resumable.owner(&old).is_none();
        async move { gone }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_a_session_is_a_clear_refusal() {
    let rig = rig().await;
    let mut hatch = rig.hatch();
    hatch
        .args(["connect-ssh", "job", "--resume"])
        .args(rig.connection("alice-token"));
    let out = tokio::time::timeout(Duration::from_secs(30), hatch.output())
        .await
        .unwrap()
        .unwrap();
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("404") && said.contains("has no shell in this container to resume"),
        "{said}"
    );
    let mut hatch = rig.hatch();
    hatch
        .args(["connect-ssh", "job", "--resume=0123456789abcdef"])
        .args(rig.connection("alice-token"));
    let out = hatch.output().await.unwrap();
    let said = text(&out.stderr);
    assert!(said.contains("410") && said.contains("not known"), "{said}");
    // `shell --resume` says so before running ssh.
    let mut hatch = rig.hatch();
    hatch
        .args(["shell", "job", "--resume"])
        .args(rig.connection("alice-token"));
    let out = hatch.output().await.unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no shell of yours in job to resume"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_ssh_leaves_no_session_behind() {
    // ssh hangs its ProxyCommand up as it exits; the session must still
    // end then, not wait out the grace time as a detached one.
    let rig = rig().await;
    for _ in 0..3 {
        let out = rig.shell("alice-token", "echo hi").await;
        assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    }
    let gateway = rig.sidecar.running.gateway.clone();
    eventually("every session ended", || {
        let left = gateway.resumable.list(None).len();
        async move { left == 0 }
    })
    .await;
}
