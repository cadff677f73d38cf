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

/// How [`Cluster::start_with`] makes the cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterOptions {
    /// Every node runs kube-router's firewall controller, so NetworkPolicies are enforced.
    pub enforce_network_policy: bool,
}

/// Dropped in field order: the nodes before the registry, the control plane and the network.
pub struct Cluster {
    /// The first node, `e2e-node-1`.
    pub node: Node,
    /// Nodes added by [`Cluster::add_node`]: `e2e-node-2`, ...
    pub more_nodes: Vec<Node>,
    pub registry: Registry,
    pub images: Images,
    pub cp: ControlPlane,
    pub network: NodeNetwork,
    options: ClusterOptions,
    pause_image: String,
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
        Cluster::start_with(ClusterOptions::default()).await
    }

    /// [`Cluster::start`], made as `options` say.
    pub async fn start_with(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let network = NodeNetwork::create()?;
        let gateway = network.gateway();
        let cp = ControlPlane::start_with(Options {
            advertise: Some(gateway),
            ..Options::default()
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
                pause_image: pause.clone(),
                registry: registry.addr().to_string(),
                enforce_network_policy: options.enforce_network_policy,
            },
        )
        .await?;
        Ok(Cluster {
            node,
            more_nodes: Vec::new(),
            registry,
            images,
            cp,
            network,
            options,
            pause_image: pause,
        })
    }

    /// Starts the next node (`e2e-node-2`, ...) like the first, with routes between its pod
    /// subnet and every other node's over the bridge, and waits until it is Ready. Its name.
    pub async fn add_node(&mut self) -> Result<String, ClusterError> {
        let index = u8::try_from(self.more_nodes.len() + 2).unwrap_or(u8::MAX);
        let node = Node::start(
            &self.cp,
            &self.network,
            NodeConfig {
                index,
                pause_image: self.pause_image.clone(),
                registry: self.registry.addr().to_string(),
                enforce_network_policy: self.options.enforce_network_policy,
            },
        )
        .await?;
        for other in std::iter::once(&self.node).chain(&self.more_nodes) {
            other.route_to(&node)?;
            node.route_to(other)?;
        }
        let name = node.name().to_string();
        self.more_nodes.push(node);
        Ok(name)
    }

    /// CoreDNS (as `kube-dns`), Flux's source-controller (in `flux-system`) and this operator
    /// (`config/default`) in the cluster, as users install them, from images built here and
    /// pushed to the cluster's registry.
    pub async fn install_in_cluster(&mut self) -> Result<(), ClusterError> {
        self.install_dependencies().await?;
        in_cluster::install_operator(
            &self.cp,
            &mut self.node,
            &self.images.operator,
            &self.images.fetch,
        )
        .await?;
        Ok(())
    }

    /// What the operator needs around it: CoreDNS (as `kube-dns`) and Flux's source-controller
    /// (in `flux-system`), as users install them; the operator is left to the caller.
    pub async fn install_dependencies(&mut self) -> Result<(), ClusterError> {
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
        Ok(())
    }

    /// Flux's kustomize-controller (in `flux-system`, beside source-controller), as
    /// [`Cluster::install_dependencies`] installs source-controller.
    pub async fn install_kustomize_controller(&mut self) -> Result<(), ClusterError> {
        let buildah = Buildah::new(self.cp.dir())?;
        let dir = tool_dir("kustomize-controller", "kustomize-controller")?;
        let image = images::kustomize_controller_image(&buildah, &self.registry, &dir)?;
        in_cluster::install_kustomize_controller(&self.cp, &mut self.node, &dir, &image).await?;
        Ok(())
    }

    /// The workspace image with the Pulumi Kubernetes provider installed
    /// ([`images::pulumi_kubernetes_image`]), built and pushed to the cluster's registry
    /// (again on each call): for programs that manage objects in this cluster.
    pub fn pulumi_kubernetes_image(&self) -> Result<String, ClusterError> {
        let buildah = Buildah::new(self.cp.dir())?;
        Ok(images::pulumi_kubernetes_image(
            &buildah,
            &self.registry,
            &tool_dir("pulumi", "pulumi")?,
            &tool_dir("pulumi-kubernetes", "pulumi-resource-kubernetes")?,
            &tools::pulumi_kubernetes_version()?,
        )?)
    }

    /// `kubectl <args>` against this cluster: stdout, or the failure with the nodes' logs.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.cp
            .kubectl(args)
            .map_err(|e| format!("{e}{}", self.diagnose()))
    }

    /// The last lines of every node's logs, for a failure.
    pub fn diagnose(&self) -> String {
        std::iter::once(&self.node)
            .chain(&self.more_nodes)
            .map(Node::diagnose)
            .collect()
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
