//! Shared fixtures for the control-plane tests.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::ControlPlane;
use e2e::git_server::{Credentials, GitServer, Repo};
use e2e::source_controller::SourceController;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

/// The image the operator's manifests name for `fetch` (config/manager).
pub const FETCH_IMAGE: &str = "ghcr.io/example/pulumi-flux-operator-fetch:0.1.0";

/// A provider-free Pulumi YAML program.
pub const PROGRAM: &str = "name: e2e-program\nruntime: yaml\noutputs:\n  greeting: hello\n";

/// A provider-free program with config: `greeting` set by the Stack, `extra` with a default.
pub const CONFIG_PROGRAM: &str = "name: configured\nruntime: yaml\n\
config:\n  greeting:\n    type: string\n  extra:\n    type: string\n    default: none\n\
outputs:\n  greeting: ${greeting}\n  extra: ${extra}\n";

/// A xorshift generator: repeatable test data and choices from a seed (not zero).
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next number, below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Polls `f` every 250 ms until it returns Some; panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where cargo put this workspace's binaries for the profile the tests run in:
/// target/<profile>/deps/<test> → target/<profile>.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .expect("target directory")
}

/// A pod shaped like a workspace pod: `fetch flux` as init container into the shared
/// emptyDir, then a main container working in /share/workspace, non-root.
pub fn workspace_pod_with(
    name: &str,
    url: &str,
    digest: &str,
    dir: &str,
    fetch_image: &str,
    shell_image: &str,
) -> Pod {
    let mounts = json!([{"name": "share", "mountPath": "/share"}]);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"auto.pulumi.com/component": "workspace"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000},
            "volumes": [{"name": "share", "emptyDir": {}}],
            "initContainers": [{
                "name": "fetch", "image": fetch_image,
                "args": ["flux", "--target-dir", "/share/source", "--dir", "$(FLUX_DIR)",
                         "--link", "/share/workspace"],
                "env": [{"name": "FLUX_URL", "value": url},
                        {"name": "FLUX_DIGEST", "value": digest},
                        {"name": "FLUX_DIR", "value": dir}],
                "volumeMounts": mounts,
            }],
            "containers": [{
                "name": "pulumi", "image": shell_image,
                "command": ["sh", "-c", "id; ls -a; cat Pulumi.yaml"],
                "workingDir": "/share/workspace",
                "volumeMounts": mounts,
            }],
        },
    }))
    .expect("valid pod")
}

pub fn sleeper_pod_with(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "main", "image": image,
                            "command": ["sleep", "3619"]}],
        },
    }))
    .expect("valid pod")
}

/// source-controller (a host process on a given address, or in the cluster), a git server with
/// basic auth, one repository and the Secret a GitRepository needs to read it.
pub struct FluxFixture {
    /// None when source-controller runs in the cluster (`FluxFixture::in_cluster`).
    pub source_controller: Option<SourceController>,
    pub git: GitServer,
    pub repo: Repo,
    pub name: String,
    /// Where the GitRepository and its Secret are.
    pub namespace: String,
}

fn git_repositories(cp: &ControlPlane, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "source.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "source.toolkit.fluxcd.io/v1".into(),
        kind: "GitRepository".into(),
        plural: "gitrepositories".into(),
    };
    Api::namespaced_with(cp.client(), namespace, &ar)
}

impl FluxFixture {
    /// source-controller on loopback: for tests whose pods never fetch its artifacts.
    pub async fn start(cp: &ControlPlane, name: &str) -> FluxFixture {
        Self::start_on(cp, name, Ipv4Addr::LOCALHOST).await
    }

    /// With source-controller's artifact server on `gateway` (where pods reach the host).
    pub async fn start_on(cp: &ControlPlane, name: &str, gateway: Ipv4Addr) -> FluxFixture {
        cp.install_flux_crds().await.expect("Flux CRDs install");
        let gateway = IpAddr::V4(gateway);
        let source_controller = SourceController::start(cp, gateway)
            .await
            .expect("source-controller starts");
        let mut fx = Self::with_git(cp, name, IpAddr::V4(Ipv4Addr::LOCALHOST), "default").await;
        fx.source_controller = Some(source_controller);
        fx
    }

    /// For source-controller running in the cluster (e2e::in_cluster): the git server listens
    /// on `gateway`, where its pod reaches the host.
    pub async fn in_cluster(cp: &ControlPlane, name: &str, gateway: Ipv4Addr) -> FluxFixture {
        Self::with_git(cp, name, IpAddr::V4(gateway), "default").await
    }

    /// As [`FluxFixture::in_cluster`], with `files` committed, the GitRepository applied and
    /// source-controller at that commit; the fixture and the commit.
    pub async fn serving(
        cp: &ControlPlane,
        name: &str,
        gateway: Ipv4Addr,
        files: &[(&str, &str)],
    ) -> (FluxFixture, String) {
        let fx = Self::in_cluster(cp, name, gateway).await;
        let sha = fx.repo.commit(files, "program").expect("commit");
        fx.apply_git_repository(cp).await;
        fx.wait_revision(cp, &sha).await;
        (fx, sha)
    }

    /// As [`FluxFixture::in_cluster`], the GitRepository and its Secret in `namespace`.
    pub async fn in_cluster_in(
        cp: &ControlPlane,
        name: &str,
        gateway: Ipv4Addr,
        namespace: &str,
    ) -> FluxFixture {
        Self::with_git(cp, name, IpAddr::V4(gateway), namespace).await
    }

