use clap::Parser;
use hatchway_operator::{Args, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Crd => hatchway_operator::print_crd(&mut std::io::stdout().lock())?,
        Command::Run(run) => hatchway_operator::serve::run(*run).await?,
        Command::Uninstall(uninstall) => {
            hatchway_operator::serve::init_logging("text");
            let client = kube::Client::try_default().await?;
            hatchway_operator::uninstall::run(client, &uninstall).await?
        }
        Command::Check(check) => hatchway_operator::check::run(&check).await?,
    }
    Ok(())
}
