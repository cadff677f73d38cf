//! Real Kubernetes nodes on this machine: for each node a network namespace on a bridge, and in
//! it containerd (with runc and the CNI bridge plugin, Debian's packages), the kubelet and
//! kube-proxy built from the control plane's own Kubernetes pin, and, when asked, kube-router's
//! firewall controller enforcing NetworkPolicy. Pods run as real containers from images in a
//! registry, and `kubectl logs`, `exec` and Service VIPs work as in a cluster.
//!
//! `../shared/reference/real-nodes.md` says why it is shaped this way; the two things that
//! matter most on this machine: containerd must not lower the OOM score of pod sandboxes
//! (`restrict_oom_score_adj`: root lacks `CAP_SYS_RESOURCE` here), and every node process is
//! started with `nsenter --net` (its network namespace only: `ip netns exec` would also hide
//! the cgroup mounts).
//!
//! Addresses: a [`NodeNetwork`] with index N owns the bridge `e2enb<N>` with `172.30.N.1/24`
//! (the gateway: the apiserver, the registry and other host processes are reached there), its
//! node k has `172.30.N.(k+1)` and the pod subnet `10.(100+N).k.0/24`, routed from the host via
//! the node's address. Nothing overlaps the services' `10.0.0.0/24`.
//!
//! Stopping a node leaves nothing behind: no process, mount, network namespace, route,
//! iptables rule (every rule a node makes is inside its namespace) or libcni cache entry; what
//! is left is an empty `/run/containerd/s`, where containerd 1.6 puts its shims' sockets
//! whatever its configuration. [`Leftovers`] checks it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node as NodeObject, Pod};
use kube::Client;
use kube::api::{Api, ListParams};

use crate::control_plane::ControlPlane;
use crate::pki::PkiError;
use crate::process::{self, Process, ProcessError};
use crate::tools::{self, ToolsError};

/// Where Debian's containernetworking-plugins are.
const CNI_BIN: &str = "/usr/lib/cni";
/// Where libcni (in containerd) caches each attachment's result.
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// The kubelet's port on its node address (the apiserver's logs and exec go there).
const KUBELET_PORT: u16 = 10250;
/// kube-router's health port on its node address (`/healthz`: 200 once its informers synced).
const KUBE_ROUTER_HEALTH_PORT: u16 = 20244;
/// The identity kube-router's client certificate carries, bound to [`KUBE_ROUTER_RBAC`].
const KUBE_ROUTER_USER: &str = "e2e:kube-router";
/// What kube-router's firewall controller reads (its informers), and nothing more.
const KUBE_ROUTER_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "e2e:kube-router"}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "e2e:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "e2e:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "e2e:kube-router"}]
"#;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Tools(#[from] ToolsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    ControlPlane(#[from] crate::control_plane::Error),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {0} (scripts/setup.sh installs it)")]
    Spawn(String, #[source] std::io::Error),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error(
        "no free node network among e2enb1..e2enb99 (stale bridges from a killed test? `ip link del` them)"
    )]
    NoNetwork,
    #[error("{what} within {secs}s{detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("pod {pod} cannot start: {reason}: {message}{detail}")]
    PodFailed {
        pod: String,
        reason: String,
        message: String,
        detail: String,
    },
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, NodeError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NodeError::Spawn(program.into(), e))?;
    if !out.status.success() {
        return Err(NodeError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, NodeError> {
    run("ip", args)
}

fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NodeError::Write(parent.into(), e))?;
    }
    std::fs::write(path, text).map_err(|e| NodeError::Write(path.into(), e))
}

/// The bridge real nodes are joined to, with the gateway address host processes listen on.
pub struct NodeNetwork {
    index: u8,
    bridge: String,
}

impl NodeNetwork {
    /// Creates the bridge `e2enb<N>` with `172.30.N.1/24` for the first free N (creating the
    /// bridge is the lock, so parallel tests get separate networks).
    pub fn create() -> Result<NodeNetwork, NodeError> {
        for index in 1..=99u8 {
            let bridge = format!("e2enb{index}");
            if ip(&["link", "add", "name", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let net = NodeNetwork { index, bridge };
            ip(&[
                "addr",
                "add",
                &format!("{}/24", net.gateway()),
                "dev",
                &net.bridge,
            ])?;
            ip(&["link", "set", &net.bridge, "up"])?;
            return Ok(net);
        }
        Err(NodeError::NoNetwork)
    }

    /// The host's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, self.index, 1)
    }

    /// Every node's pod subnets together (kube-proxy's `clusterCIDR`).
    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", 100 + u16::from(self.index))
    }

