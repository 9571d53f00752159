use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = hatchway_operator::Args::parse();
    hatchway_operator::run(args, &mut std::io::stdout().lock())?;
    Ok(())
}
