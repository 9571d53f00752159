//! The built `kubectl-hatch` against an in-process router and a real
//! sidecar (with its shim), driving the real OpenSSH `ssh` and `scp`.

use hatchway_testkit as support;

mod rig;

use std::path::{Path, PathBuf};

use rig::*;
use sha2::{Digest, Sha256};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_a_remote_command_and_exits_with_its_code() {
    let rig = rig().await;
    let output = rig.shell("alice-token", "echo hi; exit 7").await;
    assert_eq!(
        text(&output.stdout).trim(),
        "hi",
        "stderr: {}",
        text(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(7), "stderr: {}", text(&output.stderr));
    // The host key is recorded under the Container's alias.
    let known = std::fs::read_to_string(rig.known_hosts()).unwrap();
    assert_eq!(known, format!("job.team-a.hatchway {}\n", rig.host_key));
    drop(rig.sidecar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_shell_prints_the_routers_message_and_no_ssh_noise() {
    let rig = rig().await;
    let output = rig.shell("bob-token", "echo never").await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(stderr.starts_with("kubectl-hatch: "), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("ssh"), "ssh ran: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A wrong token: 401, also exit 2.
    let output = rig.shell("nobody", "echo never").await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("401"), "{}", text(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_required_and_tls_is_always_verified() {
    let rig = rig().await;
    let connect = |ca: Option<&Path>| {
        let mut hatch = rig.hatch();
        hatch.args([
            "connect-ssh",
            "job",
            "-n",
            NS,
            "--server",
            &rig.url,
            "--token",
            "alice-token",
        ]);
        if let Some(ca) = ca {
            hatch.arg("--ca-file").arg(ca);
        }
        hatch.output()
    };
    // No CA (and no cluster to discover one in): a clear message, nothing sent.
    let output = connect(None).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("--ca-file"),
        "{}",
        text(&output.stderr)
    );

    // A CA that did not sign the router's certificate: TLS fails.
    let other = hatchway_operator::router::tls::RouterTls::generate(&["localhost".into()]).unwrap();
    let other_ca = rig.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.ca_pem).unwrap();
    let output = connect(Some(&other_ca)).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("TLS"), "{}", text(&output.stderr));

    // No server.
    let output = rig.hatch().args(["connect-ssh", "job"]).output().await.unwrap();
    assert!(
        text(&output.stderr).contains("--server"),
        "{}",
        text(&output.stderr)
    );
}

/// A user other than root whose login shell exists (the gateway runs
/// commands with it).
fn user_with_a_shell() -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .filter_map(|line| {
            let fields: Vec<_> = line.split(':').collect();
            (fields.len() == 7
                && fields[0] != "root"
                && fields[6].ends_with("sh")
                && Path::new(fields[6]).exists())
            .then(|| fields[0].to_owned())
        })
        .next()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_ssh_writes_one_block_and_ssh_goes_through_it() {
    let rig = rig().await;
    let config = rig.dir.path().join("ssh").join("config");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "Host elsewhere\n    User me\n").unwrap();
    let config_ssh = |extra: &[&str]| {
        let mut hatch = rig.hatch();
        hatch
            .args(["config-ssh", "--server", &rig.url])
            .arg("--ca-file")
            .arg(&rig.ca_file)
            .arg("--ssh-config")
            .arg(&config)
            .args(extra);
        hatch
    };
    for _ in 0..2 {
        let output = config_ssh(&[]).output().await.unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let written = std::fs::read_to_string(&config).unwrap();
    assert_eq!(written.matches("# BEGIN hatchway").count(), 1, "{written}");
    assert_eq!(written.matches("# END hatchway").count(), 1, "{written}");
    assert!(written.contains("Host *.hatchway"), "{written}");
    assert!(written.contains("StrictHostKeyChecking yes"), "{written}");
    assert!(!written.contains("alice-token"), "{written}");
    assert!(written.ends_with("Host elsewhere\n    User me\n"), "{written}");

    // --dry-run prints the block and changes nothing.
    let output = config_ssh(&["--dry-run"]).output().await.unwrap();
    assert!(text(&output.stdout).starts_with("# BEGIN hatchway"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // No known_hosts entry yet: connect-ssh writes it from the router's
    // answer before ssh checks the key (strictly).
    assert!(!rig.known_hosts().exists());

    // ssh through NAME.NS.hatchway with the token from the environment.
    let small = rig.dir.path().join("small.txt");
    std::fs::write(&small, "hello through the config\n").unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("small.txt");
    let mut ssh = tokio::process::Command::new("ssh");
    rig.clean(&mut ssh);
    ssh.env("HATCHWAY_TOKEN", "alice-token")
        .arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", "job.team-a.hatchway"])
        .arg(format!("cat > {}; exit 3", remote.display()))
        .stdin(std::fs::File::open(&small).unwrap());
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), ssh.output())
        .await
        .expect("ssh finishes")
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "ssh: {}", text(&out.stderr));
    assert_eq!(sha256(&small), sha256(&remote));
    assert_eq!(
        std::fs::read_to_string(rig.known_hosts()).unwrap(),
        format!("job.team-a.hatchway {}\n", rig.host_key)
    );

    // `User _` in the block: the container's own user by default, and
    // `user@` picks another (a real login needs root to switch users).
    if nix::unistd::Uid::effective().is_root()
        && let Some(other) = user_with_a_shell()
    {
        let as_other = format!("{other}@job.team-a.hatchway");
        for (destination, expected) in [
            ("job.team-a.hatchway", "root"),
            (as_other.as_str(), other.as_str()),
        ] {
            let mut ssh = tokio::process::Command::new("ssh");
            rig.clean(&mut ssh);
            ssh.env("HATCHWAY_TOKEN", "alice-token")
                .arg("-F")
                .arg(&config)
                .args(["-o", "BatchMode=yes", destination, "id -un"]);
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), ssh.output())
                .await
                .expect("ssh finishes")
                .unwrap();
            assert_eq!(text(&out.stdout).trim(), expected, "ssh: {}", text(&out.stderr));
        }
    }

    // --remove takes the block out and leaves the rest.
    let output = config_ssh(&["--remove"]).output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "Host elsewhere\n    User me\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_ssh_relays_the_ssh_banner() {
    use tokio::io::AsyncReadExt;
    let rig = rig().await;
    for name in ["job", "job.team-a.hatchway"] {
        let mut hatch = rig.hatch();
        hatch
            .args(["connect-ssh", name])
            .args(rig.connection("alice-token"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = hatch.spawn().unwrap();
        use tokio::io::AsyncWriteExt;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"SSH-2.0-test\r\n").await.unwrap();
        stdin.flush().await.unwrap();
        let mut banner = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            child.stdout.as_mut().unwrap().read_exact(&mut banner),
        )
        .await
        .unwrap_or_else(|_| panic!("a banner through {name}"))
        .unwrap();
        assert_eq!(&banner, b"SSH-");
        let _ = child.kill().await;
    }
}

