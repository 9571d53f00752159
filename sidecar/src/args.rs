//! The sidecar's command line: its roles, and the gateway's settings —
//! flags, each also an `HATCHWAY_*` environment variable, and the files
//! mounted from the per-Container Secret. A missing or unreadable setting
//! stops the sidecar with a message naming it (exit code 64, `EX_USAGE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use hatchway_api::pod;
use hatchway_api::proof::CtrKey;

/// Hatchway's per-pod sidecar.
///
/// `gateway` runs in the sidecar container; `shim` is PID 1 of the workload
/// container. Every flag can also be set with the environment variable
/// named in its help.
#[derive(Debug, Parser)]
#[command(name = "hatchway-sidecar", version)]
pub struct Args {
    /// Log format: `text` or `json`.
    #[arg(long, env = "HATCHWAY_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The sidecar's roles.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the gateway: TLS server for the router (SSH, logs, web apps, ports) and the tunnel dialer.
    Gateway(GatewayArgs),
    /// Run COMMAND as PID 1 of the workload container: tee its logs, reap zombies, forward signals,
    /// sample cgroup usage, serve the gateway's spawn requests (see `shim --help`).
    Shim(hatchway_shim::ShimArgs),
    /// Serve SFTP on standard input and output (the gateway starts it inside the workload container
    /// for the sftp subsystem).
    SftpServer,
    /// Print this binary's version and the protocol versions it speaks.
    Version,
}

/// Exit code for a bad setting.
pub const EXIT_CONFIG: i32 = 64;

