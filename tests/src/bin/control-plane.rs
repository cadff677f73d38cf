//! Starts a local cluster and keeps it running until Ctrl-C, to poke at it with kubectl:
//!
//!   cargo run -p e2e --bin control-plane
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and one real node
//! (containerd, runc, the kubelet, kube-proxy) pulling from a loopback registry that holds our
//! images (built from our Dockerfiles) and a Pulumi image; CoreDNS, Flux's source-controller and
//! this operator installed in the cluster as users install them (e2e::cluster).

use anyhow::Context as _;
use e2e::cluster::Cluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eprintln!("building or finding the tools and images, starting the cluster…");
    let mut cluster = Cluster::start().await.context("starting the cluster")?;
    cluster
        .install_in_cluster()
        .await
        .context("installing CoreDNS, source-controller and the operator")?;
    let cp = &cluster.cp;
    println!("cluster up: {}", cp.url());
    println!("  export KUBECONFIG={}", cp.kubeconfig().display());
    println!(
        "  export PATH={}:$PATH",
        cp.tool_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    println!(
        "  node {} ({}), registry {}:",
        cluster.node.name(),
        cluster.node.ip(),
        cluster.registry.addr()
    );
    for image in [
        &cluster.images.fetch,
        &cluster.images.operator,
        &cluster.images.pulumi,
    ] {
        println!("    {image}");
    }
    println!(
        "  logs: {}/logs (control plane), {}/logs (node), {}/pod-logs (containers)",
        cp.dir().display(),
        cluster.node.dir().display(),
        cluster.node.dir().display()
    );
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(cluster);
    Ok(())
}
