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
