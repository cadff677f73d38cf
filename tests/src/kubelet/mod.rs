//! A test kubelet: registers a Node, keeps it Ready (status heartbeats and its Lease), and runs
//! the pods the scheduler binds to it as local processes. Each pod gets its own network
//! namespace on the harness's pod network, and each container its own mount, PID, IPC and UTS
//! namespaces (bubblewrap) with the pod's volumes bind-mounted where the spec says.
//!
//! Test infrastructure, not a container runtime: images are a table from image reference to
//! host binaries ([`Image`]); there are no cgroups, no resource limits, no probes (a running
//! container is ready), no image pulls, no `hostPath`/PVC volumes, no `kubectl exec`/`logs`
//! (logs are files, see [`Kubelet::logs`]). `tests/README.md` lists what it does emulate.

mod env;
mod pod;
mod volumes;

pub use env::{ConfigError, expand, parse_quantity};

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control_plane::ControlPlane;
use crate::net::PodNetwork;

/// Node capacity the test kubelet reports.
pub const NODE_CPU_MILLIS: i64 = 8000;
pub const NODE_MEMORY: i64 = 16 << 30;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("bwrap is required to run pods (Debian package bubblewrap)")]
    NoBwrap,
}

/// What an image reference means to the test kubelet: host files bind-mounted read-only into
/// the container's root, and the image config a registry would carry.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// (host path, path in the container), read-only.
    pub binds: Vec<(PathBuf, String)>,
    /// (host path, path in the container), writable: state a test shares across pods (a
    /// `file://` Pulumi backend), which a real image would keep on a volume.
    pub rw_binds: Vec<(PathBuf, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Directories prepended to the default PATH.
    pub path: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The image's USER (numeric); root when unset.
    pub user: Option<i64>,
}

impl Image {
    /// An image whose entrypoint is one host binary, mounted at `at`.
    pub fn binary(host: impl Into<PathBuf>, at: &str) -> Image {
        Image {
            binds: vec![(host.into(), at.to_string())],
            entrypoint: vec![at.to_string()],
            ..Image::default()
        }
    }

    /// An image with a host directory mounted at `at` and put on PATH.
    pub fn bin_dir(host: impl Into<PathBuf>, at: &str) -> Image {
        Image {
            binds: vec![(host.into(), at.to_string())],
            path: vec![at.to_string()],
            ..Image::default()
        }
    }

    pub fn with_user(mut self, uid: i64) -> Image {
        self.user = Some(uid);
        self
    }

    pub fn with_bind(mut self, host: impl Into<PathBuf>, at: &str) -> Image {
        self.binds.push((host.into(), at.to_string()));
        self
    }

    pub fn with_rw_bind(mut self, host: impl Into<PathBuf>, at: &str) -> Image {
        self.rw_binds.push((host.into(), at.to_string()));
        self
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Image {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

/// Shared between the kubelet's tasks.
struct State {
    client: Client,
    node: String,
    dir: PathBuf,
    images: HashMap<String, Image>,
    network: Arc<PodNetwork>,
    /// Where pods reach the apiserver (KUBERNETES_SERVICE_HOST/PORT).
    apiserver: (String, u16),
    pods: Mutex<HashMap<String, PodHandle>>,
    /// UIDs of pods that ran to the end here: never started again.
    finished: Mutex<HashSet<String>>,
}

/// A running pod, as the kubelet's bookkeeping sees it.
struct PodHandle {
    /// Sends the grace period when the pod is being deleted.
    stop: watch::Sender<Option<i64>>,
    /// Process groups of running containers, killed if the kubelet is dropped.
    groups: Arc<Mutex<Vec<i32>>>,
    netns: String,
    ip: Arc<Mutex<Option<Ipv4Addr>>>,
}

pub struct Kubelet {
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Kubelet {
    /// Registers Node `node` and starts serving the pods bound to it. `images` maps image
    /// references (exactly as written in pod specs) to what runs.
    pub async fn start(
        cp: &ControlPlane,
        node: &str,
        images: HashMap<String, Image>,
    ) -> Result<Kubelet, Error> {
        if which("bwrap").is_none() {
            return Err(Error::NoBwrap);
        }
        let dir = cp.dir().join("kubelet").join(node);
        std::fs::create_dir_all(dir.join("pods")).map_err(|e| Error::Dir(dir.clone(), e))?;
        let port = cp
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        let network = cp.network();
        let state = Arc::new(State {
            client: cp.client(),
            node: node.to_string(),
            dir,
            images,
            apiserver: (network.gateway().to_string(), port),
            network,
            pods: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
        });
        register(&state).await?;
        let heartbeat = tokio::spawn(heartbeat(state.clone()));
        let pods = tokio::spawn(watch_pods(state.clone()));
        Ok(Kubelet {
            state,
            tasks: vec![heartbeat, pods],
        })
    }

    pub fn node(&self) -> &str {
        &self.state.node
    }

    /// Where a container's output goes (stdout and stderr, all restarts appended).
    pub fn log_path(&self, pod_uid: &str, container: &str) -> PathBuf {
        pod::log_path(&self.state.dir, pod_uid, container)
    }

    /// A container's output so far, found by pod namespace and name.
    pub async fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        let api = Api::<Pod>::namespaced(self.state.client.clone(), namespace);
        let Ok(p) = api.get(pod).await else {
            return String::new();
        };
        let uid = p.metadata.uid.unwrap_or_default();
        std::fs::read_to_string(self.log_path(&uid, container)).unwrap_or_default()
    }

    /// The kubelet's own working directory (pods, volumes, logs).
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let mut pods = self.state.pods.lock().unwrap_or_else(|e| e.into_inner());
        for (_, handle) in pods.drain() {
            let _ = handle.stop.send(Some(0));
            for g in handle
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                // SAFETY: signalling process groups this kubelet started.
                unsafe { libc::kill(-g, libc::SIGKILL) };
            }
            if let Some(ip) = *handle.ip.lock().unwrap_or_else(|e| e.into_inner()) {
                self.state.network.detach(&handle.netns, ip);
            }
        }
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn node_conditions() -> serde_json::Value {
    let t = now();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "test kubelet is posting ready status"
        ),
    ])
}

