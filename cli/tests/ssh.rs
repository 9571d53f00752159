//! The built `kubectl-hatch` against an in-process router and a real
//! sidecar (with its shim), driving the real OpenSSH `ssh` and `scp`.

#[path = "../../operator/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use hatchway_operator::router::auth::Permission;
use sha2::{Digest, Sha256};
use support::*;

const NS: &str = "team-a";

struct Rig {
    router: TestRouter,
    sidecar: TestSidecar,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    host_key: String,
}

/// A router where "alice" may open shells in NS and "bob" may not, and a
/// running Container "job" with a real gateway and shim.
async fn rig() -> Rig {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant("alice", NS, Permission::SHELL);
    auth.user("bob-token", "bob");
    let router = TestRouter::start(cluster.clone(), auth).await;
    let c = container(NS, "job");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap())
        .await
        .with_shim()
        .await;
    cluster.insert(c);
    cluster.set_status(NS, "job", running_at(sidecar.addr()));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki().ca_pem).unwrap();
    let host_key = sidecar.running.gateway.ssh.host_key_openssh();
    Rig {
        router,
        sidecar,
        dir,
        ca_file,
        host_key,
    }
}

impl Rig {
    /// The built binary with a clean environment (no kubeconfig, no
    /// HATCHWAY_* settings from outside).
    fn hatch(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hatch"));
        self.clean(&mut command);
        command
    }

    fn clean(&self, command: &mut tokio::process::Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HATCHWAY_") {
                command.env_remove(&key);
            }
        }
        command
            .env("KUBECONFIG", self.dir.path().join("no-kubeconfig"))
            .env("HATCHWAY_KNOWN_HOSTS", self.known_hosts())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    fn connection(&self, token: &str) -> Vec<String> {
        vec![
            "-n".into(),
            NS.into(),
            "--server".into(),
            self.router.url.clone(),
            "--ca-file".into(),
            self.ca_file.display().to_string(),
            "--token".into(),
            token.into(),
        ]
    }

    async fn shell(&self, token: &str, command: &str) -> Output {
        let mut hatch = self.hatch();
        hatch.args(["shell", "job"]).args(self.connection(token)).args([
            "--host-key",
            &self.host_key,
            "--",
            command,
        ]);
        tokio::time::timeout(std::time::Duration::from_secs(60), hatch.output())
            .await
            .expect("shell finishes")
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
    // No CA: a clear message, nothing sent.
    let output = rig
        .hatch()
        .args([
            "connect-ssh",
            "job",
            "-n",
            NS,
            "--server",
            &rig.router.url,
            "--token",
            "alice-token",
        ])
        .output()
        .await
        .unwrap();
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
    let output = rig
        .hatch()
        .args([
            "connect-ssh",
            "job",
            "-n",
            NS,
            "--server",
            &rig.router.url,
            "--token",
            "alice-token",
        ])
        .arg("--ca-file")
        .arg(&other_ca)
        .output()
        .await
        .unwrap();
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
            .args(["config-ssh", "--server", &rig.router.url])
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

    // The host key: as `shell` records it.
    std::fs::write(
        rig.known_hosts(),
        format!("job.team-a.hatchway {}\n", rig.host_key),
    )
    .unwrap();

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

/// KNOWN FAILURE: scp (SFTP) through `connect-ssh` stops after ~64 KiB
/// ("scp: Connection closed": the server closes the channel without an exit
/// status), while the same scp through an in-process relay (the operator
/// tests' `ssh_relay`) works, and small `ssh … 'cat > f'` through
/// connect-ssh works. Cause not found yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_goes_up_and_back_through_the_config() {
    let rig = rig().await;
    let config = rig.dir.path().join("ssh_config");
    let output = rig
        .hatch()
        .args(["config-ssh", "--server", &rig.router.url])
        .arg("--ca-file")
        .arg(&rig.ca_file)
        .arg("--ssh-config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    std::fs::write(
        rig.known_hosts(),
        format!("job.team-a.hatchway {}\n", rig.host_key),
    )
    .unwrap();
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
