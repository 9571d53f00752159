//! The test rig of the CLI's tests: an in-process router, a real sidecar
//! with its shim, and the built `kubectl-hatch` run against them.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use hatchway_operator::router::auth::Permission;
use hatchway_testkit::*;

pub const NS: &str = "team-a";

pub struct Rig {
    pub router: Option<TestRouter>,
    pub url: String,
    pub cluster: Arc<MemoryCluster>,
    pub auth: Arc<StaticAuth>,
    pub uid: String,
    pub sidecar: TestSidecar,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub host_key: String,
}

/// A router where "alice" may open shells, port-forwards and logs in NS
/// and "bob" may not, and a running Container "job" with a real gateway
/// and shim.
pub async fn rig() -> Rig {
    rig_with(|_| {}).await
}

/// [`rig`] with the gateway's settings changed by `tweak`.
pub async fn rig_with(tweak: impl FnOnce(&mut hatchway_sidecar::args::GatewayArgs)) -> Rig {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    for permission in [Permission::SHELL, Permission::PORTFORWARD, Permission::LOG] {
        auth.grant("alice", NS, permission);
    }
    auth.user("bob-token", "bob");
    let router = TestRouter::start(cluster.clone(), auth.clone()).await;
    let c = container(NS, "job");
    let uid = c.metadata.uid.clone().unwrap();
    let sidecar = TestSidecar::start_with(&uid, |args| {
        args.record_shells = true;
        tweak(args);
    })
    .await
    .with_shim()
    .await;
    cluster.insert(c);
    let host_key = sidecar.running.gateway.ssh.host_key_openssh();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki().ca_pem).unwrap();
    let rig = Rig {
        url: router.url.clone(),
        router: Some(router),
        cluster,
        auth,
        uid,
        sidecar,
        dir,
        ca_file,
        host_key,
    };
    rig.set_running();
    rig
}

impl Rig {
    /// Status: Running, with the gateway's address and host key.
    pub fn set_running(&self) {
        let mut status = running_at(self.sidecar.addr());
        status.gateway.as_mut().unwrap().host_key = Some(self.host_key.clone());
        self.cluster.set_status(NS, "job", status);
    }

    /// Status: Queued (no gateway yet).
    pub fn set_queued(&self) {
        let status = hatchway_api::crd::ContainerStatus {
            phase: Some(hatchway_api::crd::Phase::Queued),
            ..Default::default()
        };
        self.cluster.set_status(NS, "job", status);
    }

    /// The built binary with a clean environment (no kubeconfig, no
    /// HATCHWAY_* settings from outside).
    pub fn hatch(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hatch"));
        self.clean(&mut command);
        command
    }

    pub fn clean(&self, command: &mut tokio::process::Command) {
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

    /// Stops the router (its relays end, as with a replica's exit), runs
    /// `while_down`, and starts a new one on the same port.
    pub async fn restart_router<F: std::future::Future<Output = ()>>(&mut self, while_down: F) {
        let router = self.router.take().expect("a router runs");
        let addr = router.addr;
        router.stop().await;
        while_down.await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        self.router =
            Some(TestRouter::start_on(listener, self.cluster.clone(), self.auth.clone(), |_| {}).await);
    }

    /// `kubectl-hatch port-forward job :PORT` as alice: the child, the
    /// local address it listens on, and the file its stderr goes to.
    pub async fn port_forward(&self, port: u16) -> (tokio::process::Child, std::net::SocketAddr, PathBuf) {
        let stdout = self.dir.path().join(format!("pf-{port}.out"));
        let stderr = self.dir.path().join(format!("pf-{port}.err"));
        let mut hatch = self.hatch();
        hatch
            .args(["port-forward", "job", &format!(":{port}")])
            .args(self.connection("alice-token"))
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = hatch.spawn().unwrap();
        let printed = wait_for_text(&stdout, "Forwarding from").await;
        // "Forwarding from 127.0.0.1:LOCAL -> PORT"
        let local = printed
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {printed:?}"));
        assert!(printed.contains(&format!("-> {port}")), "{printed}");
        (child, local, stderr)
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    pub fn connection(&self, token: &str) -> Vec<String> {
        vec![
            "-n".into(),
            NS.into(),
            "--server".into(),
            self.url.clone(),
            "--ca-file".into(),
            self.ca_file.display().to_string(),
            "--token".into(),
            token.into(),
        ]
    }

    /// A script that runs ssh with a pty even without a local terminal,
    /// as a user at a terminal gets one.
    pub fn ssh_with_pty(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("ssh-tt");
        std::fs::write(&path, "#!/bin/sh\nexec ssh -tt \"$@\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `kubectl-hatch shell job ARGS…` as `token`'s user with a pty, its
    /// stdin piped and its output in files `NAME.out` and `NAME.err`; in
    /// its own process group (to be killed whole, ssh and ProxyCommand
    /// with it).
    pub fn pty_shell(
        &self,
        token: &str,
        name: &str,
        args: &[&str],
    ) -> (tokio::process::Child, PathBuf, PathBuf) {
        let stdout = self.dir.path().join(format!("{name}.out"));
        let stderr = self.dir.path().join(format!("{name}.err"));
        let mut hatch = self.hatch();
        hatch
            .args(["shell", "job", "--ssh"])
            .arg(self.ssh_with_pty())
            .args(args)
            .args(self.connection(token))
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0);
        (hatch.spawn().unwrap(), stdout, stderr)
    }

    /// `kubectl-hatch ARGS…` as `token`'s user, to its end (60 s at most).
    pub async fn run(&self, token: &str, args: &[&str]) -> Output {
        let mut hatch = self.hatch();
        hatch.args(args).args(self.connection(token));
        tokio::time::timeout(std::time::Duration::from_secs(60), hatch.output())
            .await
            .expect("kubectl-hatch finishes")
            .unwrap()
    }

    pub async fn shell(&self, token: &str, command: &str) -> Output {
        let mut hatch = self.hatch();
        hatch
            .args(["shell", "job"])
            .args(self.connection(token))
            .args(["--", command]);
        tokio::time::timeout(std::time::Duration::from_secs(60), hatch.output())
            .await
            .expect("shell finishes")
            .unwrap()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads a growing file (a child's stderr) until it holds `needle`.
pub async fn wait_for_text(path: &Path, needle: &str) -> String {
    wait_for_count(path, needle, 1).await
}

/// Reads a growing file until it holds `needle` `count` times.
pub async fn wait_for_count(path: &Path, needle: &str, count: usize) -> String {
    let mut found = String::new();
    eventually(&format!("{count} × {needle:?} in {}", path.display()), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let hit = text.matches(needle).count() >= count;
        if hit {
            found = text;
        }
        async move { hit }
    })
    .await;
    found
}

pub async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
}
