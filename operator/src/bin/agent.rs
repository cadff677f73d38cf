//! `agent`: the workspace pod's gRPC server (`serve`) and its bootstrap copy step.

use std::process::ExitCode;

use clap::Parser;
use operator::agent::{self, Cli, Command};

/// Where Kubernetes reads a container's last words (`kubectl describe pod`).
const TERMINATION_LOG: &str = "/dev/termination-log";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    agent::init_logging(cli.verbose, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => agent::serve(args, cli.kubeconfig).await,
        Command::Bootstrap { target } => agent::bootstrap(&target),
        Command::Link { target, link } => agent::link(&target, &link),
        Command::InitProject {
            target_dir,
            project_name,
            project_runtime,
        } => agent::init_project(&target_dir, &project_name, &project_runtime),
        Command::Version => {
            println!("agent {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("agent: {e}");
            eprintln!("{msg}");
            if std::path::Path::new(TERMINATION_LOG).exists() {
                let _ = std::fs::write(TERMINATION_LOG, &msg);
            }
            ExitCode::FAILURE
        }
    }
}
