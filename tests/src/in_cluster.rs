//! Cluster components installed the way users install them, from images in the cluster's
//! registry, onto real nodes: CoreDNS as `kube-dns` (the kubelets' `clusterDNS`), Flux's
//! source-controller from its own kustomize config in `flux-system`, and this operator from
//! `config/default` with a kustomize overlay that names the registry's images (what a user
//! does to pin their own registry).

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use crate::control_plane::{self, ControlPlane, repo_root};
use crate::node::{Node, NodeError};

/// The `kube-dns` Service's ClusterIP: the kubelets' `clusterDNS` (tests/src/node.rs).
pub const DNS_IP: &str = "10.0.0.10";
/// Where the operator's overlay puts it (config/default's namespace).
pub const OPERATOR_NAMESPACE: &str = "pulumi-kubernetes-operator";
pub const FLUX_NAMESPACE: &str = "flux-system";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    ControlPlane(#[from] control_plane::Error),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot copy {0}")]
    Copy(PathBuf, #[source] std::io::Error),
    #[error("deployment {namespace}/{name} was not Available within {secs}s:\n{detail}")]
    NotAvailable {
        namespace: String,
        name: String,
        secs: u64,
        detail: String,
    },
}

fn write(path: &Path, text: &str) -> Result<(), InstallError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| InstallError::Write(parent.into(), e))?;
    }
    std::fs::write(path, text).map_err(|e| InstallError::Write(path.into(), e))
}

