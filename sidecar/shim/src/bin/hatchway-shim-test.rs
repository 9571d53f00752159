//! A stand-alone shim for the tests (and for trying it by hand): the same
//! `hatchway_shim::run` the sidecar's `shim` subcommand calls. Not shipped.
//!
//! With `HATCHWAY_SHIM_TEST_PROBE=<socket name>` it is instead a one-shot
//! spawn client that prints the shim's answer, so tests can connect as
//! another uid or from another PID namespace.
//!
//! The tests share their PID namespace with this shim, so it serves peers
//! inside its own PID namespace (the shipped shim never does) unless
//! `HATCHWAY_SHIM_TEST_PIDNS_CHECK` is set: then it checks, as in a pod,
//! and the test runs it as PID 1 of a namespace of its own.

use clap::Parser;

#[derive(Parser)]
#[command(name = "hatchway-shim-test")]
struct Cli {
    #[command(flatten)]
    shim: hatchway_shim::ShimArgs,
}

fn main() {
    if let Ok(socket) = std::env::var("HATCHWAY_SHIM_TEST_PROBE") {
        probe(&socket);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HATCHWAY_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Cli::parse().shim;
    args.spawn_peer_outside_pid_namespace = std::env::var_os("HATCHWAY_SHIM_TEST_PIDNS_CHECK").is_some();
    let code = hatchway_shim::run(args);
    std::process::exit(code);
}

/// Asks the shim at `socket` to run `true` and prints the outcome.
fn probe(socket: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = hatchway_shim::SpawnRequest {
        argv: Some(vec!["true".into()]),
        ..Default::default()
    };
    let outcome = runtime.block_on(async {
        match hatchway_shim::spawn(socket, &request).await {
            Ok(spawned) => match spawned.wait().await {
                Ok(status) => format!("exited {}", status.exit_code()),
                Err(error) => format!("error {error}"),
            },
            Err(error) => format!("error {error}"),
        }
    });
    println!("{outcome}");
    std::process::exit(0);
}
