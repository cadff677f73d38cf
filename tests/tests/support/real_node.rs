//! The tests' side of [`e2e::cluster::Cluster`] (a control plane with one real node and a
//! registry of our images): starting it (and installing the operator and source-controller in
//! it) or failing the test, and reading the in-cluster operator's log and metrics.

pub use e2e::cluster::Cluster as RealCluster;

/// Starts the cluster, or fails the test with why.
pub async fn start() -> RealCluster {
    RealCluster::start()
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"))
}

/// Starts the cluster and installs CoreDNS and source-controller in it (the operator is the
/// test's to install); or fails the test with why.
pub async fn start_with_dependencies() -> RealCluster {
    let mut rc = start().await;
    rc.install_dependencies()
        .await
        .unwrap_or_else(|e| panic!("installing CoreDNS and source-controller: {e}"));
    rc
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

/// What the in-cluster operator's metrics endpoint serves, read as Prometheus would: over
/// HTTPS (`--metrics-secure`, the default; its certificate is self-signed) with the token of a
/// service account bound to `config/rbac`'s metrics-reader role, from the host (pod IPs are
/// routed to the node). Checked on the way: no token is 401, a token without the binding 403.
pub async fn operator_metrics(rc: &RealCluster) -> String {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let ns = e2e::in_cluster::OPERATOR_NAMESPACE;
    let pods = Api::<Pod>::namespaced(rc.cp.client(), ns)
        .list(&ListParams::default().labels("control-plane=controller-manager"))
        .await
        .expect("operator pods");
    let ip = pods
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("the operator pod's IP");
    let account = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "metrics-scraper"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "pulumi-kubernetes-operator-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "metrics-scraper", "namespace": ns}],
    });
    for (doc, what) in [
        (account("metrics-scraper"), "scraper"),
        (account("metrics-stranger"), "stranger"),
        (binding, "binding"),
    ] {
        rc.cp
            .apply_yaml(&doc.to_string(), what, ns)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let token = |sa: &str| {
        rc.kubectl(&["create", "token", sa, "-n", ns])
            .unwrap_or_else(|e| panic!("a token for {sa}: {e}"))
            .trim()
            .to_string()
    };
    let url = format!("https://{ip}:8383/metrics");
    let get = |bearer: Option<String>| {
        let url = url.clone();
        async move {
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("client");
            let mut req = client.get(&url);
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            let r = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (code, body) = get(None).await;
    assert_eq!((code, body.trim()), (401, "Unauthorized"), "no token");
    let (code, body) = get(Some(token("metrics-stranger"))).await;
    assert_eq!(
        code, 403,
        "a token without the metrics-reader binding: {body}"
    );
    assert!(body.contains("system:serviceaccount:"), "{body}");
    let (code, body) = get(Some(token("metrics-scraper"))).await;
    assert_eq!(code, 200, "the metrics-reader's token: {body}");
    body
}

/// A container's log in the workspace pod of Stack `default/<stack>` (empty when there is
/// none).
pub fn workspace_log(rc: &RealCluster, stack: &str, container: &str) -> String {
    rc.kubectl(&["logs", &format!("{stack}-workspace-0"), "-c", container])
        .unwrap_or_default()
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `ok` holds for Stack `default/<name>`; on timeout, fails with what there is to
/// see (its status, the Stack's and Workspace's events, the fetch and pulumi logs, the
/// operator's log and the nodes').
pub async fn wait_stack(
    rc: &RealCluster,
    name: &str,
    limit: std::time::Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let s = super::get_json(&rc.cp, &super::stacks(), "default", name).await;
        if let Some(s) = s.as_ref().filter(|s| ok(s)) {
            return s.clone();
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "Stack {name}: timed out waiting for {what}\nstatus: {:#}\nstack events: {:?}\nworkspace events: {:?}\n\
                 fetch: {}\npulumi (tail): {}\noperator:\n{}{}",
                s.map(|s| s["status"].clone()).unwrap_or_default(),
                super::events_for(&rc.cp, "default", "Stack", name).await,
                super::events_for(&rc.cp, "default", "Workspace", name).await,
                workspace_log(rc, name, "fetch"),
                tail_lines(&workspace_log(rc, name, "pulumi"), 30),
                rc.operator_log(),
                rc.diagnose()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Waits until Stack `default/<name>` is Ready after a succeeded update (240 s at most).
pub async fn wait_ready_after_success(rc: &RealCluster, name: &str) -> serde_json::Value {
    wait_stack(
        rc,
        name,
        std::time::Duration::from_secs(240),
        "Ready after a succeeded update",
        |s| {
            super::condition(s, "Ready").is_some_and(|c| c["status"] == "True")
                && s["status"]["lastUpdate"]["state"] == "succeeded"
        },
    )
    .await
}
