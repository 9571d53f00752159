//! A stand-alone shim for the tests (and for trying it by hand): the same
//! `hatchway_shim::run` the sidecar's `shim` subcommand calls. Not shipped.

use clap::Parser;

#[derive(Parser)]
#[command(name = "hatchway-shim-test")]
struct Cli {
    #[command(flatten)]
    shim: hatchway_shim::ShimArgs,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HATCHWAY_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = hatchway_shim::run(Cli::parse().shim);
    std::process::exit(code);
}
