//! The operator as it runs in a cluster, on the local control plane, as a host process: its
//! namespace, its service account with exactly the RBAC of `config/rbac` (the process
//! authenticates with that account's token, so a missing grant fails the test) and a workspace
//! service account with `system:auth-delegator`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::ControlPlane;
use e2e::control_plane::repo_root;
use e2e::process::Process;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::{FETCH_IMAGE, target_dir, wait_for};

/// What config/manager sets as AGENT_IMAGE; here it is the agent binary at /agent.
pub const AGENT_IMAGE: &str = "ghcr.io/example/pulumi-flux-operator:0.1.0";
pub const OPERATOR_NS: &str = "pulumi-kubernetes-operator";
/// The service account workspace pods run as (bound to system:auth-delegator).
pub const WORKSPACE_SA: &str = "pulumi";
pub const BACKEND: &str = "file:///state";

/// A host directory for the file backend, writable by the workspace pods' user; mount it with
/// [`state_pod_template`].
pub fn shared_state() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("state");
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod state");
    state
}

/// A workspace `podTemplate` that mounts the host directory `state` at /state ([`BACKEND`]) in
/// the pulumi container (hostPath: the test reads and writes it too).
pub fn state_pod_template(state: &Path) -> serde_json::Value {
    serde_json::json!({"spec": {
        "containers": [{"name": "pulumi",
                        "volumeMounts": [{"name": "state", "mountPath": "/state"}]}],
        "volumes": [{"name": "state", "hostPath": {"path": state, "type": "Directory"}}],
    }})
}
pub const PASSPHRASE: &str = "e2e-passphrase";

