//! A whole local cluster on this machine: the control plane, one real node ([`crate::node`]),
//! and a registry on the node network's gateway holding the images a user would run (ours,
//! built from our Dockerfiles, a Pulumi image, and the sandbox image). What every test that
//! runs pods starts from; [`Cluster::install_in_cluster`] adds CoreDNS, Flux's
//! source-controller and this operator as users install them.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::ControlPlane;
use crate::control_plane::{self, Options};
use crate::images::{self, Buildah, ImagesError};
use crate::in_cluster::{self, InstallError};
use crate::node::{Node, NodeConfig, NodeError, NodeNetwork};
use crate::registry::{Registry, RegistryError};
use crate::tools::{self, ToolsError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    ControlPlane(#[from] control_plane::Error),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(transparent)]
    Tools(#[from] ToolsError),
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// The images pushed to the cluster's registry, fully qualified.
pub struct Images {
    pub fetch: String,
    /// The operator image: `/operator` and `/agent` (the workspace pod's bootstrap).
    pub operator: String,
    pub pulumi: String,
}

/// Dropped in field order: the node before the registry, the control plane and the network.
pub struct Cluster {
    pub node: Node,
    pub registry: Registry,
    pub images: Images,
    pub cp: ControlPlane,
    pub network: NodeNetwork,
}

/// The directory of an upstream tool's binary (tests/tools/build.sh builds it if needed).
pub fn tool_dir(tool: &str, binary: &str) -> Result<PathBuf, ToolsError> {
    let dirs = tools::dirs(&[tool])?;
    let path = tools::find(&dirs, binary)?;
    Ok(path.parent().map(PathBuf::from).unwrap_or_default())
}

impl Cluster {
    /// The node network, a control plane advertising its gateway, the registry on the
    /// gateway with our images and the Pulumi image, and node `e2e-node-1`, Ready.
    pub async fn start() -> Result<Cluster, ClusterError> {
        let network = NodeNetwork::create()?;
        let gateway = network.gateway();
        let cp = ControlPlane::start_with(Options {
            advertise: Some(gateway),
        })
        .await?;
        let registry = Registry::start_on(cp.dir(), IpAddr::V4(gateway))?;
        let buildah = Buildah::new(cp.dir())?;
        let pause = images::pause_image(&buildah, &registry)?;
        let images = Images {
            fetch: images::fetch_image(&buildah, &registry)?,
            operator: images::operator_image(&buildah, &registry)?,
            pulumi: images::pulumi_image(&buildah, &registry, &tool_dir("pulumi", "pulumi")?)?,
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
        .await?;
        Ok(Cluster {
            node,
            registry,
            images,
            cp,
            network,
        })
    }

    /// CoreDNS (as `kube-dns`), Flux's source-controller (in `flux-system`) and this operator
    /// (`config/default`) in the cluster, as users install them, from images built here and
    /// pushed to the cluster's registry.
    pub async fn install_in_cluster(&mut self) -> Result<(), ClusterError> {
        let buildah = Buildah::new(self.cp.dir())?;
        let flux_dir = tool_dir("flux", "source-controller")?;
        let coredns =
            images::coredns_image(&buildah, &self.registry, &tool_dir("coredns", "coredns")?)?;
        let source_controller =
            images::source_controller_image(&buildah, &self.registry, &flux_dir)?;
        in_cluster::install_coredns(&self.cp, &mut self.node, &coredns).await?;
        in_cluster::install_source_controller(
            &self.cp,
            &mut self.node,
            &flux_dir,
            &source_controller,
        )
        .await?;
        in_cluster::install_operator(
            &self.cp,
            &mut self.node,
            &self.images.operator,
            &self.images.fetch,
        )
        .await?;
        Ok(())
    }

    /// `kubectl <args>` against this cluster: stdout, or the failure with the node's logs.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.cp
            .kubectl(args)
            .map_err(|e| format!("{e}{}", self.node.diagnose()))
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
}
