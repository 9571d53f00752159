//! The reconciler: `Container` resources into pods with the sidecar, keys
//! and status (DESIGN.md, "Operator reconciler"). It runs in the replica
//! that holds the leader Lease; the router runs in every replica.

/// The reconcile loop: the Secret, the Pod, the status, Events, TTLs.
pub mod controller;
/// The leader Lease: one replica reconciles at a time.
pub mod leader;
/// `hatchway_reconcile_*` and `hatchway_leader`.
pub mod metrics;
/// The reconciler's decisions, pure: the pod step and the TTL step.
pub mod plan;
/// The Pod, Secret and NetworkPolicy a Container becomes (pure).
pub mod pod;
/// Listening ports of Containers no tunnel reports for, from their
/// sidecars' `/readyz`.
pub mod ports;
/// The status a Container should have, from its pod (pure).
pub mod status;
