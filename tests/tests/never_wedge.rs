//! Stacks that never wedge (issue 20), on a real node with the real CLI.
//!
//! While an update runs its workspace pod is marked as not to be evicted (the
//! cluster-autoscaler's and Karpenter's annotations), and the mark is taken off after; a change
//! of a Stack's config values is applied to the running workspace pod, without a restart
//! (PKO#965), while a config key removed gets a fresh pod, since `config set-all` cannot take a
//! key away. An operator that dies mid-update leaves no Update `Progressing`: the next one ends
//! it `Aborted`, unmarks its pod, and the Stack's retry runs once (the program waits at a gate,
//! a named pipe, so the update is surely cut off in its middle). A workspace pod's processes
//! killed while a provider creates a resource leave the stack locked and the create pending: the next
//! update refuses to run over it (`pendingOperations: Fail`), or releases the lock and
//! resolves it with a refresh (`Refresh`), saying so in an event.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, events_for, fault, gate};

async fn pod(rc: &RealCluster) -> Pod {
    gate::pod_of(rc, "wedge").await
}

async fn workspace_reasons(rc: &RealCluster) -> Vec<(String, String)> {
    events_for(&rc.cp, "default", "Workspace", "wedge")
        .await
        .into_iter()
        .map(|(_, reason, message)| (reason, message))
        .collect()
}

/// One merge patch of the Stack's `config` (a key set to null is removed).
async fn patch_config(rc: &RealCluster, config: Value) {
    let stacks: Api<kube::api::DynamicObject> =
        Api::namespaced_with(rc.cp.client(), "default", &support::stacks());
    stacks
        .patch(
            "wedge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"config": config}})),
        )
        .await
        .expect("patch the Stack's config");
}