    fn node_ip(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, self.index, k + 1)
    }

    fn pod_subnet(&self, k: u8) -> String {
        format!("10.{}.{k}.0/24", 100 + u16::from(self.index))
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Gives the host a further address `172.30.N.<last>` on the bridge, for tests that need
    /// callers the pods tell apart by address (gone with the bridge). `last` must not be a
    /// node's (2 and up, one per node): 200 and up are left for this.
    pub fn add_host_address(&self, last: u8) -> Result<Ipv4Addr, NodeError> {
        let addr = Ipv4Addr::new(172, 30, self.index, last);
        ip(&["addr", "add", &format!("{addr}/24"), "dev", &self.bridge])?;
        Ok(addr)
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// What a node needs besides the control plane and its network.
pub struct NodeConfig {
    /// 1..=9: the node's address and pod subnet within its network.
    pub index: u8,
    /// The sandbox image, fully qualified (a short name is not found by CRI pulls).
    pub pause_image: String,
    /// `host:port` of a plain-HTTP registry the node pulls from.
    pub registry: String,
    /// Runs kube-router's firewall controller on the node, so NetworkPolicies are enforced
    /// for its pods (tool `kube-router`).
    pub enforce_network_policy: bool,
}

/// One running node. Dropping it stops it (see [`Node::stop`]).
pub struct Node {
    name: String,
    ip: Ipv4Addr,
    pod_subnet: String,
    netns: String,
    dir: PathBuf,
    socket: PathBuf,
    kube_proxy: Option<Process>,
    kube_router: Option<Process>,
    kubelet: Option<Process>,
    containerd: Option<Process>,
    /// The containers' init processes found at stop, for [`Leftovers`].
    task_pids: Vec<u32>,
    /// The pods' network namespaces (`cni-*`) found at stop, for [`Leftovers`].
    pod_netns: Vec<String>,
    stopped: bool,
}

impl Node {
    /// Starts node `e2e-node-<index>` of `network` for `cp` (started with `network`'s
    /// gateway as its advertise address), and waits until it is Ready.
    pub async fn start(
        cp: &ControlPlane,
        network: &NodeNetwork,
        config: NodeConfig,
    ) -> Result<Node, NodeError> {
        let k = config.index;
        let name = format!("e2e-node-{k}");
        let dir = cp.dir().join("nodes").join(&name);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| NodeError::Write(logs.clone(), e))?;
        let bins = tools::dirs(&["node"])?;
        let ip_addr = network.node_ip(k);
        let mut node = Node {
            name: name.clone(),
            ip: ip_addr,
            pod_subnet: network.pod_subnet(k),
            netns: format!("e2en{}k{k}", network.index),
            socket: dir.join("containerd/containerd.sock"),
            dir: dir.clone(),
            kube_proxy: None,
            kube_router: None,
            kubelet: None,
            containerd: None,
            task_pids: Vec::new(),
            pod_netns: Vec::new(),
            stopped: false,
        };
        // From here on a failure drops `node`, which undoes whatever was made.
        node.plumb(network)?;
        let netns_path = format!("/var/run/netns/{}", node.netns);
        let in_netns = |program: &Path| {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={netns_path}"))
                .arg("--")
                .arg(program);
            cmd
        };

        // containerd
        let containerd_dir = dir.join("containerd");
        let registry_dir = containerd_dir.join("certs.d").join(&config.registry);
        write(
            &registry_dir.join("hosts.toml"),
            &format!(
                "server = \"http://{r}\"\n\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                r = config.registry
            ),
        )?;
        let cni_conf = dir.join("cni/net.d");
        write(
            &cni_conf.join("10-e2e.conflist"),
            &serde_json::json!({
                "cniVersion": "0.4.0",
                // libcni caches results under /var/lib/cni/results by network name: a name of
                // the node's own lets stop() find what it left there.
                "name": node.netns,
                "plugins": [
                    {
                        "type": "bridge", "bridge": "cni0", "isGateway": true,
                        // Not the plugin's masquerade (everything off the node's subnet): pod to
                        // pod traffic across nodes must keep its source address, or
                        // NetworkPolicy sees the node. plumb() masquerades the rest.
                        "ipMasq": false,
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": node.pod_subnet}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": dir.join("cni/ipam"),
                        }
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
            .to_string(),
        )?;
        let containerd_toml = containerd_dir.join("config.toml");
        write(
            &containerd_toml,
            &containerd_config(
                &containerd_dir,
                &node.socket,
                &config.pause_image,
                &cni_conf,
            ),
        )?;
        let mut cmd = in_netns(Path::new("containerd"));
        cmd.arg("--config").arg(&containerd_toml);
        node.containerd = Some(Process::spawn("containerd", cmd, &logs)?);
        node.wait_containerd().await?;

        // kubeconfigs for the kubelet (its node identity) and kube-proxy
        let pki = cp.pki();
        let server = cp.url_at(network.gateway());
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(|e| NodeError::Write(pki_dir.clone(), e))?;
        let kubelet_cert = pki.client(
            &pki_dir,
            "kubelet-client",
            &format!("system:node:{name}"),
            Some("system:nodes"),
        )?;
        let kubelet_kubeconfig = pki_dir.join("kubelet.kubeconfig");
        write(
            &kubelet_kubeconfig,
            &kubeconfig(&server, &pki.ca_cert, &kubelet_cert.cert, &kubelet_cert.key),
        )?;
        let proxy_cert = pki.client(&pki_dir, "kube-proxy-client", "system:kube-proxy", None)?;
        let proxy_kubeconfig = pki_dir.join("kube-proxy.kubeconfig");
        write(
            &proxy_kubeconfig,
            &kubeconfig(&server, &pki.ca_cert, &proxy_cert.cert, &proxy_cert.key),
        )?;

        // kubelet
        let kubelet_yaml = dir.join("kubelet.yaml");
        write(
            &kubelet_yaml,
            &kubelet_config(&node, &pki.ca_cert, &dir.join("pod-logs")),
        )?;
        let mut cmd = in_netns(&tools::find(&bins, "kubelet")?);
        cmd.arg(format!("--config={}", kubelet_yaml.display()))
            .arg(format!("--kubeconfig={}", kubelet_kubeconfig.display()))
            .arg(format!("--hostname-override={name}"))
            .arg(format!("--node-ip={ip_addr}"))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet/pki").display()))
            .arg("--v=1");
        node.kubelet = Some(Process::spawn("kubelet", cmd, &logs)?);

        // kube-proxy
        let proxy_yaml = dir.join("kube-proxy.yaml");
        write(
            &proxy_yaml,
            &format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 mode: iptables\nclusterCIDR: {cidr}\nhostnameOverride: {name}\n\
                 bindAddress: {ip_addr}\nhealthzBindAddress: {ip_addr}:10256\n\
                 metricsBindAddress: {ip_addr}:10249\n\
                 clientConnection:\n  kubeconfig: {kc}\n\
                 # It may not write the host's conntrack sysctls.\n\
                 conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n\
                 # A failed sync is retried after this (30 s by default).\n\
                 iptables:\n  syncPeriod: 10s\n",
                cidr = network.cluster_cidr(),
                kc = proxy_kubeconfig.display(),
            ),
        )?;
        let mut cmd = in_netns(&tools::find(&bins, "kube-proxy")?);
        cmd.arg(format!("--config={}", proxy_yaml.display()))
            .arg("--v=1");
        node.kube_proxy = Some(Process::spawn("kube-proxy", cmd, &logs)?);

        node.wait_ready(&cp.client(), Duration::from_secs(90))
            .await?;
        // kube-proxy's first sync before anything else writes the node's iptables: a sync that
        // races kube-router's start fails ("Chain 'KUBE-PROXY-FIREWALL' does not exist") and
        // leaves the node without Service rules (cluster DNS unreachable) until it is retried.
        node.wait_kube_proxy_synced(Duration::from_secs(60)).await?;
        // After Ready: kube-router looks its Node object up once, at start.
        if config.enforce_network_policy {
            // kube-router v2.1.0 has reported security flaws: acceptable only because it runs
            // here, inside a throwaway cluster on this machine's loopback bridge, to check our
            // NetworkPolicies against a real enforcer. Only its firewall controller runs;
            // routes and Services stay with the harness and kube-proxy.
            let bin = tools::find(&tools::dirs(&["kube-router"])?, "kube-router")?;
            cp.apply_yaml(KUBE_ROUTER_RBAC, "kube-router RBAC", "default")
                .await?;
            let cert = pki.client(&pki_dir, "kube-router-client", KUBE_ROUTER_USER, None)?;
            let kc = pki_dir.join("kube-router.kubeconfig");
            write(
                &kc,
                &kubeconfig(&server, &pki.ca_cert, &cert.cert, &cert.key),
            )?;
            let mut cmd = in_netns(&bin);
            cmd.args([
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--metrics-port=0",
            ])
            .arg(format!("--health-port={KUBE_ROUTER_HEALTH_PORT}"))
            .arg(format!("--kubeconfig={}", kc.display()))
            .arg(format!("--hostname-override={name}"))
            .arg(format!(
                "--service-cluster-ip-range={}",
                crate::control_plane::SERVICE_CIDR
            ))
            .arg("--v=1");
            node.kube_router = Some(Process::spawn("kube-router", cmd, &logs)?);
            node.wait_kube_router(Duration::from_secs(60)).await?;
        }

        Ok(node)
    }

    /// Routes this node's traffic for `other`'s pods straight to `other` over the bridge, as
    /// kindnetd does (without it, it would go through the host).
    pub fn route_to(&self, other: &Node) -> Result<(), NodeError> {
        ip(&[
            "-n",
            &self.netns,
            "route",
            "add",
            &other.pod_subnet,
            "via",
            &other.ip.to_string(),
        ])?;
        Ok(())
    }

    /// The node's iptables rules of `table` (`iptables-save -t`), as kube-proxy and
    /// kube-router wrote them in its network namespace.
    pub fn iptables(&self, table: &str) -> Result<String, NodeError> {
        let netns = format!("--net=/var/run/netns/{}", self.netns);
        run("nsenter", &[&netns, "--", "iptables-save", "-t", table])
    }

    /// Runs `iptables <args>` in the network namespace of a pod, found by one of its running
    /// containers (`containerd://<id>` as the pod's status has it): a fault between that pod
    /// and its peers, made where a node's firewall would make it.
    pub fn pod_iptables(&self, container: &str, args: &[&str]) -> Result<String, NodeError> {
        self.in_pod_netns(container, "iptables", args)
    }

    /// Runs `program <args>` in the network namespace of a pod, found by one of its running
    /// containers. `nsenter` by the task's pid, not `ip netns exec` (which remounts /sys and
    /// hides the cgroups).
    pub fn in_pod_netns(
        &self,
        container: &str,
        program: &str,
        args: &[&str],
    ) -> Result<String, NodeError> {
        let pid = self
            .task_pid(container)?
            .ok_or_else(|| NodeError::Command {
                command: format!("{program} {}", args.join(" ")),
                stderr: format!("containerd on {} runs no task {container}", self.name),
            })?;
        let netns = format!("--net=/proc/{pid}/ns/net");
        let mut argv = vec![netns.as_str(), "--", program];
        argv.extend_from_slice(args);
        run("nsenter", &argv)
    }

    /// Waits until kube-proxy has written the rules of the `kubernetes` Service (every
    /// cluster has it): its first sync went through.
    async fn wait_kube_proxy_synced(&mut self, limit: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.check_running()?;
            if self
                .iptables("nat")?
                .contains("default/kubernetes:https cluster IP")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(NodeError::Timeout {
            what: format!(
                "kube-proxy on {} did not write the kubernetes Service's rules",
                self.name
            ),
            secs: limit.as_secs(),
            detail: self.diagnose(),
        })
    }

    /// Waits until kube-router's health endpoint answers 200: its informers have synced and
    /// the firewall controller is running, so policies applied from now on are enforced.
    async fn wait_kube_router(&mut self, limit: Duration) -> Result<(), NodeError> {
        let url = format!("http://{}:{KUBE_ROUTER_HEALTH_PORT}/healthz", self.ip);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            self.check_running()?;
            match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(NodeError::Timeout {
            what: format!(
                "kube-router on {} was not healthy at {url} (last: {last})",
                self.name
            ),
            secs: limit.as_secs(),
            detail: self.diagnose(),
        })
    }

    /// The node's network namespace, its veth on the bridge, the bridge-netfilter setting
    /// kube-proxy needs for Service VIPs between pods of one node, and the host's route to the
    /// pod subnet.
    fn plumb(&mut self, network: &NodeNetwork) -> Result<(), NodeError> {
        let ns = self.netns.clone();
        let veth = format!("e2enh{}x{}", network.index, self.ip.octets()[3] - 1);
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &network.bridge, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let gw = network.gateway().to_string();
        ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
        // /proc/sys/net is the reading process's namespace: set these from inside it.
        let netns_arg = format!("--net=/var/run/netns/{ns}");
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.bridge.bridge-nf-call-iptables=1",
        ] {
            run(
                "nsenter",
                &[&netns_arg, "--", "sysctl", "-q", "-w", setting],
            )?;
        }
        // What leaves the cluster's pod addresses (for the host, the registry, the apiserver)
        // goes out as the node, as ip-masq-agent or kindnetd do; pod to pod keeps the pod's.
        run(
            "nsenter",
            &[
                &netns_arg,
                "--",
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                &self.pod_subnet,
                "!",
                "-d",
                &network.cluster_cidr(),
                "-j",
                "MASQUERADE",
            ],
        )?;
        ip(&[
            "route",
            "add",
            &self.pod_subnet,
            "via",
            &self.ip.to_string(),
        ])?;
        Ok(())
    }

    async fn wait_containerd(&mut self) -> Result<(), NodeError> {
        let secs = 30;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(p) = self.containerd.as_mut() {
                p.check_running()?;
            }
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(NodeError::Timeout {
            what: format!("containerd of {} did not answer", self.name),
            secs,
            detail: self.diagnose(),
        })
    }

    /// Waits for the Node's Ready condition; fails early if a node process exits.
    async fn wait_ready(&mut self, client: &Client, limit: Duration) -> Result<(), NodeError> {
        let nodes = Api::<NodeObject>::all(client.clone());
        let deadline = Instant::now() + limit;
        let mut last = "not registered".to_string();
        while Instant::now() < deadline {
            self.check_running()?;
            if let Ok(Some(n)) = nodes.get_opt(&self.name).await {
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready");
                match ready {
                    Some(c) if c.status == "True" => return Ok(()),
                    Some(c) => {
                        last = format!(
                            "Ready={} ({}: {})",
                            c.status,
                            c.reason.unwrap_or_default(),
                            c.message.unwrap_or_default()
                        )
                    }
                    None => last = "registered, no Ready condition yet".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(NodeError::Timeout {
            what: format!("node {} did not become Ready (last: {last})", self.name),
            secs: limit.as_secs(),
            detail: self.diagnose(),
        })
    }

    /// Fails with the end of its log if a node process has exited.
    pub fn check_running(&mut self) -> Result<(), NodeError> {
        for p in [
            &mut self.containerd,
            &mut self.kubelet,
            &mut self.kube_proxy,
            &mut self.kube_router,
        ]
        .into_iter()
        .flatten()
        {
            p.check_running()?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address on the bridge (its InternalIP).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn pod_subnet(&self) -> &str {
        &self.pod_subnet
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pids of containerd, the kubelet, kube-proxy and kube-router (for leftover checks).
    pub fn pids(&self) -> Vec<u32> {
        [
            &self.containerd,
            &self.kubelet,
            &self.kube_proxy,
            &self.kube_router,
        ]
        .into_iter()
        .flatten()
        .map(Process::pid)
        .collect()
    }

    /// The last lines of the kubelet's, containerd's and kube-proxy's logs, for a failure.
    pub fn diagnose(&self) -> String {
        let mut out = String::new();
        for (what, p) in [
            ("kubelet", &self.kubelet),
            ("containerd", &self.containerd),
            ("kube-proxy", &self.kube_proxy),
            ("kube-router", &self.kube_router),
        ] {
            if let Some(p) = p {
                out.push_str(&format!(
                    "\n--- last lines of {} log of {} ({}):\n{}",
                    what,
                    self.name,
                    p.log_path().display(),
                    process::tail(p.log_path(), 25)
                ));
            }
        }
        out
    }

    /// Waits until pod `namespace/name` is Ready. Fails at once when one of its containers
    /// cannot get its image (the registry lacks it, the name is invalid), and on time-out, in
    /// both cases with the pod's state, its events and the node's logs.
    pub async fn wait_pod_ready(
        &mut self,
        client: &Client,
        namespace: &str,
        name: &str,
        limit: Duration,
    ) -> Result<Pod, NodeError> {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        let deadline = Instant::now() + limit;
        let mut last = "not found".to_string();
        while Instant::now() < deadline {
            self.check_running()?;
            if let Ok(Some(pod)) = pods.get_opt(name).await {
                let status = pod.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(pod);
                }
                if let Some(failed) = self.image_failure(client, &pod).await {
                    return Err(failed);
                }
                last = format!("phase {}", status.phase.unwrap_or_else(|| "unknown".into()));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(NodeError::Timeout {
            what: format!("pod {namespace}/{name} was not Ready (last: {last})"),
            secs: limit.as_secs(),
            detail: self.pod_detail(client, namespace, name).await,
        })
    }

    /// Why a pod selected by `selector` in `namespace` cannot get an image
    /// ([`NodeError::PodFailed`]); None while none of them has such a failure.
    pub async fn pull_failure(
        &self,
        client: &Client,
        namespace: &str,
        selector: &str,
    ) -> Option<NodeError> {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        for pod in &pods.items {
            if let Some(failed) = self.image_failure(client, pod).await {
                return Some(failed);
            }
        }
        None
    }

    /// [`NodeError::PodFailed`] with the pod's state, events and the node's logs, when a
    /// container of `pod` cannot get its image.
    async fn image_failure(&self, client: &Client, pod: &Pod) -> Option<NodeError> {
        let (container, reason, message) = image_failure(pod)?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        Some(NodeError::PodFailed {
            pod: format!("{namespace}/{name}"),
            reason: format!("container {container}: {reason}"),
            message,
            detail: self.pod_detail(client, &namespace, &name).await,
        })
    }

    /// The pod's container states and events, then the node's logs.
    async fn pod_detail(&self, client: &Client, namespace: &str, name: &str) -> String {
        let mut out = String::new();
        if let Ok(Some(pod)) = Api::<Pod>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
        {
            let status = pod.status.unwrap_or_default();
            for cs in status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
            {
                out.push_str(&format!(
                    "\ncontainer {}: {}",
                    cs.name,
                    serde_json::to_string(&cs.state).unwrap_or_default()
                ));
            }
        }
        let events = Api::<Event>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await;
        if let Ok(events) = events {
            out.push_str("\nevents:");
            for e in events.items {
                out.push_str(&format!(
                    "\n  {} {}: {}",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                ));
            }
        }
        out.push_str(&self.diagnose());
        out
    }

    /// The pid containerd knows for the container `id` (`containerd://<id>` as a pod's status
    /// has it, or the bare id): None when it has no such task.
    pub fn task_pid(&self, id: &str) -> Result<Option<u32>, NodeError> {
        let id = id.strip_prefix("containerd://").unwrap_or(id);
        Ok(self
            .tasks()?
            .into_iter()
            .find_map(|(task, pid)| (task == id).then_some(pid)))
    }

    /// containerd's tasks: (container id, pid), from `ctr tasks ls` (`TASK PID STATUS`).
    fn tasks(&self) -> Result<Vec<(String, u32)>, NodeError> {
        let out = self.ctr(&["tasks", "ls"])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let id = cols.next()?.to_string();
                Some((id, cols.next()?.parse().ok()?))
            })
            .collect())
    }

    /// The `cni-*` network namespaces named in the OCI specs of containerd's containers.
    fn sandbox_namespaces(&self) -> Vec<String> {
        let ids = self.ctr(&["containers", "ls", "-q"]).unwrap_or_default();
        let mut found = Vec::new();
        for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Ok(info) = self.ctr(&["containers", "info", id]) else {
                continue;
            };
            let Ok(info) = serde_json::from_str::<serde_json::Value>(&info) else {
                continue;
            };
            let namespaces = info["Spec"]["linux"]["namespaces"].as_array().cloned();
            for ns in namespaces.unwrap_or_default() {
                let name = ns["path"]
                    .as_str()
                    .and_then(|p| p.strip_prefix("/var/run/netns/"))
                    .filter(|n| n.starts_with("cni-"));
                if ns["type"] == "network"
                    && let Some(name) = name
                    && !found.iter().any(|f| f == name)
                {
                    found.push(name.to_string());
                }
            }
        }
        found
    }

    /// The images of the containers containerd runs for the kubelet (`ctr containers ls`): the
    /// node's own view, to check against the API's.
    pub fn container_images(&self) -> Result<Vec<String>, NodeError> {
        let out = self.ctr(&["containers", "ls"])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
            .collect())
    }

    fn ctr(&self, args: &[&str]) -> Result<String, NodeError> {
        let socket = self.socket.display().to_string();
        let mut all = vec!["--address", &socket, "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// Stops the node and removes what it made: the kubelet and kube-proxy, every container
    /// (killed through containerd), containerd, every mount under the node's directory, the
    /// pods' and the node's network namespaces (with them the node's iptables rules and veths)
    /// and the host's route to the pod subnet. Safe to call twice; also run on drop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let grace = Duration::from_secs(5);
        for p in [
            &mut self.kubelet,
            &mut self.kube_proxy,
            &mut self.kube_router,
        ]
        .into_iter()
        .flatten()
        {
            p.stop(grace);
        }
        if self.containerd.is_some() {
            // Every pod sandbox containerd still has, running or stopped, holds a network
            // namespace: a stopped one has lost its address but not its netns, which only the
            // sandbox's removal (kubelet GC, later) would delete.
            self.pod_netns = self.sandbox_namespaces();
            // Pods still running: kill their containers.
            for (id, pid) in self.tasks().unwrap_or_default() {
                self.task_pids.push(pid);
                let _ = self.ctr(&["tasks", "delete", "--force", &id]);
            }
        }
        if let Some(p) = self.containerd.as_mut() {
            p.stop(grace);
        }
        // A shim whose task could not be deleted would outlive containerd: it names the
        // node's socket on its command line.
        let socket = self.socket.display().to_string();
        for pid in processes_mentioning(&socket) {
            // SAFETY: signalling a process by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for mount in mounts_under(&self.dir) {
            if let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid C string; MNT_DETACH, as `umount -l`.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // Containers killed without CNI DEL leave libcni's cached results (the pods' own and
        // their loopback's).
        for file in cni_results(&self.netns) {
            let loopback = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&format!("{}-", self.netns)))
                .and_then(|n| n.rsplit_once('-'))
                .map(|(id, _)| Path::new(CNI_RESULTS).join(format!("cni-loopback-{id}-lo")));
            let _ = std::fs::remove_file(&file);
            if let Some(l) = loopback {
                let _ = std::fs::remove_file(l);
            }
        }
        let mut namespaces = pod_namespaces(&self.pod_subnet);
        namespaces.extend(self.pod_netns.iter().cloned());
        for ns in namespaces {
            let _ = ip(&["netns", "del", &ns]);
        }
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["route", "del", &self.pod_subnet]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server, "certificate-authority": ca}}],
        "users": [{"name": "node", "user": {
            "client-certificate": cert, "client-key": key}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "node"}}],
        "current-context": "e2e",
    })
    .to_string()
}

