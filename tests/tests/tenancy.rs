//! Tenancy and scale-out on a real node, with Flux's flag names:
//! - a namespace-scoped install (`config/namespaced`: `--watch-namespace=stacks`, Roles only,
//!   no ClusterRole or ClusterRoleBinding of the operator's) takes a Stack in `stacks` to
//!   Ready, leaves one in another namespace alone, and is never refused a call;
//! - two operator shards (two releases of our chart, `--watch-label-selector`
//!   `sharding.fluxcd.io/key=shard1` and `=shard2`) each take their own Stacks to Ready,
//!   label what they make for them, elect their own leaders, and never touch the other's
//!   Stacks or the unlabeled one; `--default-service-account` runs the workspace pod of a
//!   Stack that names none as that account; under `--no-cross-namespace-refs` a Secret named
//!   in another namespace stalls the Stack.

mod support;

use std::path::Path;
use std::time::Duration;

use e2e::control_plane::repo_root;
use e2e::in_cluster::{OPERATOR_NAMESPACE, install_operator_from, wait_available};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, condition, get_json, helm, stacks, updates, wait_for, workspaces};

const SHARD_KEY: &str = "sharding.fluxcd.io/key";

/// A provider-free program saying `greeting`.
fn program(greeting: &str) -> String {
    format!("name: tenancy\nruntime: yaml\noutputs:\n  greeting: {greeting}\n")
}

/// A Stack of `source` (a GitRepository of its namespace, program in `app/`) with `labels`,
/// its state in `state`; `named_account`: whether it names its pods' account (`pulumi`).
fn stack(
    name: &str,
    source: &str,
    rc: &RealCluster,
    state: &Path,
    labels: Value,
    named_account: bool,
) -> Value {
    let yaml = stack_yaml_with(name, (&rc.images.pulumi, state), flux_ref(source, "app"));
    let mut s: Value = serde_json::from_str(&yaml).expect("the Stack");
    s["metadata"]["labels"] = labels;
    if !named_account && let Some(spec) = s["spec"].as_object_mut() {
        spec.remove("serviceAccountName");
    }
    s
}

