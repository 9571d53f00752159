use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = hatchway_sidecar::Args::parse();
    hatchway_sidecar::run(args, &mut std::io::stdout().lock())?;
    Ok(())
}
