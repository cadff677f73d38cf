//! Serves the bare repositories in `<root>/repos` over smart HTTP with basic auth until killed
//! (the harness's git server, for benchmarks and poking by hand):
//!
//!   git-serve ROOT USER PASSWORD [PORT]
//!
//! Prints the base URL on stdout.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context as _;
use e2e::git_server::{Credentials, GitServer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, user, password, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: git-serve ROOT USER PASSWORD [PORT]");
    };
    let port: u16 = match rest.first() {
        Some(p) => p.parse().context("PORT must be a number")?,
        None => 0,
    };
    let server = GitServer::serve(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        &PathBuf::from(root),
        Credentials {
            username: user.clone(),
            password: password.clone(),
        },
    )
    .context("starting the git server")?;
    println!("http://{}", server.addr());
    loop {
        std::thread::park();
    }
}
