//! The pod contract: what the operator writes into a Container's pod and
//! the sidecar (gateway and shim, one binary) reads back. Container names,
//! ports, paths, environment variables, Secret keys, the command lines the
//! operator gives the sidecar's binary, the log directory's file names and
//! the `/readyz` answer. The router uses them too (a finished workload's
//! saved logs, the gateway's port).

/// The container that runs the user's command under the shim.
pub const WORKLOAD_CONTAINER: &str = "workload";
/// The native sidecar (init container with `restartPolicy: Always`).
pub const SIDECAR_CONTAINER: &str = "hatchway-sidecar";

/// Where the pod's volumes are mounted (docs/security.md, "The pod"). The
/// workload is untrusted: only `BIN_DIR` and `LOG_DIR` are shared with it,
/// each in the one direction it needs; the Secret and the audit trail have
/// no path the workload can reach.
///
/// The sidecar's static binary, copied here at its start; the workload
/// mounts it read-only and runs it as its shim.
pub const BIN_DIR: &str = "/hatchway/bin";
/// The shim, in `BIN_DIR`.
pub const SHIM_PATH: &str = "/hatchway/bin/hatchway-sidecar";
/// The log directory: the workload's shim writes it; the sidecar mounts it
/// read-only and resolves nothing in it through a symlink.
pub const LOG_DIR: &str = "/hatchway/log";
/// The per-Container Secret, in the sidecar only.
pub const SECRET_DIR: &str = "/run/hatchway/secret";
/// `ctr_key` in `SECRET_DIR`.
pub const SECRET_DIR_KEY_FILE: &str = "/run/hatchway/secret/ctr_key";
/// `router_ca.crt` in `SECRET_DIR`.
pub const SECRET_DIR_ROUTER_CA_FILE: &str = "/run/hatchway/secret/router_ca.crt";
/// `tunnel_url` in `SECRET_DIR`.
pub const SECRET_DIR_TUNNEL_URL_FILE: &str = "/run/hatchway/secret/tunnel_url";
/// The sidecar's audit trail (`gateway.txt`), in the sidecar only.
pub const AUDIT_DIR: &str = "/run/hatchway/audit";

/// The gateway's TLS port in the pod: the router dials it.
pub const GATEWAY_PORT: u16 = 7443;
/// The sidecar's plain-HTTP port: `/healthz`, `/readyz`, `/metrics` (the
/// kubelet's probes, the reconciler, Prometheus).
pub const HEALTH_PORT: u16 = 7444;
/// The uid (and gid) the sidecar runs as: distroless "nonroot". The shim
/// lets only this uid (and root) use its spawn socket.
pub const SIDECAR_UID: u32 = 65532;

/// Paths on the health port.
pub mod health_path {
    /// Liveness: `ok` while the process runs.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: a [`Readyz`](super::Readyz) once the gateway serves.
    pub const READYZ: &str = "/readyz";
    /// Prometheus text format.
    pub const METRICS: &str = "/metrics";
}

/// Environment variables the operator sets on the sidecar container (the
/// sidecar's flags of the same meaning read them).
pub mod env {
    /// The Container's UID: the only one the gateway serves.
    pub const CONTAINER_UID: &str = "HATCHWAY_CONTAINER_UID";
    /// Where the sidecar copies its own binary for the workload's shim.
    pub const INSTALL_TO: &str = "HATCHWAY_INSTALL_TO";
    /// Seconds a detached resumable session waits for its client (the
    /// operator sets it from the Container's spec or the chart).
    pub const RESUME_GRACE_SECONDS: &str = "HATCHWAY_RESUME_GRACE_SECONDS";
    /// `true`: every terminal is recorded (the operator sets it from the
    /// Container's `spec.recordShell` or the chart).
    pub const RECORD_SHELLS: &str = "HATCHWAY_RECORD_SHELLS";
    /// The ports that may be forwarded ([`crate::ports::PortSet`]:
    /// `any`, `8080,9000-9010`, or empty for none). Unset: any.
    pub const FORWARD_PORTS: &str = "HATCHWAY_FORWARD_PORTS";
    /// Why those ports, for refusals (`spec.portForward.ports allows …`).
    pub const FORWARD_RULE: &str = "HATCHWAY_FORWARD_RULE";
    /// `true`: `ssh -R` may listen in the pod (the Container's
    /// `spec.portForward.reverse`).
    pub const REVERSE_FORWARD: &str = "HATCHWAY_REVERSE_FORWARD";
    /// `true`: `ssh -A` may forward the client's agent into the workload
    /// container (the Container's `spec.portForward.agent`).
    pub const AGENT_FORWARD: &str = "HATCHWAY_AGENT_FORWARD";
    /// `text` or `json`: the sidecar logs as the operator does.
    pub const LOG_FORMAT: &str = "HATCHWAY_LOG_FORMAT";
}