/// scp (SFTP) of binary data both ways (it once stopped after ~64 KiB: the
/// gateway applied detach keys to pipe sessions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_goes_up_and_back_through_the_config() {
    let rig = rig().await;
    let config = rig.dir.path().join("ssh_config");
    let output = rig
        .hatch()
        .args(["config-ssh", "--server", &rig.url])
        .arg("--ca-file")
        .arg(&rig.ca_file)
        .arg("--ssh-config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    // scp up and back through NAME.NS.hatchway, the token from the
    // environment.
    let local = rig.dir.path().join("up.bin");
    let data: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&local, &data).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("remote.bin");
    let back = rig.dir.path().join("back.bin");
    let scp = |from: String, to: String| {
        let mut scp = tokio::process::Command::new("scp");
        rig.clean(&mut scp);
        scp.env("HATCHWAY_TOKEN", "alice-token")
            .arg("-F")
            .arg(&config)
            .args(["-o", "BatchMode=yes", "-q", &from, &to]);
        scp
    };
    let output = scp(
        local.display().to_string(),
        format!("job.team-a.hatchway:{}", remote.display()),
    )
    .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("scp up finishes")
        .unwrap();
    assert!(output.status.success(), "scp up: {}", text(&output.stderr));
    let output = scp(
        format!("job.team-a.hatchway:{}", remote.display()),
        back.display().to_string(),
    )
    .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("scp back finishes")
        .unwrap();
    assert!(output.status.success(), "scp back: {}", text(&output.stderr));
    assert_eq!(sha256(&local), sha256(&remote));
    assert_eq!(sha256(&local), sha256(&back));
}

