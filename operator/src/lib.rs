//! Hatchway's operator: one binary, two roles in every replica (the
//! reconciler and the router). So far it only prints the CRD it serves.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// Command-line and environment configuration.
pub mod args;
/// The router: the user-facing gateway controller.
pub mod router;

use std::io::Write;

pub use args::{Args, Command};

/// What can go wrong running the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to standard output failed.
    #[error("writing the CRD: {0}")]
    Write(#[from] std::io::Error),
}

/// Runs the command the arguments name.
pub fn run(args: Args, out: &mut dyn Write) -> Result<(), Error> {
    let Args { command } = args;
    match command {
        Command::Crd => out.write_all(hatchway_api::crd::crd_yaml().as_bytes())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn crd_prints_the_generated_crd() {
        let args = Args::try_parse_from(["hatchway-operator", "crd"]).unwrap();
        let mut out = Vec::new();
        run(args, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), hatchway_api::crd::crd_yaml());
    }

    #[test]
    fn an_unknown_command_is_refused() {
        assert!(Args::try_parse_from(["hatchway-operator", "reconcile-everything"]).is_err());
    }
}
