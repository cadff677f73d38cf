//! Starts the local control plane and keeps it running until Ctrl-C, to poke at it with kubectl:
//!
//!   cargo run -p e2e --bin control-plane
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler, our CRDs and Flux's, Flux's
//! source-controller and a test kubelet (node `e2e-node`; the fetch image maps to the `fetch`
//! binary next to this one when it is built).

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Context as _;
use e2e::ControlPlane;
use e2e::kubelet::{Image, Kubelet};
use e2e::source_controller::SourceController;

const FETCH_IMAGE: &str = "ghcr.io/example/pulumi-flux-operator-fetch:0.1.0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eprintln!("building or finding the tools, starting the control plane…");
    let cp = ControlPlane::start()
        .await
        .context("starting the control plane")?;
    cp.install_project_crds()
        .await
        .context("installing our CRDs")?;
    cp.install_flux_crds()
        .await
        .context("installing Flux's CRDs")?;
    let gateway = IpAddr::V4(cp.network().gateway());
    let sc = SourceController::start(&cp, gateway)
        .await
        .context("starting source-controller")?;
    let mut images = HashMap::new();
    if let Some(fetch) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fetch")))
        .filter(|p| p.is_file())
    {
        images.insert(
            FETCH_IMAGE.to_string(),
            Image::binary(fetch, "/fetch").with_user(65532),
        );
    }
    images.insert("e2e.local/shell:1".to_string(), Image::default());
    let kubelet = Kubelet::start(&cp, "e2e-node", images)
        .await
        .context("starting the test kubelet")?;

    println!("control plane up: {}", cp.url());
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
        "  source-controller artifacts: http://{}",
        sc.storage_addr()
    );
    println!(
        "  logs: {}/logs, pod logs: {}/pods/<uid>/logs",
        cp.dir().display(),
        kubelet.dir().display()
    );
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(kubelet);
    drop(sc);
    drop(cp);
    Ok(())
}
