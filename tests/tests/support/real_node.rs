//! The tests' side of [`e2e::cluster::Cluster`] (a control plane with one real node and a
//! registry of our images): starting it or failing the test, and running this operator as a
//! host process under its own RBAC with the cluster's images, as config/manager configures
//! them (for tests that read the operator's log and metrics from the host).

use std::future::Future;
use std::path::PathBuf;

pub use e2e::cluster::Cluster as RealCluster;

use super::operator::{self, Operator};

/// Starts the cluster, or fails the test with why.
pub async fn start() -> RealCluster {
    RealCluster::start()
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"))
}

/// Starts the cluster and installs CoreDNS, source-controller and this operator in it, as
/// users install them; or fails the test with why.
pub async fn start_installed() -> RealCluster {
    let mut rc = start().await;
    rc.install_in_cluster()
        .await
        .unwrap_or_else(|e| panic!("installing in the cluster: {e}"));
    rc
}

/// The in-cluster operator's whole log (every container start), to search it.
pub fn operator_log_all(rc: &RealCluster) -> String {
    rc.kubectl(&[
        "logs",
        "-n",
        e2e::in_cluster::OPERATOR_NAMESPACE,
        "deploy/controller-manager",
    ])
    .unwrap_or_else(|e| e)
}

/// What the in-cluster operator's metrics endpoint serves (its pod's port 8383, from the
/// host: pod IPs are routed to the node).
pub async fn operator_metrics(rc: &RealCluster) -> String {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let pods = Api::<Pod>::namespaced(rc.cp.client(), e2e::in_cluster::OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels("control-plane=controller-manager"))
        .await
        .expect("operator pods");
    let ip = pods
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("the operator pod's IP");
    operator::http_get(&format!("http://{ip}:8383/metrics"))
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

pub trait HostOperator {
    /// Installs the operator (CRDs, config/rbac, the workspace service account) and starts it
    /// as a host process with this cluster's images; returns it and its kubeconfig.
    fn start_operator(&self) -> impl Future<Output = (Operator, PathBuf)>;
}

impl HostOperator for RealCluster {
    async fn start_operator(&self) -> (Operator, PathBuf) {
        let kubeconfig = operator::install(&self.cp).await;
        let op = operator::start_on(
            &self.cp,
            &kubeconfig,
            &[
                ("FETCH_IMAGE", &self.images.fetch),
                ("AGENT_IMAGE", &self.images.operator),
            ],
            self.network.gateway(),
        )
        .await;
        (op, kubeconfig)
    }
}
