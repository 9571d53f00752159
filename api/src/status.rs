//! Who writes which part of a Container's status, and the partial
//! statuses they write.
//!
//! Every writer applies its whole concern with server-side apply under its
//! own field manager: the API server removes a field a manager applied
//! before and leaves out now, and never touches another manager's fields.
//! So each partial below carries one concern and nothing else, and the
//! reconciler's apply can never erase what the router recorded (or the
//! other way round).

use kube::Resource;

use crate::crd::{Container, ContainerStatus, GatewayStatus, ListeningPort};

/// The reconciler: phase, pod name, the gateway's direct address and its
/// fingerprints from `/readyz`, times, exit code from the pod, conditions,
/// published ports' URLs.
pub const MANAGER_RECONCILER: &str = "hatchway-reconciler";
/// The router replica holding a sidecar's tunnel: `gateway.tunnel` and the
/// fingerprints the sidecar reported over it.
pub const MANAGER_TUNNEL: &str = "hatchway-router-tunnel";
/// The router, as the sidecar reports them: `listeningPorts`.
pub const MANAGER_PORTS: &str = "hatchway-router-ports";
/// The router, once: `interactiveSessionStarted`.
pub const MANAGER_SESSION: &str = "hatchway-router-session";
/// The router, as the shim reported it through the sidecar: `exitCode`.
pub const MANAGER_EXIT: &str = "hatchway-router-exit";

/// The prefix of a tunnel address (`tunnel <replica URL>`) in
/// `status.gateway.tunnel` or `status.gateway.address`.
pub const TUNNEL_PREFIX: &str = "tunnel ";

/// `tunnel <replica URL>`: how a replica records that it holds a tunnel.
pub fn tunnel_address(replica_url: &str) -> String {
    format!("{TUNNEL_PREFIX}{replica_url}")
}

/// The replica URL of a tunnel address, `None` for any other address.
pub fn tunnel_replica(address: &str) -> Option<&str> {
    address.trim().strip_prefix(TUNNEL_PREFIX).map(str::trim)
}

impl ContainerStatus {
    /// [`MANAGER_TUNNEL`]'s status: the sidecar's tunnel is held by
    /// `replica_url`, and the gateway it reported is verified by these.
    pub fn tunnel_connected(
        replica_url: &str,
        certificate_sha256: String,
        host_key_fingerprint: String,
        host_key: String,
    ) -> Self {
        Self {
            gateway: Some(GatewayStatus {
                tunnel: Some(tunnel_address(replica_url)),
                certificate_sha256: Some(certificate_sha256),
                host_key_fingerprint: Some(host_key_fingerprint),
                host_key: Some(host_key),
                ..GatewayStatus::default()
            }),
            ..Self::default()
        }
    }

    /// [`MANAGER_PORTS`]'s status: these TCP ports listen (none: the
    /// field goes away).
    pub fn listening(ports: &[u16]) -> Self {
        Self {
            listening_ports: ports
                .iter()
                .map(|&port| ListeningPort {
                    port: port.into(),
                    protocol: "TCP".to_owned(),
                })
                .collect(),
            ..Self::default()
        }
    }

    /// [`MANAGER_SESSION`]'s status: someone opened a session.
    pub fn session_started() -> Self {
        Self {
            interactive_session_started: true,
            ..Self::default()
        }
    }

    /// [`MANAGER_EXIT`]'s status: the workload exited with `code`.
    pub fn exited(code: i32) -> Self {
        Self {
            exit_code: Some(code),
            ..Self::default()
        }
    }

    /// The server-side apply body for the status subresource: the fields
    /// set here, nothing else (unset fields are left out, not nulled).
    pub fn apply_body(&self) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": Container::api_version(&()),
            "kind": Container::kind(&()),
            "status": self,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn to_json(status: &ContainerStatus) -> serde_json::Value {
        serde_json::to_value(status).unwrap()
    }

    #[test]
    fn each_writers_status_names_only_its_own_fields() {
        assert_eq!(
            to_json(&ContainerStatus::tunnel_connected(
                "https://10.0.0.1:8443",
                "ab".into(),
                "SHA256:x".into(),
                "ssh-ed25519 AAA".into()
            )),
            json!({"gateway": {"tunnel": "tunnel https://10.0.0.1:8443", "certificateSha256": "ab",
                "hostKeyFingerprint": "SHA256:x", "hostKey": "ssh-ed25519 AAA"}})
        );
        assert_eq!(
            to_json(&ContainerStatus::listening(&[8080, 22])),
            json!({"listeningPorts": [{"port": 8080, "protocol": "TCP"}, {"port": 22, "protocol": "TCP"}]})
        );
        // No ports: the manager's field goes away under server-side apply.
        assert_eq!(to_json(&ContainerStatus::listening(&[])), json!({}));
        assert_eq!(
            to_json(&ContainerStatus::session_started()),
            json!({"interactiveSessionStarted": true})
        );
        assert_eq!(to_json(&ContainerStatus::exited(137)), json!({"exitCode": 137}));
    }

    #[test]
    fn the_apply_body_names_the_resource() {
        assert_eq!(
            ContainerStatus::exited(0).apply_body(),
            json!({"apiVersion": "hatchway.dev/v1alpha1", "kind": "Container", "status": {"exitCode": 0}})
        );
    }

    #[test]
    fn tunnel_addresses_round_trip_and_others_are_not_tunnels() {
        let address = tunnel_address("https://r:8443");
        assert_eq!(address, "tunnel https://r:8443");
        assert_eq!(tunnel_replica(&address), Some("https://r:8443"));
        assert_eq!(
            tunnel_replica("  tunnel  https://r:8443 "),
            Some("https://r:8443")
        );
        assert_eq!(tunnel_replica("10.0.0.1:7443"), None);
        assert_eq!(tunnel_replica("tunnelhttps://r"), None);
    }
}