/// Sends `len` pseudo-random bytes to `addr`, half-closes, and checks the
/// server's digest against ours.
async fn send_and_check(addr: std::net::SocketAddr, len: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hasher = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len());
        hasher.update(&chunk[..n]);
        conn.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    conn.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        conn.read_to_string(&mut answer),
    )
    .await
    .expect("the digest comes back")
    .unwrap();
    assert_eq!(
        answer,
        hex::encode(hasher.finalize()),
        "{len} bytes through the forward"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_moves_50_mib_and_reconnects_after_a_router_restart() {
    let mut rig = rig().await;
    let app = hashing_server().await;
    let (mut child, local, stderr) = rig.port_forward(app).await;

    send_and_check(local, 50 * 1024 * 1024).await;

    // The router goes away; a new connection waits for it and says so.
    let router = rig.router.take().unwrap();
    let addr = router.addr;
    router.stop().await;
    let pending = tokio::spawn(send_and_check(local, 1024 * 1024));
    wait_for_text(&stderr, "reconnecting").await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    rig.router = Some(TestRouter::start_on(listener, rig.cluster.clone(), rig.auth.clone(), |_| {}).await);
    tokio::time::timeout(std::time::Duration::from_secs(60), pending)
        .await
        .expect("the waiting connection goes through after the restart")
        .unwrap();
    wait_for_text(&stderr, "reconnected").await;
    // And new ones work as before.
    send_and_check(local, 4 * 1024 * 1024).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "port-forward is still running"
    );
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_ends_with_the_routers_words_when_refused() {
    let rig = rig().await;
    let app = hashing_server().await;
    let stdout = rig.dir.path().join("pf.out");
    let mut hatch = rig.hatch();
    hatch
        .args(["port-forward", "job", &format!(":{app}")])
        .args(rig.connection("bob-token"))
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::piped());
    let child = hatch.spawn().unwrap();
    let printed = wait_for_text(&stdout, "Forwarding from").await;
    let local: std::net::SocketAddr = printed.split_whitespace().nth(2).unwrap().parse().unwrap();
    // The first connection meets the refusal, which ends the forward.
    let _ = tokio::net::TcpStream::connect(local).await.unwrap();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("port-forward ends")
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("may not create containers/portforward"),
        "{stderr}"
    );
}

/// A kubeconfig whose user gets its token from an exec plugin, and whose
/// context names the namespace: no --token, no -n.
fn exec_kubeconfig(rig: &Rig) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let plugin = rig.dir.path().join("token-plugin");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
         \"status\":{\"token\":\"alice-token\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = rig.dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             contexts: [{{name: c, context: {{cluster: k, user: u, namespace: {NS}}}}}]\n\
             users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {}}}}}}}]\n",
            plugin.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_lines_as_written_and_stops_at_the_end() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let rig = rig().await;
    let log = rig.sidecar.log_dir().join("stdout.txt");
    wait_for_text(&log, "workload started").await;
    let mut hatch = rig.hatch();
    hatch
        .env("KUBECONFIG", exec_kubeconfig(&rig))
        .args(["logs", "job", "-f", "--server", &rig.url])
        .arg("--ca-file")
        .arg(&rig.ca_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = hatch.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("workload started"));
    // Lines appear as they are written, one at a time.
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .await
        .unwrap();
    for i in 0..3 {
        file.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        file.flush().await.unwrap();
        assert_eq!(next_line(&mut lines).await, Some(format!("line {i}")));
    }
    // The Container ends: the saved log (everything, plus what was written
    // after the last poll) continues from the same offset, then it stops.
    let mut saved = std::fs::read(&log).unwrap();
    saved.extend_from_slice(b"the last line\n");
    rig.cluster.set_saved_logs(
        &rig.uid,
        vec![support::SavedLog {
            name: "stdout.txt".into(),
            content: saved.into(),
            modified: None,
        }],
    );
    let mut status = rig.cluster.status(NS, "job").unwrap();
    status.phase = Some(hatchway_api::crd::Phase::Complete);
    rig.cluster.set_status(NS, "job", status);
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("the last line"));
    assert_eq!(
        next_line(&mut lines).await,
        None,
        "nothing repeated, then the end"
    );
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("logs -f ends with the Container")
        .unwrap();
    assert!(status.success());
}