/// Keys of the per-Container Secret (files in [`SECRET_DIR`]).
pub mod secret_key {
    /// The container key, 64 hex digits (`proof::ctr_key`).
    pub const CTR_KEY: &str = "ctr_key";
    /// PEM of the CA the router's tunnel certificate chains to.
    pub const ROUTER_CA: &str = "router_ca.crt";
    /// The router URL the sidecar dials its tunnel to (absent: no tunnel).
    pub const TUNNEL_URL: &str = "tunnel_url";
}

/// File names in the log directory ([`LOG_DIR`]), written by the shim and
/// served read-only by the gateway and, once the pod is gone, by the router
/// from the API server's saved container logs.
pub mod log_file {
    /// The command's stdout (rotated to `stdout.txt.1`).
    pub const STDOUT: &str = "stdout.txt";
    /// The command's stderr (rotated to `stderr.txt.1`).
    pub const STDERR: &str = "stderr.txt";
    /// Both streams in one file: what saved logs offer when the kubelet
    /// cannot split them.
    pub const OUTPUT: &str = "output.txt";
    /// cgroup usage samples (docs/shim.md).
    pub const USAGE: &str = "usage.txt";
    /// The command's exit code and a newline, written atomically once it
    /// has exited and the logs are flushed.
    pub const EXIT_CODE: &str = "exit-code";
    /// The gateway's audit trail, in [`AUDIT_DIR`](super::AUDIT_DIR) (not
    /// the log directory: the workload cannot write it).
    pub const AUDIT: &str = "gateway.txt";
    /// The directory of terminal recordings, in [`AUDIT_DIR`](super::AUDIT_DIR)
    /// and in the log tree (`sessions/<id>.cast`).
    pub const SESSIONS_DIR: &str = "sessions";
    /// A recording's file name: the terminal's id and this (asciicast v2).
    pub const RECORDING_SUFFIX: &str = ".cast";
}

/// The sidecar binary's subcommand that runs the gateway (the sidecar
/// container's `args`).
pub const GATEWAY_SUBCOMMAND: &str = "gateway";
/// The sidecar binary's subcommand that runs the workload under the shim.
pub const SHIM_SUBCOMMAND: &str = "shim";
/// The shim's flag listing the uids that may use its spawn socket.
pub const SHIM_SPAWN_ALLOWED_UIDS: &str = "--spawn-allowed-uids";
/// The shim's flag that serves no spawn socket at all (no shells).
pub const SHIM_SPAWN_DISABLED: &str = "--spawn-disabled";

/// The workload container's command: the shim from [`SHIM_PATH`], then the
/// user's command. With `shells`, the sidecar's uid may ask the shim for
/// sessions; without, the shim serves no spawn socket.
pub fn shim_command(shells: bool, command: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut argv = vec![SHIM_PATH.to_owned(), SHIM_SUBCOMMAND.to_owned()];
    if shells {
        argv.extend([SHIM_SPAWN_ALLOWED_UIDS.to_owned(), SIDECAR_UID.to_string()]);
    } else {
        argv.push(SHIM_SPAWN_DISABLED.to_owned());
    }
    argv.push("--".to_owned());
    argv.extend(command);
    argv
}

