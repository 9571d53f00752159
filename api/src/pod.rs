//! The router needs them too (e.g. to read a finished workload's saved logs).

/// The container that runs the user's command under the shim.
pub const WORKLOAD_CONTAINER: &str = "workload";
/// The native sidecar (init container with `restartPolicy: Always`).
pub const SIDECAR_CONTAINER: &str = "hatchway-sidecar";
