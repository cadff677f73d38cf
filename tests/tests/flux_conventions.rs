//! Flux's conventions on a Stack, on a real node with the real CLI: `spec.suspend` holds a
//! Stack (a new revision, a resync or a reconcile request starts nothing; Ready keeps its
//! status, reason `Suspended`) until it is resumed, which deploys what changed meanwhile; and
//! `reconcile.fluxcd.io/requestedAt` (what `flux reconcile` sets) forces an update, its value
//! recorded in `status.lastHandledReconcileAt` once that update has finished; Flux's own
//! kustomize-controller reads a Stack's health (kstatus) right; and `spec.outputsSecretRef`,
//! the outputs in a Secret the Stack owns.

mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, condition, get_json, stacks, updates};

const PROGRAM: &str = "name: conventions\nruntime: yaml\noutputs:\n  greeting: hello\n";

async fn update_names(rc: &RealCluster, stack: &str) -> Vec<String> {
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", &updates());
    let lp = ListParams::default().labels(&format!("pulumi.com/stack-name={stack}"));
    let mut names: Vec<String> = api
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort();
    names
}

async fn patch(rc: &RealCluster, name: &str, body: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", &stacks());
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("patching Stack {name}: {e}"));
}

fn ready(s: &Value) -> (String, String) {
    let c = condition(s, "Ready").unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_a_stack_and_fluxs_reconcile_request_forces_an_update() {
    let rc = real_node::start_installed().await;
    let fx = FluxFixture::in_cluster(&rc.cp, "conventions", rc.network.gateway()).await;
    let first = fx
        .repo
        .commit(&[("app/Pulumi.yaml", PROGRAM)], "one")
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &first).await;
    let state = shared_state();
    rc.cp
        .apply_yaml(
            &stack_yaml_with(
                "held",
                (&rc.images.pulumi, state.path()),
                flux_ref("conventions", "app"),
            ),
            "stack",
            "default",
        )
        .await
        .expect("stack");
    real_node::wait_ready_after_success(&rc, "held").await;
    assert_eq!(update_names(&rc, "held").await.len(), 1);

    // Suspended: Ready stays True, with its reason; a new revision and a reconcile request
    // start nothing.
    patch(&rc, "held", json!({"spec": {"suspend": true}})).await;
    let s = real_node::wait_stack(
        &rc,
        "held",
        Duration::from_secs(60),
        "Ready with reason Suspended",
        |s| ready(s) == ("True".into(), "Suspended".into()),
    )
    .await;
    assert!(condition(&s, "Reconciling").is_none(), "{s:#}");
    let second = fx
        .repo
        .commit(
            &[("app/Pulumi.yaml", &PROGRAM.replace("hello", "bonjour"))],
            "two",
        )
        .expect("commit");
    fx.request_reconcile(&rc.cp).await;
    fx.wait_revision(&rc.cp, &second).await;
    let requested = "2026-12-07T10:00:00Z";
    patch(
        &rc,
        "held",
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": requested}}}),
    )
    .await;
    // The operator sees the artifact and the annotation within a second or two; it must
    // still have started nothing after several.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        update_names(&rc, "held").await.len(),
        1,
        "an update while suspended"
    );
    let s = get_json(&rc.cp, &stacks(), "default", "held")
        .await
        .expect("the Stack");
    assert_eq!(s["status"]["outputs"], json!({"greeting": "hello"}));
    assert_eq!(ready(&s), ("True".into(), "Suspended".into()));
    assert!(s["status"]["lastHandledReconcileAt"].is_null(), "{s:#}");

    // Resumed: what changed meanwhile is deployed, and the request is handled with it.
    patch(&rc, "held", json!({"spec": {"suspend": false}})).await;
    let s = real_node::wait_stack(
        &rc,
        "held",
        Duration::from_secs(240),
        "the second revision deployed after resuming",
        |s| {
            s["status"]["outputs"] == json!({"greeting": "bonjour"})
                && ready(s) == ("True".into(), "ProcessingCompleted".into())
        },
    )
    .await;
    assert_eq!(s["status"]["lastHandledReconcileAt"], requested, "{s:#}");
    assert_eq!(update_names(&rc, "held").await.len(), 2);

    // A new request, nothing else changed: one more update, then recorded as handled.
    let again = "2026-12-07T10:05:00Z";
    patch(
        &rc,
        "held",
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": again}}}),
    )
    .await;
    let s = real_node::wait_stack(
        &rc,
        "held",
        Duration::from_secs(240),
        "the request handled",
        |s| s["status"]["lastHandledReconcileAt"] == again && ready(s).0 == "True",
    )
    .await;
    assert_eq!(s["status"]["lastUpdate"]["state"], "succeeded", "{s:#}");
    let names = update_names(&rc, "held").await;
    assert_eq!(names.len(), 3, "{names:?}");
    let last = get_json(&rc.cp, &updates(), "default", &names[2])
        .await
        .expect("the last Update");
    let message = last["spec"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Reconcile requested at"), "{message}");
    drop(fx);
}

