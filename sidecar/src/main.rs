use clap::Parser;
use hatchway_sidecar::{Args, Command};

fn main() {
    let Args { log_format, command } = Args::parse();
    init_logging(&log_format);
    let code = match command {
        Command::Version => {
            println!(
                "hatchway-sidecar {} (control protocol v{})",
                env!("CARGO_PKG_VERSION"),
                hatchway_api::control::PROTOCOL_VERSION
            );
            0
        }
        Command::Shim(args) => hatchway_shim::run(args),
        Command::SftpServer => hatchway_sidecar::sftp::run_stdio(),
        Command::Gateway(args) => tokio::runtime::Runtime::new()
            .expect("starting the runtime")
            .block_on(async {
                let running = match hatchway_sidecar::start::start_gateway(args).await {
                    Ok(running) => running,
                    Err(error) => {
                        eprintln!("hatchway-sidecar: {error}");
                        return error.exit_code();
                    }
                };
                hatchway_api::pod::stopped().await;
                tracing::info!("terminating: no new connections; open sessions end with the pod");
                running.shutdown.cancel();
                0
            }),
    };
    std::process::exit(code);
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HATCHWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init()
    } else {
        builder.init()
    }
}
