//! Hatchway's paths on this machine: two routers in this process (one that
//! dials pods directly, one that reaches them only through tunnels), a real
//! sidecar for each (with its shim, for shells), and the real
//! `kubectl-hatch` binary in front: the same data path as in a cluster,
//! without the pod network in between.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hatchway_operator::router::auth::Permission;
use hatchway_operator::router::select::Policy;

use crate::support::{MemoryCluster, StaticAuth, TestRouter, TestSidecar, container, pki, running_at};
use crate::tools::{Bg, wait_listening};

pub const NS: &str = "bench";
pub const TOKEN: &str = "bench-token";
/// The web apps' domain (requests name it in their Host header).
pub const APPS: &str = "apps.bench";

/// The two paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Direct,
    Tunnel,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Tunnel => "tunnel",
        }
    }
}

pub struct Rig {
    pub direct: TestRouter,
    pub tunnel: TestRouter,
    pub direct_sidecar: TestSidecar,
    pub tunnel_sidecar: TestSidecar,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cluster: std::sync::Arc<MemoryCluster>,
    pub auth: std::sync::Arc<StaticAuth>,
}

impl Rig {
    pub async fn start() -> Result<Self> {
        let cluster = MemoryCluster::new();
        let auth = StaticAuth::new();
        auth.user(TOKEN, "bench");
        for permission in [
            Permission::SHELL,
            Permission::PORTFORWARD,
            Permission::LOG,
            Permission::PROXY_GET,
            Permission::PROXY_CREATE,
        ] {
            auth.grant("bench", NS, permission);
        }
        let apps = |s: &mut hatchway_operator::router::Settings| s.wildcard_domain = Some(APPS.into());
        let direct = TestRouter::start_with(cluster.clone(), auth.clone(), apps).await;
        let tunnel = TestRouter::start_with(cluster.clone(), auth.clone(), |s| {
            apps(s);
            s.policy = Policy {
                prefer_tunnel: true,
                direct_access: false,
            };
        })
        .await;

        let c = container(NS, Path::Direct.name());
        let uid = c.metadata.uid.clone().context("a uid")?;
        let direct_sidecar = TestSidecar::start(&uid).await.with_shim().await;
        cluster.insert(c);
        let mut status = running_at(direct_sidecar.addr());
        status.gateway.as_mut().context("a gateway")?.host_key =
            Some(direct_sidecar.running.gateway.ssh.host_key_openssh());
        cluster.set_status(NS, Path::Direct.name(), status);

        let c = container(NS, Path::Tunnel.name());
        let uid = c.metadata.uid.clone().context("a uid")?;
        let tunnel_sidecar = TestSidecar::start_tunnelled(&uid, &tunnel.url).await;
        cluster.insert(c);
        let mut status = running_at(tunnel_sidecar.addr());
        status.gateway.as_mut().context("a gateway")?.address = String::new();
        cluster.set_status(NS, Path::Tunnel.name(), status);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !tunnel.router.tunnels.contains(&uid) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the tunnel did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, pki().ca_pem)?;
        Ok(Self {
            direct,
            tunnel,
            direct_sidecar,
            tunnel_sidecar,
            dir,
            ca_file,
            cluster,
            auth,
        })
    }

    /// Publishes `port` (private) on both Containers: only published ports
    /// are reachable as web apps.
    pub fn publish(&self, port: u16) {
        for path in [Path::Direct, Path::Tunnel] {
            self.cluster.update(NS, path.name(), |c| {
                c.spec.published_ports = vec![
                    serde_json::from_value(serde_json::json!({"port": port, "access": "private"}))
                        .expect("a published port"),
                ];
            });
        }
    }

    pub fn router(&self, path: Path) -> &TestRouter {
        match path {
            Path::Direct => &self.direct,
            Path::Tunnel => &self.tunnel,
        }
    }

    pub fn uid(&self, path: Path) -> String {
        match path {
            Path::Direct => self.direct_sidecar.uid.clone(),
            Path::Tunnel => self.tunnel_sidecar.uid.clone(),
        }
    }

    /// `kubectl-hatch ARGS` against the router of `path`.
    pub fn hatch(&self, path: Path, args: &[&str]) -> Result<Command> {
        let mut command = hatch_command()?;
        command
            .env("KUBECONFIG", self.dir.path().join("no-kubeconfig"))
            .env("HATCHWAY_SERVER", &self.router(path).url)
            .env("HATCHWAY_CA_FILE", &self.ca_file)
            .env("HATCHWAY_TOKEN", TOKEN)
            .env("HATCHWAY_KNOWN_HOSTS", self.dir.path().join("known_hosts"))
            .args(["-n", NS])
            .args(args);
        Ok(command)
    }

    /// `kubectl hatch port-forward` of `remote` on `path`'s Container,
    /// listening on `listen`.
    pub fn port_forward(&self, path: Path, listen: u16, remote: u16) -> Result<Bg> {
        self.port_forward_with(path, listen, remote, &[])
    }

    /// The same with more flags (`--no-resume`).
    pub fn port_forward_with(&self, path: Path, listen: u16, remote: u16, flags: &[&str]) -> Result<Bg> {
        let mapping = format!("{listen}:{remote}");
        let mut args = vec!["port-forward", path.name(), &mapping];
        args.extend(flags);
        let mut command = self.hatch(path, &args)?;
        let bg = Bg::spawn("kubectl hatch port-forward", command.stdout(Stdio::null()))?;
        wait_listening(listen, "kubectl hatch port-forward")?;
        Ok(bg)
    }
}

/// `kubectl-hatch` with none of this process's `HATCHWAY_*` settings
/// (each caller names its own).
pub fn hatch_command() -> Result<Command> {
    let mut command = Command::new(hatch_binary()?);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HATCHWAY_") {
            command.env_remove(&key);
        }
    }
    Ok(command)
}

/// `kubectl-hatch` beside this binary (same profile).
pub fn hatch_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory")?.join("kubectl-hatch");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: `make bench` builds it (cargo build --release -p kubectl-hatch)",
        bin.display()
    );
    Ok(bin)
}