async fn register(state: &State) -> Result<(), Error> {
    let err = |source| Error::Register {
        node: state.node.clone(),
        source,
    };
    let nodes = Api::<Node>::all(state.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": state.node, "labels": {
            "kubernetes.io/hostname": state.node, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "e2e-process"}},
    }))
    .map_err(|e| err(kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    let capacity = json!({"cpu": format!("{}m", NODE_CPU_MILLIS), "memory": NODE_MEMORY.to_string(),
                          "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": node_conditions(),
        "addresses": [{"type": "InternalIP", "address": state.apiserver.0},
                      {"type": "Hostname", "address": state.node}],
        "nodeInfo": {"machineID": "e2e", "systemUUID": "e2e", "bootID": "e2e",
            "kernelVersion": "", "osImage": "test kubelet (host processes)",
            "containerRuntimeVersion": "bwrap://0.8", "kubeletVersion": "v1.34.4",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
    }});
    nodes
        .patch_status(&state.node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(err)?;
    Ok(())
}

/// Node status every 10 s and the Lease every 10 s, as the kubelet's defaults.
async fn heartbeat(state: Arc<State>) {
    let nodes = Api::<Node>::all(state.client.clone());
    let leases = Api::<Lease>::namespaced(state.client.clone(), "kube-node-lease");
    loop {
        let status = json!({"status": {"conditions": node_conditions()}});
        let _ = nodes
            .patch_status(&state.node, &PatchParams::default(), &Patch::Merge(&status))
            .await;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": state.node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": state.node, "leaseDurationSeconds": 40,
                     "renewTime": MicroTime(Timestamp::now())},
        });
        let _ = leases
            .patch(
                &state.node,
                &PatchParams::apply("e2e-kubelet").force(),
                &Patch::Apply(&lease),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Watches the pods bound to this node; starts new ones, stops deleted ones.
async fn watch_pods(state: Arc<State>) {
    let pods = Api::<Pod>::all(state.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", state.node));
    let mut stream = watcher(pods, config).boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else {
            continue;
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => observe(&state, pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(h) = state
                    .pods
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&uid)
                {
                    let _ = h.stop.send(Some(0));
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

fn observe(state: &Arc<State>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    let finished = state
        .finished
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&uid);
    let mut pods = state.pods.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = pods.get(&uid) {
        if deleting {
            let _ = h.stop.send(Some(grace));
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    if finished || matches!(phase, "Succeeded" | "Failed") {
        // Finished before (or by a previous kubelet): only the final delete is ours.
        if deleting {
            tokio::spawn(pod::finalize_delete(state.client.clone(), pod));
        }
        return;
    }
    let (stop, stop_rx) = watch::channel(if deleting { Some(grace) } else { None });
    let handle = PodHandle {
        stop,
        groups: Arc::new(Mutex::new(Vec::new())),
        netns: format!("e2e-{}", uid.chars().take(13).collect::<String>()),
        ip: Arc::new(Mutex::new(None)),
    };
    let run = pod::PodRun {
        state: state.clone(),
        pod,
        stop: stop_rx,
        groups: handle.groups.clone(),
        netns: handle.netns.clone(),
        ip: handle.ip.clone(),
    };
    pods.insert(uid, handle);
    tokio::spawn(run.run());
}
