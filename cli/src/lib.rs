//! kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
//!
//! So far only `version` is implemented.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::io::Write;

use clap::{Parser, Subcommand};

/// kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
///
/// Implemented so far: `version`. Nothing else is built yet.
#[derive(Debug, Parser)]
#[command(name = "kubectl-hatch", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this binary's version and the protocol versions it speaks.
    Version,
}

/// Runs the command the arguments name.
pub fn run(args: Args, out: &mut dyn Write) -> std::io::Result<()> {
    let Args { command } = args;
    match command {
        Command::Version => writeln!(
            out,
            "kubectl-hatch {} (control protocol v{})",
            env!("CARGO_PKG_VERSION"),
            hatchway_api::control::PROTOCOL_VERSION
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_binary_and_protocol() {
        let mut out = Vec::new();
        run(
            Args::try_parse_from(["kubectl-hatch", "version"]).unwrap(),
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("kubectl-hatch 0."), "{out}");
        assert!(out.contains("control protocol v1"), "{out}");
    }
}