/// Flags of `hatchway-sidecar gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The UID of the Container this pod runs; the only one this gateway serves.
    #[arg(long, env = pod::env::CONTAINER_UID)]
    pub container_uid: String,

    /// File holding the container key (`ctr_key`, 64 hex digits), from the
    /// mounted Secret (never inside the volume shared with the workload).
    #[arg(long, env = "HATCHWAY_KEY_FILE", default_value = pod::SECRET_DIR_KEY_FILE)]
    pub key_file: PathBuf,

    /// Address of the TLS gateway.
    #[arg(long, env = "HATCHWAY_GATEWAY_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], pod::GATEWAY_PORT)))]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP /healthz, /readyz and /metrics port.
    #[arg(long, env = "HATCHWAY_HEALTH_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], pod::HEALTH_PORT)))]
    pub health_listen: SocketAddr,

    /// The log directory shared with the workload's shim (stdout.txt,
    /// stderr.txt, usage.txt): opened once at start, every file in it
    /// resolved beneath that handle without following symlinks.
    #[arg(long, env = "HATCHWAY_LOG_DIR", default_value = pod::LOG_DIR)]
    pub log_dir: PathBuf,

    /// The sidecar's own directory for gateway.txt, which the workload cannot write.
    #[arg(long, env = "HATCHWAY_AUDIT_DIR", default_value = pod::AUDIT_DIR)]
    pub audit_dir: PathBuf,

    /// The name of the shim's abstract spawn socket (in the pod's network
    /// namespace; no file).
    #[arg(long, env = "HATCHWAY_SPAWN_SOCKET", default_value = hatchway_shim::DEFAULT_SPAWN_SOCKET)]
    pub spawn_socket: String,

    /// Copy this binary here at start so the workload container can run it as its shim.
    #[arg(long, env = pod::env::INSTALL_TO)]
    pub install_to: Option<PathBuf>,

    /// A program that serves SFTP inside the workload container instead of
    /// the shim's own `sftp-server` (which the shim runs from its own
    /// executable, never from a path the workload can write). Empty: ours.
    #[arg(long, env = "HATCHWAY_SFTP_COMMAND", value_delimiter = ' ')]
    pub sftp_command: Vec<String>,

    /// The router's tunnel URL (`https://host:port`); with none, no tunnel is dialed.
    #[arg(long, env = "HATCHWAY_TUNNEL_URL")]
    pub tunnel_url: Option<String>,

    /// File holding the tunnel URL, read when --tunnel-url is not given and the file exists.
    #[arg(
        long,
        env = "HATCHWAY_TUNNEL_URL_FILE",
        default_value = pod::SECRET_DIR_TUNNEL_URL_FILE
    )]
    pub tunnel_url_file: PathBuf,

    /// PEM file of the CA the router's tunnel certificate must chain to.
    #[arg(
        long,
        env = "HATCHWAY_ROUTER_CA_FILE",
        default_value = pod::SECRET_DIR_ROUTER_CA_FILE
    )]
    pub router_ca_file: PathBuf,

    /// Most concurrent gateway connections (direct and tunnel streams together).
    #[arg(long, env = "HATCHWAY_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Milliseconds allowed for a TLS handshake, and then for each request's headers.
    #[arg(long, env = "HATCHWAY_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Milliseconds a web-app request body may send nothing before it is
    /// cut off.
    #[arg(long, env = "HATCHWAY_BODY_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub body_idle_timeout_ms: u64,

    /// Milliseconds a connection to a web app is kept idle for the next
    /// request (0: a connection per request). Keep it below the apps'
    /// own keep-alive timeouts.
    #[arg(long, env = "HATCHWAY_APP_KEEPALIVE_MS", default_value_t = 1_000)]
    pub app_keepalive_ms: u64,

    /// Seconds a detached resumable session (a shell or port-forward whose
    /// connection broke) waits for its client before it ends.
    #[arg(long, env = pod::env::RESUME_GRACE_SECONDS, default_value_t = 600)]
    pub resume_grace_seconds: u64,

    /// Bytes each resumable session keeps for a resend (the workload's
    /// output while detached, up to this, then the workload waits).
    #[arg(long, env = "HATCHWAY_RESUME_REPLAY_BYTES", default_value_t = 4 << 20)]
    pub resume_replay_bytes: usize,

    /// Bytes all resumable sessions keep for resends together.
    #[arg(long, env = "HATCHWAY_RESUME_MEMORY_BYTES", default_value_t = 64 << 20)]
    pub resume_memory_bytes: usize,

    /// Resumable sessions at once; beyond, sessions open without resumption.
    #[arg(long, env = "HATCHWAY_RESUME_MAX_SESSIONS", default_value_t = 256)]
    pub resume_max_sessions: usize,

    /// Seconds between scans of the listening ports.
    #[arg(long, env = "HATCHWAY_PORT_SCAN_SECONDS", default_value_t = 2)]
    pub port_scan_seconds: u64,

    /// Record every terminal (pty) as asciicast v2 in the audit
    /// directory's `sessions/`.
    #[arg(long, env = pod::env::RECORD_SHELLS, default_value_t = false, action = clap::ArgAction::Set)]
    pub record_shells: bool,

    /// The most bytes one recording holds; the rest of that session is
    /// not recorded (a marker says so).
    #[arg(long, env = "HATCHWAY_RECORD_MAX_BYTES", default_value_t = 64 << 20)]
    pub record_max_bytes: u64,

    /// The ports `/portforward` and SSH `direct-tcpip` may reach: `any`,
    /// `8080,9000-9010` or `none` (the operator decides it:
    /// api/src/ports.rs).
    #[arg(long, env = pod::env::FORWARD_PORTS, default_value = "any")]
    pub forward_ports: hatchway_api::ports::PortSet,

    /// Why those ports, for refusals (`spec.portForward.ports allows …`).
    #[arg(long, env = pod::env::FORWARD_RULE, default_value = "")]
    pub forward_rule: String,

    /// Let `ssh -R` open listeners (loopback, ports from 1024, 8 per
    /// connection) in the pod's network namespace.
    #[arg(long, env = pod::env::REVERSE_FORWARD, default_value_t = false, action = clap::ArgAction::Set)]
    pub reverse_forward: bool,

    /// Let `ssh -A` put an agent socket (0700 directory under /tmp, the
    /// session user's) in the workload container.
    #[arg(long, env = pod::env::AGENT_FORWARD, default_value_t = false, action = clap::ArgAction::Set)]
    pub agent_forward: bool,
}

/// The spawn socket name [`GatewayArgs::local`] uses for `dir`: unique per
/// directory, so tests running side by side never share a shim.
pub fn local_spawn_socket(dir: &Path) -> String {
    format!("hatchway-test{}", dir.display())
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{setting}: cannot read {path}: {source}")]
    Unreadable {
        /// The setting's environment variable.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is malformed.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting's environment variable.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Reads a file named by a setting.
pub fn read_setting(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })
}