async fn wait_outputs(rc: &RealCluster, outputs: Value) -> Value {
    real_node::wait_stack(
        rc,
        "wedge",
        Duration::from_secs(180),
        &format!("Ready with outputs {outputs}"),
        |s| {
            support::condition(s, "Ready").is_some_and(|c| c["status"] == "True")
                && s["status"]["lastUpdate"]["state"] == "succeeded"
                && s["status"]["outputs"] == outputs
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_guard_their_pod_and_config_values_change_without_a_restart() {
    let rc = real_node::start_installed().await;
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "wedge",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", support::CONFIG_PROGRAM)],
    )
    .await;
    let guards = gate::watch_guards(&rc);
    let state = shared_state();
    let mut spec = flux_ref("wedge", "app");
    spec["config"] = json!({"greeting": "hello", "extra": "one"});
    rc.cp
        .apply_yaml(
            &stack_yaml_with("wedge", (rc.images.pulumi.as_str(), state.path()), spec),
            "stack",
            "default",
        )
        .await
        .expect("Stack");

    // The first update: its pod was marked while it ran, and is not any more.
    wait_outputs(&rc, json!({"greeting": "hello", "extra": "one"})).await;
    let first = pod(&rc).await;
    let uid = first.metadata.uid.clone().expect("uid");
    assert!(
        guards.lock().expect("guards").contains(&uid),
        "the pod was never seen marked not to be evicted during the update"
    );
    assert!(
        !gate::guarded(&first),
        "still marked: {:?}",
        first.metadata.annotations
    );
    let managers: Vec<String> = first
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m.contains("update-guard")),
        "a guard's field manager is left: {managers:?}"
    );

    // A value changes: the next update runs on the same pod, with the new value.
    patch_config(&rc, json!({"greeting": "bonjour"})).await;
    wait_outputs(&rc, json!({"greeting": "bonjour", "extra": "one"})).await;
    let same = pod(&rc).await;
    let events = workspace_reasons(&rc).await;
    assert_eq!(
        same.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "the pod was replaced for a config change; workspace events: {events:?}"
    );
    assert!(
        events.iter().any(|(r, m)| r == "Reconfigured"
            && m.contains("wedge-workspace-0")
            && m.contains("without restarting")),
        "{events:?}"
    );
    assert!(!events.iter().any(|(r, _)| r == "Restarting"), "{events:?}");
    let guarded_uids = guards.lock().expect("guards").len();
    assert_eq!(
        guarded_uids, 1,
        "one pod, marked during each of its updates"
    );

    // A key goes: only a new pod forgets it, said by a Restarting event.
    patch_config(&rc, json!({"extra": null})).await;
    wait_outputs(&rc, json!({"greeting": "bonjour", "extra": "none"})).await;
    let renewed = pod(&rc).await;
    let events = workspace_reasons(&rc).await;
    assert_ne!(
        renewed.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Restarting" && m.contains("extra") && m.contains("was removed")),
        "{events:?}"
    );
    assert!(
        !gate::guarded(&renewed),
        "{:?}",
        renewed.metadata.annotations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_cut_off_by_an_operator_crash_ends_aborted_and_runs_once_more() {
    let rc = real_node::start_installed().await;
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "gated",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", gate::GATED)],
    )
    .await;
    let state = shared_state();
    let fifo = gate::make(state.path());
    let guards = gate::watch_guards(&rc);
    rc.cp
        .apply_yaml(
            &stack_yaml_with(
                "gated",
                (rc.images.pulumi.as_str(), state.path()),
                flux_ref("gated", "app"),
            ),
            "stack",
            "default",
        )
        .await
        .expect("Stack");

    // The update runs and waits at the gate: its pod is marked.
    let cluster = &rc;
    let running = gate::running(cluster).await;
    support::wait_for(Duration::from_secs(30), "the pod marked", || {
        let guards = Arc::clone(&guards);
        async move { (!guards.lock().ok()?.is_empty()).then_some(()) }
    })
    .await;

    // The operator dies mid-update (no time to finish anything), and a new one takes over.
    rc.kubectl(&[
        "delete",
        "pod",
        "-n",
        "pulumi-kubernetes-operator",
        "-l",
        "control-plane=controller-manager",
        "--grace-period=0",
        "--force",
    ])
    .expect("delete the operator's pod");

    // The cut-off Update ends Aborted (the slot is free), and a retry runs: it waits at the
    // gate too, and passes once the gate opens.
    let aborted = gate::ended(cluster, &running, Duration::from_secs(150)).await;
    assert_eq!(aborted.2, "Aborted", "{aborted:?}");
    assert_eq!(aborted.0, running);
    gate::open(&fifo, Duration::from_secs(150)).await;
    let s = real_node::wait_ready_after_success(&rc, "gated").await;
    assert_eq!(s["status"]["outputs"], json!({"passed": "open"}), "{s:#}");

    // One retry, none left running, nothing marked.
    let all = gate::update_states(&rc).await;
    assert_eq!(all.len(), 2, "the cut-off update and one retry: {all:?}");
    assert_eq!(all[1].2, "UpdateSucceeded", "{all:?}");
    assert!(
        all.iter().all(|(_, p, _, c)| p == "False" && c == "True"),
        "{all:?}"
    );
    let p = gate::pod_of(&rc, "gated").await;
    assert!(!gate::guarded(&p), "{:?}", p.metadata.annotations);
}

/// A program whose one resource waits at the gate while the provider creates it (the gate
/// provider, ours, installed in the test image at the version pinned here, so that `pulumi
/// install` downloads nothing): killed there, `up` leaves that create pending.
const PENDING: &str = r#"name: pending
runtime: yaml
resources:
  thing:
    type: gate:index:Resource
    properties:
      pipe: /state/gate
      value: one
    options:
      version: 0.1.0
outputs:
  value: ${thing.value}
"#;

/// The pending operations and the gate resources in the stack's state, from the file
/// backend's own file.
fn state_of(state: &std::path::Path) -> (Vec<Value>, usize) {
    let file = state.join(".pulumi/stacks/pending/pending.json");
    let text = std::fs::read_to_string(&file).expect("the stack's state file");
    let v: Value = serde_json::from_str(&text).expect("state JSON");
    let d = &v["checkpoint"]["latest"];
    let pending = d["pending_operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let things = d["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "gate:index:Resource")
        .count();
    (pending, things)
}

async fn update_message(rc: &RealCluster, name: &str) -> String {
    let u = support::get_json(&rc.cp, &support::updates(), "default", name)
        .await
        .expect("the Update");
    u["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_create_leaves_a_pending_create_refused_then_resolved() {
    let rc = real_node::start_installed().await;
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "pending",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", PENDING)],
    )
    .await;
    let state = shared_state();
    let fifo = gate::make(state.path());
    let mut spec = flux_ref("pending", "app");
    spec["pendingOperations"] = json!("Fail");
    rc.cp
        .apply_yaml(
            &stack_yaml_with("pending", (rc.images.pulumi.as_str(), state.path()), spec),
            "stack",
            "default",
        )
        .await
        .expect("Stack");

    // The provider waits inside its create, which the engine has recorded as pending; every
    // process of the pod's pulumi container (agent, CLI, provider) is killed there at once,
    // as the OOM killer or a crashed node would: none cleans up. (Not a forced delete of the
    // pod: the kubelet may then let the old pod run for its grace period, 600 s.) The kubelet
    // restarts the container; the retries run in it.
    let first = gate::running(&rc).await;
    gate::wait_reader(&rc, "pending", Duration::from_secs(120)).await;
    let container = gate::pulumi_container(&rc, "pending").await;
    assert!(
        fault::kill_container(&container) >= 3,
        "the agent, the CLI and the provider killed"
    );
    let cut = gate::ended(&rc, &first, Duration::from_secs(120)).await;
    assert_eq!(cut.2, "Aborted", "{cut:?}");
    let (pending, _) = state_of(state.path());
    assert_eq!(pending.len(), 1, "the create left pending: {pending:?}");
    assert_eq!(pending[0]["type"], "creating", "{pending:?}");

    // Fail: the retry runs nothing and says what is pending and what to run.
    let refused = support::wait_for(
        Duration::from_secs(240),
        "an update refused over the pending create",
        || async {
            gate::update_states(&rc)
                .await
                .into_iter()
                .find(|(_, _, reason, _)| reason == "PendingOperations")
                .map(|(name, ..)| name)
        },
    )
    .await;
    let message = update_message(&rc, &refused).await;
    assert!(
        message.contains("lists 1 operation(s) left pending")
            && message.contains("creating urn:pulumi:pending::pending::gate:index:Resource::thing")
            && message.contains("pulumi refresh --clear-pending-creates --yes --stack pending"),
        "{message}"
    );
    let s = support::get_json(&rc.cp, &support::stacks(), "default", "pending")
        .await
        .expect("Stack");
    assert_ne!(
        support::condition(&s, "Ready").map(|c| c["status"].clone()),
        Some(json!("True")),
        "{s:#}"
    );
    let stack_events = events_for(&rc.cp, "default", "Stack", "pending").await;
    assert!(
        stack_events
            .iter()
            .any(|(_, r, m)| r == "StackPendingOperations"
                && m.contains(
                    "kubectl exec -n default pending-workspace-0 -c pulumi -- pulumi refresh"
                )),
        "{stack_events:?}"
    );
    assert_eq!(
        state_of(state.path()).0.len(),
        1,
        "still pending: nothing ran"
    );

    // Refresh: the next update releases the lock the killed CLI left, resolves the create with
    // a refresh, then creates the resource (through the gate again) and succeeds.
    let stacks: Api<kube::api::DynamicObject> =
        Api::namespaced_with(rc.cp.client(), "default", &support::stacks());
    stacks
        .patch(
            "pending",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"pendingOperations": "Refresh"}})),
        )
        .await
        .expect("patch pendingOperations");
    gate::open(&fifo, Duration::from_secs(240)).await;
    let s = real_node::wait_ready_after_success(&rc, "pending").await;
    assert_eq!(s["status"]["outputs"], json!({"value": "one"}), "{s:#}");
    let stack_events = events_for(&rc.cp, "default", "Stack", "pending").await;
    let recovered: Vec<&String> = stack_events
        .iter()
        .filter(|(_, r, _)| r == "InterruptedUpdateRecovered")
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(recovered.len(), 1, "{stack_events:?}");
    assert!(
        recovered[0].contains("released the stack lock it left (")
            && recovered[0].contains("@pending-workspace-0 (pid ")
            && recovered[0].contains("--clear-pending-creates")
            && recovered[0]
                .contains("creating urn:pulumi:pending::pending::gate:index:Resource::thing"),
        "{}",
        recovered[0]
    );
    let (pending, things) = state_of(state.path());
    assert!(pending.is_empty(), "resolved: {pending:?}");
    assert_eq!(things, 1, "one resource in the state");
    let all = gate::update_states(&rc).await;
    assert!(
        all.iter().all(|(_, p, _, c)| p == "False" && c == "True"),
        "none left running: {all:?}"
    );
}