/// `spec.outputsSecretRef`: the listed outputs (a secret one too) land in a Secret the Stack
/// owns, strings as text; an output that cannot be a Secret key, or a Secret that is someone
/// else's, stalls the Stack with a message naming it, and nothing is written over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_written_to_a_secret_the_stack_owns_or_the_stack_says_why_not() {
    use k8s_openapi::api::core::v1::Secret;
    let rc = real_node::start_installed().await;
    let fx = FluxFixture::in_cluster(&rc.cp, "outs", rc.network.gateway()).await;
    let program = "name: outs\nruntime: yaml\noutputs:\n  url: https://example.test\n  \
                   replicas: 3\n  token:\n    fn::secret: s3cr3t\n  db password: hunter2\n";
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", program)], "outputs")
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    let state = shared_state();
    let mut spec = flux_ref("outs", "app");
    spec["outputsSecretRef"] =
        json!({"name": "outs-outputs", "outputs": ["url", "replicas", "token"]});
    rc.cp
        .apply_yaml(
            &stack_yaml_with("outs", (&rc.images.pulumi, state.path()), spec),
            "stack",
            "default",
        )
        .await
        .expect("stack");
    let s = real_node::wait_ready_after_success(&rc, "outs").await;
    assert_eq!(s["status"]["outputs"]["token"], "[secret]", "{s:#}");
    let secrets: Api<Secret> = Api::namespaced(rc.cp.client(), "default");
    let secret = support::wait_for(Duration::from_secs(30), "the outputs Secret", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("outs-outputs").await.ok()? }
    })
    .await;
    let data: Vec<(String, String)> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    assert_eq!(
        data,
        [
            ("replicas".to_string(), "3".to_string()),
            ("token".into(), "s3cr3t".into()),
            ("url".into(), "https://example.test".into()),
        ]
    );
    let owner = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(),
        [s["metadata"]["uid"].as_str().unwrap_or_default()]
    );

    // Every output: "db password" cannot be a key; the Stack says so, the Secret is as it was.
    patch(
        &rc,
        "outs",
        json!({"spec": {"outputsSecretRef": {"outputs": null}}}),
    )
    .await;
    let stalled = outputs_stalled(&rc, "db password").await;
    assert_eq!(ready(&stalled).0, "False", "{stalled:#}");
    let unchanged = secrets.get("outs-outputs").await.expect("the Secret");
    assert_eq!(unchanged.data, secret.data);

    // Someone else's Secret of that name is left alone.
    rc.cp
        .apply_yaml(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken"},
                    "stringData": {"mine": "keep"}})
            .to_string(),
            "secret",
            "default",
        )
        .await
        .expect("secret");
    patch(
        &rc,
        "outs",
        json!({"spec": {"outputsSecretRef": {"name": "taken", "outputs": ["url"]}}}),
    )
    .await;
    outputs_stalled(&rc, "Secret taken exists and is not this Stack's").await;
    let taken = secrets.get("taken").await.expect("the Secret");
    let keys: Vec<String> = taken.data.unwrap_or_default().into_keys().collect();
    assert_eq!(keys, ["mine"]);
    drop(fx);
}

/// Waits until Stack `outs` stalls with `OutputsSecretInvalid`, its message containing `what`.
async fn outputs_stalled(rc: &RealCluster, what: &str) -> Value {
    real_node::wait_stack(
        rc,
        "outs",
        Duration::from_secs(240),
        &format!("OutputsSecretInvalid saying {what:?}"),
        |s| {
            condition(s, "Stalled").is_some_and(|c| {
                c["reason"] == "OutputsSecretInvalid"
                    && c["message"].as_str().unwrap_or_default().contains(what)
            })
        },
    )
    .await
}