/// The workload ends (the shim writes its exit code after the logs' last
/// byte) while its status still says Running — as for seconds on a busy
/// node, until kubelet, operator and the router's cache catch up: `logs -f`
/// prints the last line and returns, from the gateway's word alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_returns_when_the_workload_ends_before_its_status_says_so() {
    use tokio::io::AsyncBufReadExt;
    let rig = rig().await;
    let log = rig.sidecar.log_dir().join("stdout.txt");
    wait_for_text(&log, "workload started").await;
    let mut hatch = rig.hatch();
    hatch
        .env("KUBECONFIG", exec_kubeconfig(&rig))
        .args(["logs", "job", "-f", "--server", &rig.url])
        .arg("--ca-file")
        .arg(&rig.ca_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = hatch.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("workload started"));
    let mut text = std::fs::read(&log).unwrap();
    text.extend_from_slice(b"the last line\n");
    std::fs::write(&log, text).unwrap();
    std::fs::write(rig.sidecar.log_dir().join("exit-code"), "0\n").unwrap();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("the last line"));
    assert_eq!(next_line(&mut lines).await, None, "then the end");
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("logs -f ends with the workload")
        .unwrap();
    assert!(status.success());
    assert_eq!(
        rig.cluster.status(NS, "job").unwrap().phase,
        Some(hatchway_api::crd::Phase::Running),
        "the status never said it ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_refusals() {
    let rig = rig().await;
    let log = rig.sidecar.log_dir().join("stderr.txt");
    let lines: String = (0..5000).map(|i| format!("err {i}\n")).collect();
    std::fs::write(&log, &lines).unwrap();
    let output = rig
        .hatch()
        .args(["logs", "job", "stderr.txt", "--tail", "3"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "err 4997\nerr 4998\nerr 4999\n");
    // Without FILE, stderr.txt goes to stderr.
    let output = rig
        .hatch()
        .args(["logs", "job"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(text(&output.stderr), lines);
    assert_eq!(text(&output.stdout), "workload started\n");
    // Bob may not read them: the router's words, exit 2.
    let output = rig
        .hatch()
        .args(["logs", "job"])
        .args(rig.connection("bob-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("may not get containers/log"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_wait_shows_progress_until_the_container_runs() {
    let rig = rig().await;
    rig.set_queued();
    let stderr = rig.dir.path().join("wait.err");
    let mut hatch = rig.hatch();
    hatch
        .args(["shell", "job", "--wait"])
        .args(rig.connection("alice-token"))
        .args(["--", "echo ready"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let child = hatch.spawn().unwrap();
    let progress = wait_for_text(&stderr, "waiting for job.team-a.hatchway").await;
    assert!(progress.contains("not running yet"), "{progress}");
    rig.set_running();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the shell runs once the Container does")
        .unwrap();
    assert_eq!(text(&output.stdout).trim(), "ready");
    assert_eq!(output.status.code(), Some(0));
    // Without --wait: at once, exit 3 (the router cannot serve it yet).
    rig.set_queued();
    let output = rig.shell("alice-token", "echo never").await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("not running yet"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ssh_the_builtin_client_runs_commands_and_terminals() {
    use tokio::io::AsyncWriteExt;
    let rig = rig().await;
    // No ssh program: the built-in client, stdin to the command, its code.
    let mut hatch = rig.hatch();
    hatch
        .env("HATCHWAY_SSH", rig.dir.path().join("no-ssh-here"))
        .args(["shell", "job"])
        .args(rig.connection("alice-token"))
        .args(["--", "cat; echo ' and back'; exit 6"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = hatch.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"from stdin").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the built-in session ends")
        .unwrap();
    assert_eq!(
        text(&output.stdout),
        "from stdin and back\n",
        "{}",
        text(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(6));

    // A terminal (script(1) gives the CLI one): a pty on the other side.
    let line = [
        env!("CARGO_BIN_EXE_kubectl-hatch").to_owned(),
        "shell".into(),
        "job".into(),
        "--builtin-ssh".into(),
    ]
    .into_iter()
    .chain(rig.connection("alice-token"))
    .collect::<Vec<_>>()
    .join(" ");
    let mut script = tokio::process::Command::new("script");
    rig.clean(&mut script);
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = script.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"tty; exit 5\r").await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out).await;
        out
    });
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
    drop(stdin);
    if status.is_err() {
        let _ = child.kill().await;
    }
    let out = text(&reader.await.unwrap());
    let status = status
        .unwrap_or_else(|_| panic!("the terminal session did not end: {out:?}"))
        .unwrap();
    assert!(out.contains("/dev/pts/"), "{out}");
    assert_eq!(status.code(), Some(5), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_since_asks_the_cluster_by_time_then_follows_the_file() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let rig = rig().await;
    let log = rig.sidecar.log_dir().join("stdout.txt");
    wait_for_text(&log, "workload started").await;
    // What the kubelet kept of the last ten minutes (the API's answer).
    rig.cluster.set_saved_logs(
        &rig.uid,
        vec![support::SavedLog {
            name: "stdout.txt".into(),
            content: "recent 1\nrecent 2\n".into(),
            modified: None,
        }],
    );
    let mut hatch = rig.hatch();
    hatch
        .args(["logs", "job", "stdout.txt", "--since", "10m", "--tail", "1", "-f"])
        .args(rig.connection("alice-token"))
        .stdout(std::process::Stdio::piped());
    let mut child = hatch.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("recent 2"));
    assert_eq!(*rig.cluster.last_since.lock().unwrap(), Some(600));
    // Then the live file from its end: nothing old, the new line.
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .await
        .unwrap();
    file.write_all(b"after\n").await.unwrap();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("after"));
    let _ = child.kill().await;

    // A bad duration is a usage error (not a refusal's exit code).
    let output = rig
        .hatch()
        .args(["logs", "job", "--since", "soon"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("30s, 10m"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn a_usage_error_has_its_own_exit_code_and_help_succeeds() {
    let rig = rig().await;
    let output = rig.hatch().args(["logs"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("Usage: kubectl hatch logs"),
        "{}",
        text(&output.stderr)
    );
    let output = rig
        .hatch()
        .args(["port-forward", "web", "--nonsense"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    let output = rig.hatch().args(["--help"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stdout).contains("Usage: kubectl hatch"),
        "{}",
        text(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_limit_bytes_and_kubectls_name_forms() {
    let rig = rig().await;
    wait_for_text(&rig.sidecar.log_dir().join("stdout.txt"), "workload started").await;
    let output = rig
        .hatch()
        .args(["logs", "container/job", "stdout.txt", "--limit-bytes", "5"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "workl");
    let output = rig
        .hatch()
        .args([
            "logs",
            "job",
            "--since",
            "1m",
            "--since-time",
            "2026-01-01T00:00:00Z",
        ])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("cannot be used with"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_servers_version_too() {
    let rig = rig().await;
    let output = rig
        .hatch()
        .arg("version")
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        text(&output.stdout),
        format!(
            "kubectl-hatch {version} (control protocol v1)\nserver: hatchway-operator {version} (control protocol v1) \
             via the router at {}\n",
            rig.url
        )
    );
    assert_eq!(text(&output.stderr), "", "no skew, no warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_timestamps_and_previous_ask_the_kubelet() {
    let rig = rig().await;
    wait_for_text(&rig.sidecar.log_dir().join("stdout.txt"), "workload started").await;
    // What the kubelet kept of the previous run, with times.
    rig.cluster.set_saved_logs(
        &rig.uid,
        vec![support::SavedLog {
            name: "stdout.txt".into(),
            content: "2026-12-03T14:00:00Z first run\n2026-12-03T14:00:01Z crashed\n".into(),
            modified: None,
        }],
    );
    let output = rig
        .hatch()
        .args(["logs", "job", "stdout.txt", "--timestamps", "-p", "--tail", "1"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "2026-12-03T14:00:01Z crashed\n");
    let asked = *rig.cluster.last_query.lock().unwrap();
    assert!(
        asked.timestamps && asked.previous && asked.since_seconds.is_none(),
        "{asked:?}"
    );
    // Following either is not offered (the kubelet's copy is read once).
    let output = rig
        .hatch()
        .args(["logs", "job", "-f", "--timestamps"])
        .args(rig.connection("alice-token"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_prints_a_one_time_link_that_logs_the_page_in() {
    let rig = rig().await;
    let out = rig.run("alice-token", &["web"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = text(&out.stdout).trim().to_owned();
    let authority = rig.url.strip_prefix("https://").unwrap().trim_end_matches('/');
    let path = link
        .strip_prefix(&format!("https://{authority}"))
        .unwrap_or_else(|| panic!("{link} is not on {authority}"));
    assert!(path.starts_with("/ui/login?hatchway_code="), "{link}");
    assert!(!link.contains("alice-token"), "never the token: {link}");
    let mut client = Client::connect(rig.router.as_ref().unwrap().addr).await;
    let response = client
        .send(
            http::Request::get(path)
                .header("host", authority)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), http::StatusCode::SEE_OTHER);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("__Host-hatchway_ui=")
    );
    let refused = rig.run("not-a-token", &["web"]).await;
    assert!(text(&refused.stderr).contains("401"), "{}", text(&refused.stderr));
}
