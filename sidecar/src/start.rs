//! Starting the gateway from its flags: the certificate, the host key, the
//! log directory, the listeners, the tunnel; and waiting for a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::args::{ConfigError, GatewayArgs};
use crate::gateway::{Gateway, Limits};
use crate::logdir::LogDir;
use crate::metrics::Metrics;
use crate::report::Reporter;
use crate::ssh::SshServer;
use crate::tls::GatewayCert;
use crate::webdav::LogTree;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding, copying or another I/O step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or host key could not be made.
    #[error("{0}")]
    Crypto(String),
}

impl StartError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => crate::args::EXIT_CONFIG,
            _ => 1,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// A started gateway.
pub struct Running {
    /// The gateway itself.
    pub gateway: Arc<Gateway>,
    /// Where the TLS gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the health port listens.
    pub health_addr: SocketAddr,
    /// Cancelling it stops every server and the tunnel.
    pub shutdown: CancellationToken,
}

/// Reads the settings, binds the listeners and starts every task.
pub async fn start_gateway(args: GatewayArgs) -> Result<Running, StartError> {
    let key = args.key()?;
    let tunnel = match args.tunnel()? {
        Some((url, ca)) => {
            Some(
                crate::tunnel::TunnelTarget::new(&url, &ca).map_err(|e| ConfigError::Invalid {
                    setting: "HATCHWAY_TUNNEL_URL",
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    if let Some(target) = &args.install_to {
        install_self(target)?;
    }
    std::fs::create_dir_all(&args.audit_dir).map_err(io(format!("creating {}", args.audit_dir.display())))?;
    // Opened once, now, before the workload starts (the pod starts it only
    // once this sidecar is ready): every later read resolves beneath it.
    let log_dir = Arc::new(LogDir::open(&args.log_dir).map_err(io("the log directory"))?);

    let metrics = Metrics::new();
    let reporter = Reporter::new(&args.audit_dir, metrics.clone());
    let cert = GatewayCert::generate("hatchway-gateway").map_err(|e| StartError::Crypto(e.to_string()))?;
    let mut ssh = SshServer::new(
        args.spawn_socket.clone(),
        args.sftp_command.clone(),
        reporter.clone(),
        crate::ssh::recording::Recordings::new(&args.audit_dir, args.record_shells, args.record_max_bytes),
    )
    .map_err(|e| StartError::Crypto(e.to_string()))?;
    ssh.forward = args.forward();
    ssh.reverse_forward = args.reverse_forward;
    ssh.agent_forward = args.agent_forward;
    let timeout = Duration::from_millis(args.header_timeout_ms.max(1));
    let limits = Limits {
        max_connections: args.max_connections,
        handshake_timeout: timeout,
        header_timeout: timeout,
        // Three quarters for web apps; shells, logs and port-forwards
        // always have the last quarter.
        max_web_requests: (args.max_connections * 3 / 4).max(1),
        body_idle_timeout: Duration::from_millis(args.body_idle_timeout_ms.max(1)),
        app_keepalive: Duration::from_millis(args.app_keepalive_ms),
        ..Limits::default()
    };
    let tree = LogTree {
        log_dir: Arc::clone(&log_dir),
        audit_dir: args.audit_dir.clone(),
    };
    let gateway = Gateway::new(
        args.container_uid.clone(),
        key.clone(),
        cert,
        tree,
        reporter.clone(),
        metrics,
        limits,
        Arc::new(ssh),
        crate::resumable::Registry::new(args.resumable(), reporter.clone()),
    );

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(io(format!("binding the gateway on {}", args.listen)))?;
    let health = TcpListener::bind(args.health_listen)
        .await
        .map_err(io(format!("binding the health port on {}", args.health_listen)))?;
    let gateway_addr = listener.local_addr().map_err(io("gateway address"))?;
    let health_addr = health.local_addr().map_err(io("health address"))?;
    let shutdown = CancellationToken::new();

    tokio::spawn(gateway.clone().serve(listener, shutdown.clone()));
    tokio::spawn(crate::health::serve(health, gateway.clone(), shutdown.clone()));
    let scanner = crate::ports::Scanner::proc([gateway_addr.port(), health_addr.port()]);
    let interval = Duration::from_secs(args.port_scan_seconds.max(1));
    let scan = tokio::spawn(scanner.run(reporter.clone(), interval));
    let exit = tokio::spawn(crate::workload::watch(log_dir, reporter, interval));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        scan.abort();
        exit.abort();
    });
    if let Some(target) = tunnel {
        tokio::spawn(crate::tunnel::run(gateway.clone(), target, key, shutdown.clone()));
    }
    tracing::info!(
        container = %gateway.uid,
        %gateway_addr,
        %health_addr,
        certificate_sha256 = %gateway.cert.sha256,
        host_key = %gateway.ssh.host_key_fingerprint(),
        "gateway started"
    );
    Ok(Running {
        gateway,
        gateway_addr,
        health_addr,
        shutdown,
    })
}

/// Copies the running executable to `target` (atomically) so the workload
/// container can run it as its shim.
fn install_self(target: &std::path::Path) -> Result<(), StartError> {
    let me = std::env::current_exe().map_err(io("finding this executable"))?;
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = target.with_extension("tmp");
    std::fs::copy(&me, &tmp).map_err(io(format!("copying {} to {}", me.display(), tmp.display())))?;
    std::fs::rename(&tmp, target).map_err(io(format!("installing {}", target.display())))?;
    Ok(())
}
