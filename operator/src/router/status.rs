//! Status fields the router writes, each concern under its own field
//! manager: server-side apply removes fields a manager applied before and
//! omits now, so each apply carries the whole of its concern and nothing
//! else.

/// `status.gateway.tunnel` and the fingerprints the sidecar reported over
/// the tunnel (`certificateSha256`, `hostKeyFingerprint`, `hostKey`).
pub const MANAGER_TUNNEL: &str = "hatchway-router-tunnel";
/// `status.listeningPorts`, as the sidecar reports them.
pub const MANAGER_PORTS: &str = "hatchway-router-ports";
/// `status.interactiveSessionStarted`.
pub const MANAGER_SESSION: &str = "hatchway-router-session";
/// `status.exitCode`, as the shim reported it through the sidecar.
pub const MANAGER_EXIT: &str = "hatchway-router-exit";

/// The status patch that records that a shell was opened.
pub fn session_started() -> serde_json::Value {
    serde_json::json!({ "interactiveSessionStarted": true })
}
