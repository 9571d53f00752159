//! `make bench`: Hatchway's data paths beside the tools people would use
//! instead, measured in the same run on the same machine, reported as
//! ratios to those references (medians over repeats, min–max shown).
//! Writes `bench/results/<date>.md` and `.json` (the PNG chart is drawn
//! from the JSON by bench/chart.py). Nothing here is a test assertion.

use hatchway_testkit as support;

mod aggregated;
mod cases;
mod cluster;
mod report;
mod rig;
mod sessions;
mod stats;
mod tools;
mod tunnels;
mod udp;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "hatchway-bench")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every case and write the report.
    Run {
        /// Where results go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Repeats of each case (latency cases: rounds of 1000 samples).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Tunnels for the memory and scale cases.
        #[arg(long, default_value_t = 1000)]
        tunnels: usize,
        /// Only these cases (bulk, cluster, connect, echo, http, sessions,
        /// udp, tunnels).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// In the bulk cases, only the paths whose name contains one of
        /// these (e.g. `direct` for Hatchway direct beside not resumable):
        /// for comparing two paths quickly; the report's ratios then lack
        /// the references left out.
        #[arg(long, value_delimiter = ',')]
        paths: Vec<String>,
    },
    /// (internal) A plain TCP server that accepts and holds connections
    /// (the memory reference: what a raw connection costs a process).
    Hold,
    /// (internal) A router in a process of its own for the memory cases.
    Router {
        #[arg(long)]
        tunnels: usize,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// A directory with tls.crt, tls.key and ca.crt to serve with.
        #[arg(long)]
        pki: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.command {
        Cmd::Hold => runtime.block_on(tunnels::hold()),
        Cmd::Router { tunnels, port, pki } => runtime.block_on(tunnels::serve_router(tunnels, port, pki)),
        Cmd::Run {
            out,
            repeats,
            seconds,
            tunnels,
            only,
            paths,
        } => {
            let wanted = |case: &str| only.is_empty() || only.iter().any(|o| o == case);
            let mut rows = Vec::new();
            // The routers' certificate also names the bench's APIService
            // Service, so the cluster's API server can verify it.
            support::use_pki(hatchway_operator::router::tls::RouterTls::generate(&[
                "hatchway-router".into(),
                "localhost".into(),
                "127.0.0.1".into(),
                aggregated::SERVICE_DNS.into(),
            ])?);
            let mut rig = runtime.block_on(rig::Rig::start())?;
            let ssh_dir = tempfile::tempdir()?;
            let sshd = tools::Sshd::start(ssh_dir.path())?;
            // The blocking cases run on this thread while the routers and
            // sidecars run on the runtime's workers.
            if wanted("bulk") {
                let aggregated = runtime.block_on(aggregated::Aggregated::start(&rig))?;
                rows.extend(cases::bulk(
                    &rig,
                    &sshd,
                    aggregated.as_ref(),
                    repeats,
                    seconds,
                    &paths,
                )?);
            }
            if wanted("connect") {
                rows.extend(cases::connect(&rig, &sshd, 1000, repeats)?);
            }
            if wanted("echo") {
                rows.extend(cases::shell_echo(&rig, &sshd, 1000, repeats)?);
            }
            if wanted("http") {
                rows.extend(cases::http(&rig, repeats, seconds)?);
            }
            if wanted("sessions") {
                rows.extend(sessions::time_to_resume(&mut rig, &runtime, 20)?);
            }
            if wanted("udp") {
                rows.extend(udp::udp(&rig, repeats, seconds)?);
            }
            if wanted("cluster") {
                rows.extend(cluster::on_cluster(repeats)?);
            }
            if wanted("tunnels") {
                rows.extend(runtime.block_on(tunnels::memory_and_scale(tunnels, 200))?);
            }
            drop(rig);
            let written = report::write(&out, &rows)?;
            eprintln!("bench: wrote {}", written.display());
            runtime.shutdown_background();
            Ok(())
        }
    }
}
