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
        Command::Gateway(args) => {
            return_freed_blocks_to_the_system();
            gateway(args)
        }
    };
    std::process::exit(code);
}

/// glibc raises its mmap threshold each time a large block is freed, after
/// which the resumable sessions' 256 KiB blocks come from the heap and
/// stay resident once freed: 343 KiB per detached session in `make bench`
/// against 22 KiB with the threshold fixed at its default (128 KiB), which
/// keeps those blocks mapped apart and unmapped when freed (during a bulk
/// transfer the pool recycles them instead of freeing them).
fn return_freed_blocks_to_the_system() {
    hatchway_shim::fix_mmap_threshold(128 * 1024);
}

fn gateway(args: hatchway_sidecar::args::GatewayArgs) -> i32 {
    tokio::runtime::Runtime::new()
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
        })
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
