//! The reconciler: `Container` resources into pods with the sidecar, keys
//! and status (DESIGN.md, "Operator reconciler"). Being built: so far the
//! pod and Secret a Container becomes.

pub mod controller;
pub mod leader;
pub mod pod;
pub mod status;
