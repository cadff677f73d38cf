//! Two replicas, as a Deployment of `replicas: 2` runs them (PKO's chart takes
//! `replicaCount`): one leads and reconciles, the other waits, ready, for the lease; when the
//! leader dies without a word (SIGKILL: no release), the other takes the lease once it expires
//! and reconciles. Both have the same host name, as two `hostNetwork` pods on one node do: their
//! identities still differ (host name plus a random part, as controller-runtime makes them).

mod support;

use std::time::Duration;

use e2e::ControlPlane;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use support::operator::{self, OPERATOR_NS, shared_state, stack_yaml_with};
use support::{get_json, stacks, wait_for};

async fn holder(cp: &ControlPlane) -> Option<String> {
    Api::<Lease>::namespaced(cp.client(), OPERATOR_NS)
        .get_opt("operator.pulumi.com")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Applies a Stack whose Program does not exist and waits until a replica has written its
/// status (the Program's absence, in a condition): a leader is reconciling.
async fn reconciled(cp: &ControlPlane, name: &str) {
    let state = shared_state();
    cp.apply_yaml(
        &stack_yaml_with(
            name,
            ("img", state.path()),
            json!({"programRef": {"name": "missing"}}),
        ),
        name,
        "default",
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    wait_for(
        Duration::from_secs(60),
        &format!("{name} reconciled"),
        || async {
            get_json(cp, &stacks(), "default", name)
                .await
                .filter(|s| s["status"]["conditions"].is_array())
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_when_the_leader_dies() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let kubeconfig = operator::install(&cp).await;
    let env = [("HOSTNAME", "shared-host")];
    let first = operator::start(&cp, &kubeconfig, &env).await;
    wait_for(
        Duration::from_secs(30),
        "the first replica to lead",
        || async { first.log().contains("became the leader").then_some(()) },
    )
    .await;
    let led_by = holder(&cp).await.expect("a lease holder");
    assert!(
        led_by.starts_with("shared-host_") && led_by.len() > "shared-host_".len(),
        "host name and a random part: {led_by}"
    );
    let second = operator::start(&cp, &kubeconfig, &env).await;
    wait_for(
        Duration::from_secs(30),
        "the second replica to wait",
        || async {
            second
                .log()
                .contains("another replica leads; waiting for the lease")
                .then_some(())
        },
    )
    .await;
    reconciled(&cp, "before").await;
    assert!(
        !second.log().contains("became the leader"),
        "one leader at a time:\n{}",
        second.log()
    );
    assert_eq!(holder(&cp).await.as_deref(), Some(led_by.as_str()));

    // The leader dies without releasing the lease.
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(first.process.pid() as i32, libc::SIGKILL) };
    wait_for(
        Duration::from_secs(60),
        "the second replica to lead",
        || async { second.log().contains("became the leader").then_some(()) },
    )
    .await;
    let now = holder(&cp).await.expect("a lease holder");
    assert!(
        now != led_by && now.starts_with("shared-host_"),
        "{led_by} -> {now}"
    );
    reconciled(&cp, "after").await;
    drop(first);
}