/// A Stack with the test's backend (the host's state directory, mounted into the pulumi
/// container), passphrase, workspace account and image.
pub fn stack_yaml_with(
    name: &str,
    (image, state): (&str, &Path),
    source: serde_json::Value,
) -> String {
    let mut spec = serde_json::json!({
        "stack": name,
        "backend": BACKEND,
        "serviceAccountName": WORKSPACE_SA,
        "envRefs": {"PULUMI_CONFIG_PASSPHRASE": {"type": "Literal", "literal": {"value": PASSPHRASE}}},
        "workspaceTemplate": {"spec": {
            "image": image,
            "podTemplate": state_pod_template(state),
        }},
    });
    if let (Some(s), serde_json::Value::Object(extra)) = (spec.as_object_mut(), source) {
        s.extend(extra);
    }
    serde_json::to_string(&serde_json::json!({
        "apiVersion": "pulumi.com/v1",
        "kind": "Stack",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("json")
}

/// A Stack's `fluxSource` for GitRepository `repo`, program in `dir`.
pub fn flux_ref(repo: &str, dir: &str) -> serde_json::Value {
    serde_json::json!({"fluxSource": {
        "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": repo},
        "dir": dir,
    }})
}

fn target_binary(name: &str) -> PathBuf {
    let bin = target_dir().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test --workspace` builds it (or cargo build -p operator)",
        bin.display()
    );
    bin
}

pub fn pulumi_dir() -> PathBuf {
    e2e::cluster::tool_dir("pulumi", "pulumi").expect("pulumi built")
}

pub struct Operator {
    pub process: Process,
    pub health: u16,
    pub metrics: u16,
    pub program_addr: String,
    pub kubeconfig: PathBuf,
}

impl Operator {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}

/// The operator's namespace and RBAC (config/rbac), the workspace service account, and a
/// kubeconfig holding the operator account's token.
pub async fn install(cp: &ControlPlane) -> PathBuf {
    cp.install_project_crds().await.expect("CRDs");
    cp.create_namespace(OPERATOR_NS).await.expect("namespace");
    for f in e2e::control_plane::yaml_files(&repo_root().join("config/rbac")).expect("rbac files") {
        if f.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        cp.apply_yaml(&text, &f.display().to_string(), OPERATOR_NS)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
    }
    let workspace_rbac = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {WORKSPACE_SA}, namespace: default}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {{name: default-pulumi-auth-delegator}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:auth-delegator'}}\n\
         subjects: [{{kind: ServiceAccount, name: {WORKSPACE_SA}, namespace: default}}]\n"
    );
    cp.apply_yaml(&workspace_rbac, "workspace rbac", "default")
        .await
        .expect("workspace SA");
    operator_kubeconfig(cp).await
}

/// A kubeconfig holding a token of the `controller-manager` service account in [`OPERATOR_NS`]
/// (ours and PKO's manifests both name it so): the operator authenticates as that account, so
/// RBAC is what it gets.
pub async fn operator_kubeconfig(cp: &ControlPlane) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(cp.client(), OPERATOR_NS);
    let token = wait_for(Duration::from_secs(30), "controller-manager token", || {
        let sas = sas.clone();
        async move {
            let req = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(6 * 3600),
                    ..Default::default()
                },
                ..Default::default()
            };
            sas.create_token_request("controller-manager", &PostParams::default(), &req)
                .await
                .ok()?
                .status
                .map(|s| s.token)
        }
    })
    .await;
    let ca = cp.dir().join("operator-ca.crt");
    std::fs::write(&ca, cp.ca_pem()).expect("ca");
    let kubeconfig = cp.dir().join("operator.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: operator\n  user:\n    token: {token}\n\
             contexts:\n- name: operator\n  context: {{cluster: e2e, user: operator}}\ncurrent-context: operator\n",
            cp.url(),
            ca.display()
        ),
    )
    .expect("kubeconfig");
    kubeconfig
}

/// Starts the operator process and waits until it is ready; its program file server on
/// loopback (for runs whose workspace pods never fetch from it).
pub async fn start(cp: &ControlPlane, kubeconfig: &Path, extra_env: &[(&str, &str)]) -> Operator {
    start_on(cp, kubeconfig, extra_env, std::net::Ipv4Addr::LOCALHOST).await
}

/// [`start`] with the program file server on `gateway`.
pub async fn start_on(
    cp: &ControlPlane,
    kubeconfig: &Path,
    extra_env: &[(&str, &str)],
    gateway: std::net::Ipv4Addr,
) -> Operator {
    let gateway = IpAddr::V4(gateway);
    let program_port = e2e::process::free_port();
    let program_addr = format!("{gateway}:{program_port}");
    let health = e2e::process::free_port();
    let metrics = e2e::process::free_port();
    let mut cmd = std::process::Command::new(target_binary("operator"));
    cmd.args([
        "--leader-elect",
        &format!("--health-probe-bind-address=127.0.0.1:{health}"),
        &format!("--metrics-bind-address=127.0.0.1:{metrics}"),
        // Plain HTTP: these tests read the metrics, real_node::operator_metrics the secure way.
        "--metrics-secure=false",
        &format!("--program-fs-addr={program_addr}"),
        &format!("--program-fs-adv-addr={program_addr}"),
        "--log-level=info,operator=debug",
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("KUBECONFIG", kubeconfig)
    .env("POD_NAMESPACE", OPERATOR_NS)
    .env("POD_SA_NAME", "controller-manager")
    .env("AGENT_IMAGE", AGENT_IMAGE)
    .env("FETCH_IMAGE", FETCH_IMAGE)
    .env("LEADER_ELECTION_LEASE_DURATION", "15s")
    .env("LEADER_ELECTION_RENEW_DEADLINE", "10s")
    .env("LEADER_ELECTION_RETRY_PERIOD", "2s");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let process = Process::spawn("operator", cmd, cp.dir()).expect("operator starts");
    let op = Operator {
        process,
        health,
        metrics,
        program_addr,
        kubeconfig: kubeconfig.to_path_buf(),
    };
    let url = format!("http://127.0.0.1:{health}/readyz");
    let log = op.process.log_path().to_path_buf();
    wait_for(Duration::from_secs(60), "the operator to be ready", || {
        let url = url.clone();
        let log = log.clone();
        async move {
            let ok = http_get(&url).await.is_some_and(|(code, _)| code == 200);
            if !ok && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Error:")) {
                panic!("the operator failed:\n{}", e2e::process::tail(&log, 40));
            }
            ok.then_some(())
        }
    })
    .await;
    op
}

/// An HTTP GET with a 10 s limit: (status, body), or None when it cannot be made.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}