    /// The git server on `ip` with one repository, and the Secret to read it in `namespace`.
    async fn with_git(cp: &ControlPlane, name: &str, ip: IpAddr, namespace: &str) -> FluxFixture {
        let creds = Credentials {
            username: "flux".into(),
            password: format!("pw-{name}"),
        };
        let git = GitServer::start(ip, creds.clone()).expect("git server starts");
        let repo = git.create_repo(name).expect("repository");
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-auth}}\n\
             stringData: {{username: {}, password: {}}}\n",
            creds.username, creds.password
        );
        cp.apply_yaml(&secret, "secret", namespace)
            .await
            .expect("secret");
        FluxFixture {
            source_controller: None,
            git,
            repo,
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    pub async fn apply_git_repository(&self, cp: &ControlPlane) {
        let yaml = format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\n\
             metadata: {{name: {n}}}\n\
             spec: {{interval: 10m, timeout: 30s, url: '{url}', ref: {{branch: main}}, \
             secretRef: {{name: {n}-auth}}}}\n",
            n = self.name,
            url = self.git.url(&self.name)
        );
        cp.apply_yaml(&yaml, "GitRepository", &self.namespace)
            .await
            .expect("GitRepository applies");
    }

    /// source-controller's log: the host process's, or the in-cluster Deployment's (tail).
    pub fn source_controller_log(&self, cp: &ControlPlane) -> String {
        match &self.source_controller {
            Some(sc) => sc.log(),
            None => cp
                .kubectl(&[
                    "logs",
                    "-n",
                    e2e::in_cluster::FLUX_NAMESPACE,
                    "deploy/source-controller",
                    "--tail=40",
                ])
                .unwrap_or_else(|e| e.to_string()),
        }
    }

    /// What `flux reconcile source git` does: bump the requestedAt annotation.
    pub async fn request_reconcile(&self, cp: &ControlPlane) {
        let now = format!("{:?}", Instant::now());
        let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        git_repositories(cp, &self.namespace)
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// Waits until the GitRepository is Ready with an artifact of commit `sha`; returns the
    /// artifact.
    pub async fn wait_revision(&self, cp: &ControlPlane, sha: &str) -> Value {
        let api = git_repositories(cp, &self.namespace);
        let want = format!("main@sha1:{sha}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let obj = api.get(&self.name).await.ok();
            let status = obj
                .as_ref()
                .map(|o| o.data["status"].clone())
                .unwrap_or(Value::Null);
            let ready = status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready && status["artifact"]["revision"] == want.as_str() {
                return status["artifact"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "GitRepository {} never reached {want}; status: {status:#}\nsource-controller:\n{}",
                self.name,
                self.source_controller_log(cp)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

pub mod fault;
pub mod gate;
pub mod helm;
pub mod operator;
pub mod rbac;
pub mod real_node;

/// Events about an object (kind, name) in `ns`, oldest first: (type, reason, note).
pub async fn events_for(
    cp: &ControlPlane,
    ns: &str,
    kind: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let api: Api<Event> = Api::namespaced(cp.client(), ns);
    let mut list: Vec<Event> = api
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// A namespaced custom object as JSON (None when absent).
pub async fn get_json(cp: &ControlPlane, ar: &ApiResource, ns: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client(), ns, ar);
    let obj = api.get_opt(name).await.ok()??;
    serde_json::to_value(obj).ok()
}

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn workspaces() -> ApiResource {
    resource("auto.pulumi.com", "v1alpha1", "Workspace", "workspaces")
}

pub fn updates() -> ApiResource {
    resource("auto.pulumi.com", "v1alpha1", "Update", "updates")
}

pub fn stacks() -> ApiResource {
    resource("pulumi.com", "v1", "Stack", "stacks")
}

/// The condition `type_` of an object's status.
pub fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Every state the Updates of one Stack pass through, from a watch.
pub struct UpdateLog {
    states: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UpdateLog {
    pub fn watch(cp: &ControlPlane, stack: &str) -> UpdateLog {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let api: Api<DynamicObject> = Api::namespaced_with(cp.client(), "default", &updates());
        let cfg = watcher::Config::default().labels(&format!("pulumi.com/stack-name={stack}"));
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&states);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(api, cfg));
            while let Some(ev) = events.next().await {
                let objs = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                for o in objs {
                    let v = serde_json::to_value(&o).unwrap_or_default();
                    let state = if condition(&v, "Complete").is_some_and(|c| c["status"] == "True")
                    {
                        if condition(&v, "Failed").is_some_and(|c| c["status"] == "True") {
                            "failed"
                        } else {
                            "succeeded"
                        }
                    } else {
                        "pending"
                    };
                    if let Ok(mut l) = log.lock() {
                        l.push((
                            v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                            v["spec"]["type"].as_str().unwrap_or("").to_string(),
                            state.to_string(),
                        ));
                    }
                }
            }
        });
        UpdateLog { states, task }
    }

    pub fn states(&self) -> Vec<(String, String, String)> {
        self.states.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn succeeded(&self, kind: &str) -> bool {
        self.has(kind, "succeeded")
    }

    pub fn has(&self, kind: &str, wanted: &str) -> bool {
        self.states()
            .iter()
            .any(|(_, k, state)| k == kind && state == wanted)
    }
}

impl Drop for UpdateLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
