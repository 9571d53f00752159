//! Hatchway's operator: one binary, two roles in every replica, both started
//! by `run`: the router (users' shells, logs, port-forwards, web apps;
//! sidecars' tunnels) in every replica, the reconciler (Containers into
//! pods and status) in the one holding the leader Lease.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// Command-line and environment configuration.
pub mod args;
/// The root secret and router CA, created at first start.
pub mod bootstrap;
/// `check`: the chart's `helm test` hook.
pub mod check;
/// The reconciler: Containers into pods, Secrets and status.
pub mod reconcile;
/// The router: the user-facing gateway controller.
pub mod router;
/// `run`: wiring the router to the cluster and serving it.
pub mod serve;
/// `uninstall`: the chart's pre-delete hook.
pub mod uninstall;

use std::io::Write;

pub use args::{Args, Command, RunArgs};

/// Writes the Container CRD as YAML.
pub fn print_crd(out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(hatchway_api::crd::crd_yaml().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn crd_prints_the_generated_crd() {
        let args = Args::try_parse_from(["hatchway-operator", "crd"]).unwrap();
        assert!(matches!(args.command, Command::Crd));
        let mut out = Vec::new();
        print_crd(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), hatchway_api::crd::crd_yaml());
    }

    #[test]
    fn an_unknown_command_is_refused() {
        assert!(Args::try_parse_from(["hatchway-operator", "reconcile-everything"]).is_err());
    }

    #[test]
    fn run_takes_its_settings_from_flags() {
        let args = Args::try_parse_from([
            "hatchway-operator",
            "run",
            "--listen",
            "127.0.0.1:9443",
            "--namespaces",
            "a,b",
            "--shell",
            "false",
        ])
        .unwrap();
        let Command::Run(run) = args.command else {
            panic!("not run")
        };
        assert_eq!(run.listen.port(), 9443);
        assert_eq!(run.namespaces, ["a", "b"]);
        assert!(!run.shell);
        assert!(run.direct_access);
        assert_eq!(run.max_tunnels, 1000);
    }
}