fn containerd_config(dir: &Path, socket: &Path, pause_image: &str, cni_conf: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's OOM score to the
  # kubelet's -998, and sandbox creation would fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        runc_root = dir.join("runc").display(),
        opt = dir.join("opt").display(),
        cni_bin = CNI_BIN,
        cni_conf = cni_conf.display(),
        certs = dir.join("certs.d").display(),
    )
}

fn kubelet_config(node: &Node, ca: &Path, pod_logs: &Path) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         address: {ip}\nport: {KUBELET_PORT}\nreadOnlyPort: 0\n\
         healthzBindAddress: {ip}\nhealthzPort: 10248\n\
         containerRuntimeEndpoint: unix://{socket}\n\
         podLogsDir: {pod_logs}\n\
         staticPodPath: \"\"\n\
         clusterDomain: cluster.local\nclusterDNS: [10.0.0.10]\n\
         authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  \
         x509:\n    clientCAFile: {ca}\n\
         authorization:\n  mode: Webhook\n\
         # cgroup v1 with the cgroupfs driver; pods directly under containerd's cgroup.\n\
         cgroupDriver: cgroupfs\nfailCgroupV1: false\ncgroupsPerQOS: false\n\
         enforceNodeAllocatable: []\nfailSwapOn: false\n\
         # The disk is shared with everything else on this machine.\n\
         evictionHard:\n  memory.available: 1Mi\n  nodefs.available: 1%\n  \
         nodefs.inodesFree: 1%\n  imagefs.available: 1%\n\
         # containerd 1.6 does not pin the sandbox image against the kubelet's image GC.\n\
         imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n\
         serializeImagePulls: false\n",
        ip = node.ip,
        socket = node.socket.display(),
        pod_logs = pod_logs.display(),
        ca = ca.display(),
    )
}

