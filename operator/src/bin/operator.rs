//! `operator`: the manager that runs the Stack, Program, Workspace and Update controllers.

use operator::manager::{self, Flags};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse_pko(std::env::args_os());
    manager::init_logging(&flags);
    manager::run(flags).await?;
    Ok(())
}
