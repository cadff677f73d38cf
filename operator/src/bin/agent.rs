//! `agent`: the workspace pod's gRPC server (`serve`) and its bootstrap copy step.

use clap::Parser;
use operator::agent::{self, Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    agent::init_logging(cli.verbose, cli.log_format);
    match cli.command {
        Command::Serve(args) => agent::serve(args, cli.kubeconfig).await?,
        Command::Bootstrap { target } => agent::bootstrap(&target)?,
        Command::Link { target, link } => agent::link(&target, &link)?,
        Command::InitProject {
            target_dir,
            project_name,
            project_runtime,
        } => agent::init_project(&target_dir, &project_name, &project_runtime)?,
        Command::Version => println!("agent {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
