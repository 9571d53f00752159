//! `hatchway-operator run`: wiring the router to the cluster (being built).

use crate::RunArgs;

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Not wired yet.
    #[error("not yet")]
    NotYet,
}

/// Runs the router until SIGTERM.
pub async fn run(_args: RunArgs) -> Result<(), ServeError> {
    Err(ServeError::NotYet)
}