impl GatewayArgs {
    /// Settings for a gateway run by hand or in a test: loopback with
    /// ephemeral ports, every file under `dir` (`ctr_key`, `log/`,
    /// `audit/`, `tunnel_url`, `router_ca.crt`), a spawn socket named after
    /// `dir` (abstract names are machine-wide), no tunnel unless those
    /// files exist, and a port scan every second.
    pub fn local(container_uid: &str, dir: &Path) -> Self {
        Self {
            container_uid: container_uid.to_owned(),
            key_file: dir.join("ctr_key"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            health_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_dir: dir.join("log"),
            audit_dir: dir.join("audit"),
            spawn_socket: local_spawn_socket(dir),
            install_to: None,
            sftp_command: Vec::new(),
            tunnel_url: None,
            tunnel_url_file: dir.join("tunnel_url"),
            router_ca_file: dir.join("router_ca.crt"),
            max_connections: 512,
            port_scan_seconds: 1,
            header_timeout_ms: 10_000,
            body_idle_timeout_ms: 60_000,
            app_keepalive_ms: 1_000,
            resume_grace_seconds: 600,
            resume_replay_bytes: 4 << 20,
            resume_memory_bytes: 64 << 20,
            resume_max_sessions: 256,
            record_shells: false,
            record_max_bytes: 64 << 20,
            forward_ports: hatchway_api::ports::PortSet::Any,
            forward_rule: String::new(),
            reverse_forward: false,
            agent_forward: false,
        }
    }

    /// The forwarding rule.
    pub fn forward(&self) -> hatchway_api::ports::ForwardRule {
        let why = if self.forward_rule.is_empty() {
            format!("the gateway allows {}", self.forward_ports)
        } else {
            self.forward_rule.clone()
        };
        hatchway_api::ports::ForwardRule {
            ports: self.forward_ports.clone(),
            why,
        }
    }

    /// The resumable sessions' settings.
    pub fn resumable(&self) -> crate::resumable::Settings {
        crate::resumable::Settings {
            grace: Duration::from_secs(self.resume_grace_seconds),
            replay_bytes: self.resume_replay_bytes,
            memory_bytes: self.resume_memory_bytes,
            max_sessions: self.resume_max_sessions,
            ..Default::default()
        }
    }

    /// The container key from its file.
    pub fn key(&self) -> Result<CtrKey, ConfigError> {
        let text = read_setting("HATCHWAY_KEY_FILE", &self.key_file)?;
        CtrKey::from_hex(&String::from_utf8_lossy(&text)).map_err(|e| ConfigError::Invalid {
            setting: "HATCHWAY_KEY_FILE",
            message: format!("{}: {e}", self.key_file.display()),
        })
    }

    /// The tunnel URL and CA, if a tunnel is configured.
    pub fn tunnel(&self) -> Result<Option<(String, Vec<u8>)>, ConfigError> {
        let url = match &self.tunnel_url {
            Some(url) => url.trim().to_owned(),
            None if self.tunnel_url_file.exists() => {
                String::from_utf8_lossy(&read_setting("HATCHWAY_TUNNEL_URL_FILE", &self.tunnel_url_file)?)
                    .trim()
                    .to_owned()
            }
            None => return Ok(None),
        };
        if url.is_empty() {
            return Ok(None);
        }
        let ca = read_setting("HATCHWAY_ROUTER_CA_FILE", &self.router_ca_file)?;
        Ok(Some((url, ca)))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hatchway_api::pod;

    use super::*;

    /// The command lines the operator writes into the pod parse as the
    /// roles they mean: the pod contract, checked from this side.
    #[test]
    fn the_operators_command_lines_parse_as_the_gateway_and_the_shim() {
        let argv = |args: Vec<String>| std::iter::once("hatchway-sidecar".to_owned()).chain(args);

        let shim = Args::try_parse_from(argv(
            pod::shim_command(true, ["sh".into(), "-c".into(), "--x".into()])[1..].to_vec(),
        ))
        .unwrap();
        let Command::Shim(shim) = shim.command else {
            panic!("not the shim: {shim:?}")
        };
        assert_eq!(shim.spawn_allowed_uids, [pod::SIDECAR_UID]);
        assert!(!shim.spawn_disabled);
        assert_eq!(shim.command, ["sh", "-c", "--x"]);

        let closed =
            Args::try_parse_from(argv(pod::shim_command(false, ["true".into()])[1..].to_vec())).unwrap();
        let Command::Shim(closed) = closed.command else {
            panic!("not the shim")
        };
        assert!(closed.spawn_disabled && closed.spawn_allowed_uids.is_empty());

        let gateway = Args::try_parse_from(argv(vec![
            pod::GATEWAY_SUBCOMMAND.to_owned(),
            "--container-uid".to_owned(),
            "u".to_owned(),
        ]))
        .unwrap();
        let Command::Gateway(gateway) = gateway.command else {
            panic!("not the gateway")
        };
        assert_eq!(gateway.listen.port(), pod::GATEWAY_PORT);
        assert_eq!(gateway.health_listen.port(), pod::HEALTH_PORT);
        assert_eq!(gateway.log_dir, std::path::Path::new(pod::LOG_DIR));
        assert_eq!(gateway.key_file, std::path::Path::new(pod::SECRET_DIR_KEY_FILE));
    }
}
