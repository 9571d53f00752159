use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = kubectl_hatch::Args::parse();
    kubectl_hatch::run(args, &mut std::io::stdout().lock())?;
    Ok(())
}