/// The workspace pods' account in `ns`: the agent checks the operator's token with TokenReview
/// and SubjectAccessReview (system:auth-delegator), as config/samples/service_account.yaml.
async fn workspace_account(rc: &RealCluster, ns: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: pulumi, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {{name: '{ns}:pulumi:system:auth-delegator'}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}\n\
         subjects: [{{kind: ServiceAccount, name: pulumi, namespace: {ns}}}]\n"
    );
    rc.cp
        .apply_yaml(&yaml, "workspace account", ns)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn namespace(rc: &RealCluster, ns: &str) {
    rc.cp
        .apply_yaml(
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            "namespace",
            "default",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until Stack `ns/name` is Ready after a succeeded update; fails with the operator
/// log of `deployment` (in `operator_ns`).
async fn wait_ready(
    rc: &RealCluster,
    ns: &str,
    name: &str,
    operator_ns: &str,
    deployment: &str,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let s = get_json(&rc.cp, &stacks(), ns, name).await;
        if let Some(s) = &s
            && condition(s, "Ready").is_some_and(|c| c["status"] == "True")
            && s["status"]["lastUpdate"]["state"] == "succeeded"
        {
            return s.clone();
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "Stack {ns}/{name} not Ready: {:#}\nevents: {:?}\noperator:\n{}\npods:\n{}",
                s.map(|s| s["status"].clone()).unwrap_or_default(),
                support::events_for(&rc.cp, ns, "Stack", name).await,
                real_node::tail_lines(&operator_log(rc, operator_ns, deployment), 60),
                rc.kubectl(&["get", "pods", "-A", "-o", "wide"])
                    .unwrap_or_else(|e| e)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn operator_log(rc: &RealCluster, ns: &str, deployment: &str) -> String {
    rc.kubectl(&["logs", "-n", ns, &format!("deploy/{deployment}")])
        .unwrap_or_else(|e| e)
}

/// Whether the operator ever acted on Stack `ns/name`: a finalizer, a status.
async fn untouched(rc: &RealCluster, ns: &str, name: &str) -> Result<(), String> {
    let s = get_json(&rc.cp, &stacks(), ns, name)
        .await
        .ok_or_else(|| format!("Stack {ns}/{name} is gone"))?;
    let finalizers = &s["metadata"]["finalizers"];
    let status = &s["status"];
    // The CRD's default status (observedGeneration 0) is the API server's, not ours.
    if finalizers.is_null() && (status.is_null() || *status == json!({"observedGeneration": 0})) {
        Ok(())
    } else {
        Err(format!(
            "Stack {ns}/{name} was acted on: finalizers {finalizers}, status {status:#}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_install_needs_only_roles() {
    let mut rc = real_node::start_with_dependencies().await;
    install_operator_from(
        &rc.cp,
        &mut rc.node,
        "config/namespaced",
        &rc.images.operator,
        &rc.images.fetch,
    )
    .await
    .unwrap_or_else(|e| panic!("config/namespaced: {e}"));

    // Nothing cluster-wide is the operator's: no ClusterRoleBinding names its account.
    let bindings = rc
        .kubectl(&["get", "clusterrolebindings", "-o", "json"])
        .unwrap_or_else(|e| panic!("{e}"));
    let bindings: Value = serde_json::from_str(&bindings).expect("JSON");
    let operators: Vec<&Value> = bindings["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|b| {
            b["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["namespace"] == OPERATOR_NAMESPACE && s["name"] == "controller-manager"
                })
            })
        })
        .collect();
    assert!(operators.is_empty(), "{operators:#?}");

    for ns in ["stacks", "elsewhere"] {
        namespace(&rc, ns).await;
        workspace_account(&rc, ns).await;
    }
    let fx = FluxFixture::in_cluster_in(&rc.cp, "team", rc.network.gateway(), "stacks").await;
    let other =
        FluxFixture::in_cluster_in(&rc.cp, "other", rc.network.gateway(), "elsewhere").await;
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", &program("hello, tenant"))], "program")
        .expect("commit");
    let other_sha = other
        .repo
        .commit(&[("app/Pulumi.yaml", &program("not mine"))], "program")
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    other.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    other.wait_revision(&rc.cp, &other_sha).await;
    let state = shared_state();
    for (ns, source) in [("stacks", "team"), ("elsewhere", "other")] {
        let s = stack("app", source, &rc, state.path(), json!({}), true);
        rc.cp
            .apply_yaml(&s.to_string(), "Stack", ns)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let s = wait_ready(
        &rc,
        "stacks",
        "app",
        OPERATOR_NAMESPACE,
        "controller-manager",
    )
    .await;
    assert_eq!(s["status"]["outputs"]["greeting"], "hello, tenant", "{s:#}");
    untouched(&rc, "elsewhere", "app")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let log = operator_log(&rc, OPERATOR_NAMESPACE, "controller-manager");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "Roles in `stacks` and the operator's namespace cover every call:\n{}",
        refused.join("\n")
    );
    assert!(
        log.contains("namespaces=stacks") || log.contains("\"namespaces\":\"stacks\""),
        "the operator says what it watches:\n{}",
        real_node::tail_lines(&log, 40)
    );
}

/// One release of our chart as a shard: `--watch-label-selector` `<key>=<shard>`, plus `extra`
/// values.
fn install_shard(rc: &RealCluster, shard: &str, extra: &[&str]) {
    let selector = format!("controller.watchLabelSelector={SHARD_KEY}={shard}");
    let mut values = vec![selector.as_str()];
    values.extend_from_slice(extra);
    let chart = repo_root().join("config/helm/pulumi-operator");
    helm::install(rc, shard, &chart, OPERATOR_NAMESPACE, &values).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_stacks_by_label_and_never_touch_each_others() {
    let mut rc = real_node::start_with_dependencies().await;
    install_shard(&rc, "shard1", &["controller.defaultServiceAccount=pulumi"]);
    install_shard(&rc, "shard2", &["controller.noCrossNamespaceRefs=true"]);
    for shard in ["shard1", "shard2"] {
        wait_available(
            &rc.cp,
            &mut rc.node,
            OPERATOR_NAMESPACE,
            &format!("{shard}-pulumi-kubernetes-operator-controller-manager"),
            &format!("app.kubernetes.io/instance={shard}"),
            Duration::from_secs(120),
        )
        .await
        .unwrap_or_else(|e| panic!("{shard}: {e}"));
    }
    workspace_account(&rc, "default").await;
    let fx = FluxFixture::in_cluster(&rc.cp, "shared", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", &program("sharded"))], "program")
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;

    // alpha names no account: shard1's --default-service-account runs it as `pulumi` (the
    // `default` account could not pass the agent's TokenReview). bravo is shard2's; charlie
    // is no shard's; delta is shard2's and names a Secret in another namespace.
    let state = shared_state();
    let stack = |name: &str, labels: Value, named_account: bool| {
        stack(name, "shared", &rc, state.path(), labels, named_account)
    };
    let mut delta = stack("delta", json!({SHARD_KEY: "shard2"}), true);
    delta["spec"]["envRefs"]["TOKEN"] = json!({"type": "Secret",
        "secret": {"namespace": "kube-system", "name": "token", "key": "token"}});
    for s in [
        stack("alpha", json!({SHARD_KEY: "shard1"}), false),
        stack("bravo", json!({SHARD_KEY: "shard2"}), true),
        stack("charlie", json!({}), true),
        delta,
    ] {
        rc.cp
            .apply_yaml(&s.to_string(), "Stack", "default")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let deployment = |shard: &str| format!("{shard}-pulumi-kubernetes-operator-controller-manager");
    for (name, shard) in [("alpha", "shard1"), ("bravo", "shard2")] {
        let s = wait_ready(&rc, "default", name, OPERATOR_NAMESPACE, &deployment(shard)).await;
        assert_eq!(s["status"]["outputs"]["greeting"], "sharded", "{s:#}");
        // What the shard made for the Stack carries the shard's label, so it reconciles it.
        let ws = get_json(&rc.cp, &workspaces(), "default", name)
            .await
            .unwrap_or_else(|| panic!("{name}'s Workspace"));
        assert_eq!(ws["metadata"]["labels"][SHARD_KEY], shard, "{ws:#}");
        let update = s["status"]["lastUpdate"]["name"]
            .as_str()
            .expect("the last Update");
        let u = get_json(&rc.cp, &updates(), "default", update)
            .await
            .unwrap_or_else(|| panic!("Update {update}"));
        assert_eq!(u["metadata"]["labels"][SHARD_KEY], shard, "{u:#}");
    }
    let pods: Api<Pod> = Api::namespaced(rc.cp.client(), "default");
    let alpha_pod = pods
        .get("alpha-workspace-0")
        .await
        .expect("alpha's workspace pod");
    assert_eq!(
        alpha_pod
            .spec
            .and_then(|s| s.service_account_name)
            .as_deref(),
        Some("pulumi"),
        "--default-service-account"
    );

    let delta = wait_for(Duration::from_secs(60), "delta to stall", || async {
        let s = get_json(&rc.cp, &stacks(), "default", "delta").await?;
        condition(&s, "Stalled").filter(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(delta["reason"], "SpecInvalid", "{delta:#}");
    let message = delta["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cross-namespace") && message.contains("kube-system/token"),
        "{message}"
    );

    untouched(&rc, "default", "charlie")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Each shard's log names its own Stacks only.
    for (shard, own, others) in [
        ("shard1", "alpha", &["bravo", "charlie", "delta"][..]),
        ("shard2", "bravo", &["alpha", "charlie"][..]),
    ] {
        let log = operator_log(&rc, OPERATOR_NAMESPACE, &deployment(shard));
        assert!(
            log.contains(own),
            "{shard}:\n{}",
            real_node::tail_lines(&log, 40)
        );
        for other in others {
            assert!(
                !log.contains(&format!("name={other}")) && !log.contains(&format!("\"{other}\"")),
                "{shard} touched {other}:\n{log}"
            );
        }
    }
    // Two leaders: a lease per shard, each held by that shard's pod.
    let leases: Api<Lease> = Api::namespaced(rc.cp.client(), OPERATOR_NAMESPACE);
    let held: Vec<String> = leases
        .list(&ListParams::default())
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter(|l| {
            l.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("operator.pulumi.com"))
        })
        .filter_map(|l| l.spec?.holder_identity)
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter().any(|h| h.starts_with("shard1-"))
            && held.iter().any(|h| h.starts_with("shard2-")),
        "{held:?}"
    );
}