/// The sidecar's `/readyz` answer: how to verify this gateway. The
/// fingerprints are public; the reconciler copies them into the
/// Container's status, and clients check the gateway against them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readyz {
    /// Always `ready` (anything else is not a 200).
    pub status: String,
    /// The Container UID this gateway serves.
    pub container_uid: String,
    /// SHA-256 of the gateway's TLS certificate (DER), hex.
    pub certificate_sha256: String,
    /// The SSH host key, `TYPE BASE64`.
    pub host_key: String,
    /// The SSH host key's `SHA256:...` fingerprint.
    pub host_key_fingerprint: String,
    /// The TCP ports listening in the pod now, sorted (the reconciler
    /// copies them into the status of Containers no tunnel reports for).
    /// Absent from an older sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listening_ports: Option<Vec<u16>>,
}

/// The largest `/readyz` body a reader accepts.
pub const MAX_READYZ_BYTES: usize = 64 * 1024;

/// Waits until the process is told to stop: SIGTERM (how the kubelet
/// stops every container of a pod, the operator's and the sidecar's alike)
/// or SIGINT (a terminal's Ctrl-C). Both parts drain on it.
pub async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_the_secret_keys_in_the_secret_dir() {
        for (file, key) in [
            (SECRET_DIR_KEY_FILE, secret_key::CTR_KEY),
            (SECRET_DIR_ROUTER_CA_FILE, secret_key::ROUTER_CA),
            (SECRET_DIR_TUNNEL_URL_FILE, secret_key::TUNNEL_URL),
        ] {
            assert_eq!(file, format!("{SECRET_DIR}/{key}"));
        }
        assert_eq!(SHIM_PATH, format!("{BIN_DIR}/hatchway-sidecar"));
    }

    #[test]
    fn the_shim_command_runs_the_users_command_after_the_dashes() {
        let argv = shim_command(
            true,
            ["sh".to_owned(), "-c".to_owned(), "--spawn-disabled".to_owned()],
        );
        assert_eq!(
            argv,
            [
                SHIM_PATH,
                "shim",
                "--spawn-allowed-uids",
                "65532",
                "--",
                "sh",
                "-c",
                "--spawn-disabled"
            ]
        );
        let argv = shim_command(false, ["true".to_owned()]);
        assert_eq!(argv, [SHIM_PATH, "shim", "--spawn-disabled", "--", "true"]);
    }

    #[test]
    fn readyz_is_camel_case_json_both_ways() {
        let r = Readyz {
            status: "ready".into(),
            container_uid: "u".into(),
            certificate_sha256: "ab".into(),
            host_key: "ssh-ed25519 AAA".into(),
            host_key_fingerprint: "SHA256:x".into(),
            listening_ports: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "ready", "containerUid": "u", "certificateSha256": "ab",
                "hostKey": "ssh-ed25519 AAA", "hostKeyFingerprint": "SHA256:x"})
        );
        assert_eq!(serde_json::from_value::<Readyz>(json).unwrap(), r);
        let with_ports = Readyz {
            listening_ports: Some(vec![80, 8080]),
            ..r
        };
        let json = serde_json::to_value(&with_ports).unwrap();
        assert_eq!(json["listeningPorts"], serde_json::json!([80, 8080]));
        assert_eq!(serde_json::from_value::<Readyz>(json).unwrap(), with_ports);
    }

    #[test]
    fn secret_files_are_in_the_secret_dir_and_nothing_private_is_under_a_shared_one() {
        for file in [
            SECRET_DIR_KEY_FILE,
            SECRET_DIR_ROUTER_CA_FILE,
            SECRET_DIR_TUNNEL_URL_FILE,
        ] {
            assert!(file.starts_with(&format!("{SECRET_DIR}/")), "{file}");
        }
        assert!(SHIM_PATH.starts_with(&format!("{BIN_DIR}/")));
        for private in [SECRET_DIR, AUDIT_DIR] {
            for shared in [BIN_DIR, LOG_DIR, "/hatchway"] {
                assert!(!private.starts_with(shared), "{private} is under {shared}");
            }
        }
    }
}
