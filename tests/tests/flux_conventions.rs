//! Flux's conventions on a Stack, on a real node with the real CLI: `spec.suspend` holds a
//! Stack (a new revision, a resync or a reconcile request starts nothing; Ready keeps its
//! status, reason `Suspended`) until it is resumed, which deploys what changed meanwhile; and
//! `reconcile.fluxcd.io/requestedAt` (what `flux reconcile` sets) forces an update, its value
//! recorded in `status.lastHandledReconcileAt` once that update has finished.

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
