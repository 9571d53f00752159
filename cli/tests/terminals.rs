//! Terminals recorded and watched: the built `kubectl-hatch` and the real
//! ssh against a real sidecar and shim. A recording replays to those who
//! may open a shell and to nobody else; a watcher sees the terminal and
//! nothing it types reaches it.

mod rig;

use std::time::Duration;

use hatchway_operator::router::auth::Permission;
use rig::*;
use tokio::io::AsyncWriteExt;

/// `sessions job` as `token`'s user, until a terminal row of `user` in
/// `state` shows: its id.
async fn terminal_of(rig: &Rig, token: &str, user: &str, state: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = rig.run(token, &["sessions", "job"]).await;
        let listed = text(&out.stdout);
        let found = listed.lines().find_map(|line| {
            let row: Vec<&str> = line.split_whitespace().collect();
            match row[..] {
                [id, u, _started, s, recorded, ..] if u == user && s == state && id.len() == 16 => {
                    Some((id.to_owned(), recorded.to_owned()))
                }
                _ => None,
            }
        });
        if let Some((id, recorded)) = found
            && (state == "live" || recorded != "-")
        {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {state} terminal of {user}: {listed}{}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ends(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the CLI ends")
        .unwrap()
}

fn trail(rig: &Rig) -> String {
    std::fs::read_to_string(rig.sidecar.audit_dir().join("gateway.txt")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_is_recorded_and_replays_only_to_those_who_may_open_a_shell() {
    let rig = rig().await;
    let (mut shell, out, _) = rig.pty_shell("alice-token", "recorded", &[]);
    let mut stdin = shell.stdin.take().unwrap();
    stdin
        .write_all(b"echo $((6*7)); printf '\\342\\202\\254uro\\n'\n")
        .await
        .unwrap();
    wait_for_text(&out, "€uro\r\n").await;
    stdin.write_all(b"exit 4\n").await.unwrap();
    assert_eq!(ends(&mut shell).await.code(), Some(4));

    let id = terminal_of(&rig, "alice-token", "alice", "ended").await;
    let played = rig
        .run(
            "alice-token",
            &["sessions", "job", "--replay", &id, "--idle-limit", "0.01"],
        )
        .await;
    let shown = text(&played.stdout);
    assert!(played.status.success(), "{}", text(&played.stderr));
    assert!(
        shown.contains("42\r\n€uro\r\n"),
        "the output as it was, UTF-8 kept: {shown:?}"
    );
    assert!(
        trail(&rig).contains(&format!("terminal {id} recorded")),
        "{}",
        trail(&rig)
    );

    // bob may read the logs but not open a shell: no recording for him.
    rig.auth.grant("bob", NS, Permission::LOG);
    let refused = rig.run("bob-token", &["sessions", "job", "--replay", &id]).await;
    let said = text(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("403") && said.contains("containers/shell"),
        "{said}"
    );
    assert_eq!(text(&refused.stdout), "");

    let missing = rig
        .run(
            "alice-token",
            &["sessions", "job", "--replay", "00000000000000ff"],
        )
        .await;
    let said = text(&missing.stderr);
    assert!(
        said.contains("404") && said.contains("00000000000000ff.cast"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_the_terminal_and_nothing_it_types_reaches_it() {
    let rig = rig().await;
    let (mut shell, alice_out, _) = rig.pty_shell("alice-token", "watched", &[]);
    let mut alice = shell.stdin.take().unwrap();
    alice.write_all(b"echo rea''dy\n").await.unwrap();
    wait_for_text(&alice_out, "ready\r\n").await;
    let id = terminal_of(&rig, "alice-token", "alice", "live").await;

    rig.auth.grant("bob", NS, Permission::SHELL);
    let (mut watch, bob_out, bob_err) = rig.pty_shell("bob-token", "watcher", &["--join", &id]);
    let mut bob = watch.stdin.take().unwrap();
    wait_for_text(
        &bob_err,
        &format!("watching terminal {id} (alice: shell), read-only"),
    )
    .await;
    // The screen so far comes first.
    wait_for_text(&bob_out, "ready\r\n").await;

    let marker = rig.dir.path().join("injected");
    bob.write_all(format!("touch {}; echo INJ''ECTED\n", marker.display()).as_bytes())
        .await
        .unwrap();
    alice.write_all(b"echo $((6*7))\n").await.unwrap();
    wait_for_text(&bob_out, "42\r\n").await;

    // The detach keys end the watch, not the shell.
    bob.write_all(&[0x1d, 0x1d]).await.unwrap();
    ends(&mut watch).await;
    let gateway = rig.sidecar.audit_dir().join("gateway.txt");
    let audit = wait_for_text(&gateway, "kind=watch bytes_in=").await;
    let ended = audit.lines().find(|l| l.contains("ended kind=watch")).unwrap();
    let bytes_in: u64 = ended
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes_in="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        bytes_in > 20,
        "bob's keys reached the gateway (and stopped there): {ended}"
    );
    assert!(ended.ends_with("exit=detached"), "{ended}");
    assert!(
        audit.contains(&format!("terminal {id} of user=\"alice\" watched user=\"bob\"")),
        "{audit}"
    );

    alice.write_all(b"exit 5\n").await.unwrap();
    assert_eq!(ends(&mut shell).await.code(), Some(5), "alice's shell ran on");
    let seen = std::fs::read_to_string(&alice_out).unwrap();
    assert!(!seen.contains("INJECTED"), "bob's input reached the pty: {seen}");
    assert!(!marker.exists(), "bob's command ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_what_is_not_running_or_without_the_right_is_refused_clearly() {
    let rig = rig().await;
    let out = rig
        .run("alice-token", &["connect-ssh", "job", "--join=00000000000000ff"])
        .await;
    let said = text(&out.stderr);
    assert!(
        said.contains("404") && said.contains("is not running in this container"),
        "{said}"
    );
    let out = rig
        .run("alice-token", &["shell", "job", "--join", "00000000000000ff"])
        .await;
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no running terminal 00000000000000ff in job"),
        "{said}"
    );
    let said = text(
        &rig.run("alice-token", &["shell", "job", "--join", "latest"])
            .await
            .stderr,
    );
    assert!(said.contains("a terminal id is 16 hex digits"), "{said}");
    // bob may not open a shell here, so he may not watch one.
    let said = text(
        &rig.run("bob-token", &["connect-ssh", "job", "--join=00000000000000ff"])
            .await
            .stderr,
    );
    assert!(
        said.contains("403") && said.contains("containers/shell"),
        "{said}"
    );
}