/// `to` relative to the directory `from` (kustomize refuses absolute paths to bases).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), InstallError> {
    std::fs::create_dir_all(to).map_err(|e| InstallError::Copy(to.into(), e))?;
    let entries = std::fs::read_dir(from).map_err(|e| InstallError::Copy(from.into(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| InstallError::Copy(from.into(), e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            let text =
                std::fs::read_to_string(&path).map_err(|e| InstallError::Copy(path.clone(), e))?;
            write(&target, &text)?;
        }
    }
    Ok(())
}

/// `kubectl apply --server-side -k <dir>`, as the READMEs say to install.
fn apply_kustomization(cp: &ControlPlane, dir: &Path) -> Result<String, InstallError> {
    let dir = dir.display().to_string();
    Ok(cp.kubectl(&["apply", "--server-side", "--force-conflicts", "-k", &dir])?)
}

/// Waits until Deployment `namespace/name` is Available. Fails at once when its pod cannot get
/// an image, and on time-out, with the pods, their logs and the node's logs.
pub async fn wait_available(
    cp: &ControlPlane,
    node: &mut Node,
    namespace: &str,
    name: &str,
    selector: &str,
    limit: Duration,
) -> Result<(), InstallError> {
    let api = Api::<Deployment>::namespaced(cp.client(), namespace);
    let deadline = Instant::now() + limit;
    loop {
        node.check_running()?;
        let available = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.status)
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        if available > 0 {
            return Ok(());
        }
        if let Some(failed) = node.pull_failure(&cp.client(), namespace, selector).await {
            return Err(failed.into());
        }
        if Instant::now() > deadline {
            let pods = cp
                .kubectl(&["get", "pods", "-n", namespace, "-o", "wide"])
                .unwrap_or_else(|e| e.to_string());
            let logs = cp
                .kubectl(&[
                    "logs",
                    "-n",
                    namespace,
                    "-l",
                    selector,
                    "--all-containers",
                    "--tail=30",
                ])
                .unwrap_or_else(|e| e.to_string());
            let events = cp
                .kubectl(&["get", "events", "-n", namespace])
                .unwrap_or_else(|e| e.to_string());
            return Err(InstallError::NotAvailable {
                namespace: namespace.into(),
                name: name.into(),
                secs: limit.as_secs(),
                detail: format!(
                    "pods:\n{pods}\nevents:\n{events}\nlogs:\n{logs}{}",
                    node.diagnose()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CoreDNS as `kube-dns` in `kube-system`, serving `cluster.local` from the API (its RBAC as
/// the upstream addon has it). It listens on 1053 (the Service maps 53 to it), so it needs no
/// capability; names outside the cluster are not forwarded anywhere (this machine's tests have
/// no upstream DNS).
pub async fn install_coredns(
    cp: &ControlPlane,
    node: &mut Node,
    image: &str,
) -> Result<(), InstallError> {
    let manifests = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        seccompProfile: {{type: RuntimeDefault}}
      containers:
      - name: coredns
        image: {image}
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 1053, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
          limits: {{memory: 128Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: coredns
          items: [{{key: Corefile, path: Corefile}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {DNS_IP}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#
    );
    cp.apply_yaml(&manifests, "coredns", "kube-system").await?;
    wait_available(
        cp,
        node,
        "kube-system",
        "coredns",
        "k8s-app=kube-dns",
        Duration::from_secs(120),
    )
    .await
}

/// Flux's source-controller from its own kustomize config (upstream's `config/default`, shipped
/// in its module and copied by tests/tools/build.sh into `<flux_dir>/config`) in
/// `flux-system`, its image replaced by `image`, as `kustomize edit set image` would; with
/// the NetworkPolicies `flux install` puts in `flux-system` (`<flux_dir>/policies`: ingress
/// only from `flux-system` itself, metrics and webhooks aside), and then this project's
/// `config/flux`, which admits workspace pods from every namespace, as config/flux/README.md
/// tells users to apply.
pub async fn install_source_controller(
    cp: &ControlPlane,
    node: &mut Node,
    flux_dir: &Path,
    image: &str,
) -> Result<(), InstallError> {
    let overlay = cp.dir().join("kustomize/flux-system");
    copy_tree(&flux_dir.join("config"), &overlay.join("upstream"))?;
    copy_tree(
        &flux_dir.join("policies"),
        &overlay.join("upstream/policies"),
    )?;
    apply_flux_overlay(
        cp,
        &overlay,
        "source-controller",
        &["default", "policies"],
        image,
    )?;
    apply_kustomization(cp, &repo_root().join("config/flux"))?;
    wait_flux_controller(cp, node, "source-controller").await
}

/// Applies `overlay`: upstream's config of Flux controller `controller` (already copied to
/// `<overlay>/upstream`), its `resources` in `flux-system`, its image `fluxcd/<controller>`
/// replaced by `image`, as `kustomize edit set image` would.
fn apply_flux_overlay(
    cp: &ControlPlane,
    overlay: &Path,
    controller: &str,
    resources: &[&str],
    image: &str,
) -> Result<(), InstallError> {
    let (name, tag) = split_image(image);
    let resources: String = resources
        .iter()
        .map(|r| format!("- upstream/{r}\n"))
        .collect();
    write(
        &overlay.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {FLUX_NAMESPACE}\nresources:\n{resources}\
             images:\n- name: fluxcd/{controller}\n  newName: {name}\n  newTag: {tag}\n"
        ),
    )?;
    apply_kustomization(cp, overlay)?;
    Ok(())
}

/// Waits for Flux controller `controller`'s Deployment (upstream names it, and labels its
/// pods `app=<controller>`).
async fn wait_flux_controller(
    cp: &ControlPlane,
    node: &mut Node,
    controller: &str,
) -> Result<(), InstallError> {
    wait_available(
        cp,
        node,
        FLUX_NAMESPACE,
        controller,
        &format!("app={controller}"),
        Duration::from_secs(120),
    )
    .await
}

/// Flux's kustomize-controller from its own kustomize config (upstream's `config/crd`, `rbac`
/// and `manager`, copied by tests/tools/build.sh into `<dir>/config`; its `config/default`
/// names source-controller by URL) in `flux-system`, its image replaced by `image`.
pub async fn install_kustomize_controller(
    cp: &ControlPlane,
    node: &mut Node,
    dir: &Path,
    image: &str,
) -> Result<(), InstallError> {
    let overlay = cp.dir().join("kustomize/kustomize-controller");
    copy_tree(&dir.join("config"), &overlay.join("upstream"))?;
    apply_flux_overlay(
        cp,
        &overlay,
        "kustomize-controller",
        &["crd", "rbac", "manager"],
        image,
    )?;
    wait_flux_controller(cp, node, "kustomize-controller").await
}

/// This operator from `config/default` (CRDs, RBAC, the Deployment and its Service) through
/// an overlay that sets the operator image and the workspace pods' `AGENT_IMAGE` and
/// `FETCH_IMAGE` to the registry's, then the workspace service account of
/// `config/samples/service_account.yaml`.
pub async fn install_operator(
    cp: &ControlPlane,
    node: &mut Node,
    operator_image: &str,
    fetch_image: &str,
) -> Result<(), InstallError> {
    install_operator_from(cp, node, "config/default", operator_image, fetch_image).await
}

/// As [`install_operator`], from the kustomization `config` (relative to the repository, e.g.
/// `config/namespaced`) instead of `config/default`.
pub async fn install_operator_from(
    cp: &ControlPlane,
    node: &mut Node,
    config: &str,
    operator_image: &str,
    fetch_image: &str,
) -> Result<(), InstallError> {
    let overlay = cp.dir().join("kustomize").join(config.replace('/', "-"));
    let base = relative(&overlay, &repo_root().join(config));
    let (name, tag) = split_image(operator_image);
    write(
        &overlay.join("kustomization.yaml"),
        &format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- {base}
images:
- name: ghcr.io/example/pulumi-flux-operator
  newName: {name}
  newTag: {tag}
patches:
- patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: controller-manager
      namespace: {OPERATOR_NAMESPACE}
    spec:
      template:
        spec:
          containers:
          - name: manager
            env:
            - name: AGENT_IMAGE
              value: {operator_image}
            - name: FETCH_IMAGE
              value: {fetch_image}
"#,
            base = base.display()
        ),
    )?;
    apply_kustomization(cp, &overlay)?;
    let samples = repo_root().join("config/samples/service_account.yaml");
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &samples.display().to_string(),
    ])?;
    wait_available(
        cp,
        node,
        OPERATOR_NAMESPACE,
        "controller-manager",
        "control-plane=controller-manager",
        Duration::from_secs(120),
    )
    .await
}

/// `host:port/name:tag` → (`host:port/name`, `tag`).
fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(Path::new("/tmp/a/b"), Path::new("/work/main/config")),
            PathBuf::from("../../../work/main/config")
        );
        assert_eq!(
            relative(Path::new("/work/x"), Path::new("/work/main")),
            PathBuf::from("../main")
        );
    }

    #[test]
    fn images_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_image("172.30.1.1:5000/operator:e2e"),
            ("172.30.1.1:5000/operator", "e2e")
        );
        assert_eq!(
            split_image("172.30.1.1:5000/operator"),
            ("172.30.1.1:5000/operator", "latest")
        );
    }
}
