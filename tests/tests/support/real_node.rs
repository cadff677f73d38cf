//! A control plane with one real node (e2e::node) instead of the test kubelet: the registry on
//! the node network's gateway holds the images a user would run (ours, built from our
//! Dockerfiles, and a Pulumi image), and the operator runs as a host process under its own
//! RBAC with those images configured, as config/manager configures them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use e2e::ControlPlane;
use e2e::control_plane::Options;
use e2e::images::{self, Buildah};
use e2e::in_cluster;
use e2e::node::{Node, NodeConfig, NodeNetwork};
use e2e::registry::Registry;

use super::operator::{self, Operator};

/// The images pushed to the cluster's registry, fully qualified.
pub struct Images {
    pub fetch: String,
    /// The operator image: `/operator` and `/agent` (the workspace pod's bootstrap).
    pub operator: String,
    pub pulumi: String,
}

/// Dropped in field order: the node before the registry, the control plane and the network.
pub struct RealCluster {
    pub node: Node,
    pub registry: Registry,
    pub images: Images,
    pub cp: ControlPlane,
    pub network: NodeNetwork,
}

impl RealCluster {
    /// The node network, a control plane advertising its gateway, the registry on the
    /// gateway with our images and the Pulumi image, and node `e2e-node-1`, Ready.
    pub async fn start() -> RealCluster {
        let network = NodeNetwork::create().expect("node network");
        let gateway = network.gateway();
        let cp = ControlPlane::start_with(Options {
            advertise: Some(gateway),
        })
        .await
        .expect("control plane");
        let registry = Registry::start_on(cp.dir(), IpAddr::V4(gateway)).expect("registry");
        let buildah = Buildah::new(cp.dir()).expect("buildah");
        let pause = images::pause_image(&buildah, &registry).expect("pause image");
        let images = Images {
            fetch: images::fetch_image(&buildah, &registry).expect("fetch image"),
            operator: images::operator_image(&buildah, &registry).expect("operator image"),
            pulumi: images::pulumi_image(&buildah, &registry, &operator::pulumi_dir())
                .expect("pulumi image"),
        };
        let node = Node::start(
            &cp,
            &network,
            NodeConfig {
                index: 1,
                pause_image: pause,
                registry: registry.addr().to_string(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("node: {e}"));
        RealCluster {
            node,
            registry,
            images,
            cp,
            network,
        }
    }

    /// CoreDNS (as `kube-dns`), Flux's source-controller (in `flux-system`) and this operator
    /// (`config/default`) in the cluster, as users install them, from images built here and
    /// pushed to the cluster's registry.
    pub async fn install_in_cluster(&mut self) {
        let buildah = Buildah::new(self.cp.dir()).expect("buildah");
        let dir_of = |tool: &str, binary: &str| {
            let dirs = e2e::tools::dirs(&[tool]).expect("tool built");
            e2e::tools::find(&dirs, binary)
                .expect("binary")
                .parent()
                .expect("dir")
                .to_path_buf()
        };
        let flux_dir = dir_of("flux", "source-controller");
        let coredns =
            images::coredns_image(&buildah, &self.registry, &dir_of("coredns", "coredns"))
                .expect("coredns image");
        let source_controller =
            images::source_controller_image(&buildah, &self.registry, &flux_dir)
                .expect("source-controller image");
        in_cluster::install_coredns(&self.cp, &mut self.node, &coredns)
            .await
            .unwrap_or_else(|e| panic!("CoreDNS: {e}"));
        in_cluster::install_source_controller(
            &self.cp,
            &mut self.node,
            &flux_dir,
            &source_controller,
        )
        .await
        .unwrap_or_else(|e| panic!("source-controller: {e}"));
        in_cluster::install_operator(
            &self.cp,
            &mut self.node,
            &self.images.operator,
            &self.images.fetch,
        )
        .await
        .unwrap_or_else(|e| panic!("operator: {e}"));
    }

    /// The in-cluster operator's log (tail).
    pub fn operator_log(&self) -> String {
        self.kubectl(&[
            "logs",
            "-n",
            in_cluster::OPERATOR_NAMESPACE,
            "deploy/controller-manager",
            "--tail=60",
        ])
        .unwrap_or_else(|e| e)
    }

    /// Installs the operator (CRDs, config/rbac, the workspace service account) and starts it
    /// with this cluster's images.
    pub async fn start_operator(&self) -> (Operator, PathBuf) {
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

    /// `kubectl <args>` against this cluster: stdout, or the failure with the node's logs.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(self.cp.tool("kubectl").expect("kubectl"))
            .arg(format!("--kubeconfig={}", self.cp.kubeconfig().display()))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.node.diagnose()
            ))
        }
    }

    /// Waits until pod `default/name` is Ready, failing with the node's view of it.
    pub async fn wait_pod_ready(&mut self, name: &str, limit: Duration) {
        let client = self.cp.client();
        self.node
            .wait_pod_ready(&client, "default", name, limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