/// kstatus, as Flux reads it: a Flux `Kustomization` with `wait: true` that applies a Stack
/// from git becomes Ready only once that Stack is Ready, as does one whose `healthChecks`
/// name the Stack, and one that applies a Stack that cannot progress (Stalled) fails, naming
/// it. Flux's own kustomize-controller does the reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxs_kustomize_controller_waits_for_stacks_and_reports_a_stalled_one() {
    let mut rc = real_node::start_installed().await;
    rc.install_kustomize_controller()
        .await
        .unwrap_or_else(|e| panic!("installing kustomize-controller: {e}"));
    let fx = FluxFixture::in_cluster(&rc.cp, "gitops", rc.network.gateway()).await;
    let state = shared_state();
    let manifest = |name: &str, source: Value| -> String {
        let json: Value = serde_json::from_str(&stack_yaml_with(
            name,
            (&rc.images.pulumi, state.path()),
            source,
        ))
        .expect("the Stack");
        serde_yaml::to_string(&json).expect("YAML")
    };
    let good = manifest("gitops", flux_ref("gitops", "app"));
    let sha = fx
        .repo
        .commit(
            &[
                ("app/Pulumi.yaml", PROGRAM),
                ("deploy/stack.yaml", &good),
                (
                    "health/configmap.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: needs-the-stack}\n",
                ),
            ],
            "a Stack and its program",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    let kustomization = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "stacks"},
        "spec": {"interval": "1m", "timeout": "3m", "path": "./deploy", "prune": true,
                 "targetNamespace": "default",
                 "wait": true, "sourceRef": {"kind": "GitRepository", "name": "gitops"}},
    });
    // Another applies something else and names the Stack in its healthChecks.
    let health = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "health"},
        "spec": {"interval": "1m", "timeout": "3m", "path": "./health", "prune": true,
                 "targetNamespace": "default",
                 "healthChecks": [{"apiVersion": "pulumi.com/v1", "kind": "Stack",
                                   "name": "gitops", "namespace": "default"}],
                 "sourceRef": {"kind": "GitRepository", "name": "gitops"}},
    });
    for k in [&kustomization, &health] {
        rc.cp
            .apply_yaml(&k.to_string(), "kustomization", "default")
            .await
            .expect("the Kustomization");
    }
    let kustomizations = support::resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    );

    // Ready only after the Stack is: each time the Kustomizations are seen, the Stack is
    // looked at right after; neither may be Ready while the Stack is not.
    let mut saw_waiting = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let k = loop {
        let k = get_json(&rc.cp, &kustomizations, "default", "stacks")
            .await
            .unwrap_or_default();
        let h = get_json(&rc.cp, &kustomizations, "default", "health")
            .await
            .unwrap_or_default();
        let s = get_json(&rc.cp, &stacks(), "default", "gitops").await;
        let stack_ready = s.as_ref().is_some_and(|s| {
            ready(s).0 == "True" && s["status"]["lastUpdate"]["state"] == "succeeded"
        });
        let (k_ready, h_ready) = (ready(&k).0 == "True", ready(&h).0 == "True");
        for (name, ready, obj) in [("stacks", k_ready, &k), ("health", h_ready, &h)] {
            assert!(
                !ready || stack_ready,
                "Kustomization {name} is Ready before the Stack: {obj:#}\n{s:#?}"
            );
        }
        if k_ready && h_ready {
            break k;
        }
        saw_waiting |= s.is_some() && !stack_ready;
        assert!(
            std::time::Instant::now() < deadline,
            "the Kustomization never became Ready: {k:#}\n{s:#?}\n{}",
            rc.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(saw_waiting, "the Kustomization waited for the Stack: {k:#}");

    // A second Stack whose source does not exist stalls; the Kustomization fails on it.
    let broken = manifest("broken", flux_ref("nowhere", "app"));
    let sha = fx
        .repo
        .commit(
            &[("deploy/broken.yaml", &broken)],
            "a Stack that cannot progress",
        )
        .expect("commit");
    fx.request_reconcile(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    patch_kustomization(&rc, &kustomizations).await;
    let failed = support::wait_for(
        Duration::from_secs(300),
        "the Kustomization to fail on the stalled Stack",
        || async {
            let k = get_json(&rc.cp, &kustomizations, "default", "stacks").await?;
            let c = condition(&k, "Ready")?;
            (c["status"] == "False" && c["message"].as_str().unwrap_or_default().contains("broken"))
                .then_some(c)
        },
    )
    .await;
    let s = get_json(&rc.cp, &stacks(), "default", "broken")
        .await
        .expect("the broken Stack");
    assert_eq!(
        condition(&s, "Stalled").map(|c| c["status"].clone()),
        Some(json!("True")),
        "{s:#}"
    );
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Stack"),
        "{failed:#}"
    );
    drop(fx);
}

/// `flux reconcile kustomization`'s request.
async fn patch_kustomization(rc: &RealCluster, ar: &kube::api::ApiResource) {
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", ar);
    let at = jiff::Timestamp::now().to_string();
    api.patch(
        "stacks",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}}),
        ),
    )
    .await
    .expect("annotate the Kustomization");
}