/// A container of `pod` waiting because its image cannot be pulled: (container, reason,
/// message).
fn image_failure(pod: &Pod) -> Option<(String, String, String)> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone().unwrap_or_default();
            matches!(
                reason.as_str(),
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            )
            .then(|| {
                (
                    cs.name.clone(),
                    reason,
                    waiting.message.clone().unwrap_or_default(),
                )
            })
        })
}

/// Pids of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|&b| b == 0)
                        .any(|arg| String::from_utf8_lossy(arg).contains(needle))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// libcni's cached results of the network `name` (`<name>-<container id>-<interface>`).
fn cni_results(name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    std::fs::read_dir(CNI_RESULTS)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The pod network namespaces (`cni-*`) whose address is in `subnet` (`a.b.c.0/24`).
fn pod_namespaces(subnet: &str) -> Vec<String> {
    let prefix = subnet.trim_end_matches("0/24");
    let list = ip(&["netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with("cni-"))
        .filter(|ns| {
            ip(&["-n", ns, "-4", "-o", "addr", "show"])
                .map(|out| out.contains(&format!("inet {prefix}")))
                .unwrap_or(false)
        })
        .map(str::to_string)
        .collect()
}

/// What a stopped node might have left behind; empty when it left nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub processes: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub namespaces: Vec<String>,
    pub routes: Vec<String>,
    /// libcni's cached results for the node's network.
    pub files: Vec<PathBuf>,
}

impl Leftovers {
    /// Looks for what `node` made: processes (its own, the containers it killed at stop, and
    /// any process naming its directory, such as a shim), mounts under its directory, its
    /// network namespace and its pods', host routes to its pod subnet, and libcni's cached
    /// results for its network.
    pub fn of(node: &Node) -> Leftovers {
        let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
        let mut processes: Vec<String> = node
            .pids()
            .into_iter()
            .filter(alive)
            .map(|pid| format!("{pid} (a node process)"))
            .collect();
        processes.extend(
            node.task_pids
                .iter()
                .filter(|pid| alive(pid))
                .map(|pid| format!("{pid} (a container)")),
        );
        processes.extend(
            processes_mentioning(&node.dir.display().to_string())
                .into_iter()
                .map(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    format!(
                        "{pid}: {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    )
                }),
        );
        let mut namespaces = pod_namespaces(&node.pod_subnet);
        let list = ip(&["netns", "list"]).unwrap_or_default();
        let exists = |name: &str| {
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        };
        for name in node.pod_netns.iter().chain([&node.netns]) {
            if exists(name) && !namespaces.contains(name) {
                namespaces.push(name.clone());
            }
        }
        let routes = ip(&["route", "show", &node.pod_subnet])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        Leftovers {
            processes,
            mounts: mounts_under(&node.dir),
            namespaces,
            routes,
            files: cni_results(&node.netns),
        }
    }
}
