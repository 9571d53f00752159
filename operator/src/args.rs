use clap::{Parser, Subcommand};

/// Hatchway's operator.
///
/// Implemented so far: `crd`, which prints the Container
/// CustomResourceDefinition. The reconciler and the router are not built
/// yet; this binary does nothing else.
#[derive(Debug, Parser)]
#[command(name = "hatchway-operator", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The operator's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Container CRD as YAML (e.g. `hatchway-operator crd | kubectl apply -f -`).
    Crd,
}
