//! The approval gate (issue 21), on a real node with the real CLI: a Stack with
//! `approval.required` previews each change into an update plan that waits in
//! `status.pendingPlan`; an approval naming another plan applies nothing; approving the plan's
//! id applies exactly it (`pulumi up --plan`); when the world changed between plan and
//! approval the update fails with the CLI's reason and a new plan is made, which a stale
//! approval does not apply.
//!
//! The program's one resource (the gate provider's, ours) takes its value from a file in the
//! state directory (a hostPath the test writes): what "the world" is here.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::FluxFixture;
use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};

fn program(extra: &str) -> String {
    format!(
        r#"name: approval
runtime: yaml
variables:
  wanted:
    fn::readFile: /state/wanted
resources:
  thing:
    type: gate:index:Resource
    properties:
      value: ${{wanted}}
    options:
      version: 0.1.0
outputs:
  value: ${{thing.value}}
  extra: {extra}
"#
    )
}

const THING: &str = "urn:pulumi:approval::approval::gate:index:Resource::thing";

/// The gate resource's value in the stack's state (None before it exists).
fn applied(state: &std::path::Path) -> Option<Value> {
    let text = std::fs::read_to_string(state.join(".pulumi/stacks/approval/approval.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["checkpoint"]["latest"]["resources"]
        .as_array()?
        .iter()
        .find(|r| r["urn"] == THING)
        .map(|r| r["outputs"]["value"].clone())
}

async fn approve(rc: &RealCluster, id: &str) {
    rc.kubectl(&[
        "annotate",
        "stack",
        "approval",
        "-n",
        "default",
        "--overwrite",
        &format!("pulumi.com/approve={id}"),
    ])
    .expect("annotate");
}

/// Waits for a plan other than `not` to await approval; the Stack.
async fn plan_other_than(rc: &RealCluster, not: &str) -> Value {
    real_node::wait_stack(
        rc,
        "approval",
        Duration::from_secs(240),
        &format!("a plan other than {not:?} awaiting approval"),
        |s| {
            s["status"]["pendingPlan"]["id"]
                .as_str()
                .is_some_and(|id| id != not)
                && support::condition(s, "AwaitingApproval").is_some_and(|c| c["status"] == "True")
        },
    )
    .await
}

async fn events(rc: &RealCluster, reason: &str) -> Vec<String> {
    support::events_for(&rc.cp, "default", "Stack", "approval")
        .await
        .into_iter()
        .filter(|(_, r, _)| r == reason)
        .map(|(_, _, m)| m)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_waits_for_approval_is_applied_exactly_and_a_stale_one_never() {
    let rc = real_node::start_installed().await;
    let first = program("one");
    let (fx, _) = FluxFixture::serving(
        &rc.cp,
        "approval",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", first.as_str())],
    )
    .await;
    let state = shared_state();
    let wanted = state.path().join("wanted");
    std::fs::write(&wanted, "one").expect("wanted");
    let mut spec = flux_ref("approval", "app");
    spec["approval"] = json!({"required": true});
    rc.cp
        .apply_yaml(
            &stack_yaml_with("approval", (rc.images.pulumi.as_str(), state.path()), spec),
            "stack",
            "default",
        )
        .await
        .expect("Stack");

    // The plan waits; nothing is applied.
    let s = plan_other_than(&rc, "").await;
    let plan = &s["status"]["pendingPlan"];
    let id = plan["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 16, "{plan:#}");
    assert!(
        plan["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["urn"] == THING && r["operation"] == "create"),
        "{plan:#}"
    );
    assert_ne!(
        support::condition(&s, "Ready").map(|c| c["status"].clone()),
        Some(json!("True")),
        "{:#}",
        s["status"]
    );
    assert_eq!(
        support::condition(&s, "Reconciling").map(|c| c["reason"].clone()),
        Some(json!("AwaitingApproval"))
    );
    let ready = events(&rc, "PlanReady").await;
    assert!(
        ready.iter().any(|m| m.contains(&format!(
            "kubectl annotate stack approval -n default --overwrite pulumi.com/approve={id}"
        ))),
        "{ready:?}"
    );
    let table = rc
        .kubectl(&["get", "stack", "approval", "-n", "default"])
        .expect("kubectl get");
    assert!(
        table.contains("AWAITING APPROVAL") && table.contains(&id),
        "{table}"
    );
    assert_eq!(
        applied(state.path()),
        None,
        "nothing applied before approval"
    );

    // An approval of some other id applies nothing and says so.
    approve(&rc, "0000000000000000").await;
    support::wait_for(Duration::from_secs(60), "ApprovalRefused", || async {
        (!events(&rc, "ApprovalRefused").await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(applied(state.path()), None);

    // Approved: exactly the plan is applied.
    approve(&rc, &id).await;
    let s = real_node::wait_ready_after_success(&rc, "approval").await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"value": "one", "extra": "one"}),
        "{s:#}"
    );
    assert_eq!(s["status"]["appliedPlan"], json!(id));
    assert!(s["status"]["pendingPlan"].is_null(), "{:#}", s["status"]);
    let up = s["status"]["lastUpdate"]["name"].as_str().expect("name");
    let u = support::get_json(&rc.cp, &support::updates(), "default", up)
        .await
        .expect("the up");
    assert_eq!(u["spec"]["plan"]["id"], json!(id), "{u:#}");
    assert_eq!(applied(state.path()), Some(json!("one")));

    // A new revision gets a new plan; the world changes before it is approved: the up fails
    // with the CLI's reason and applies nothing of it.
    std::fs::write(&wanted, "two").expect("wanted");
    let second = program("two");
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", second.as_str())], "second")
        .expect("commit");
    fx.request_reconcile(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    let s = plan_other_than(&rc, &id).await;
    let id2 = s["status"]["pendingPlan"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    std::fs::write(&wanted, "three").expect("wanted");
    approve(&rc, &id2).await;
    let s = real_node::wait_stack(
        &rc,
        "approval",
        Duration::from_secs(180),
        "the planned up failing",
        |s| s["status"]["lastUpdate"]["state"] == "failed",
    )
    .await;
    let message = s["status"]["lastUpdate"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("violates plan") && message.contains(THING),
        "{message}"
    );
    assert_eq!(applied(state.path()), Some(json!("one")));

    // After the back-off a new plan is made; the approval still naming the old one applies
    // nothing.
    let s = plan_other_than(&rc, &id2).await;
    let id3 = s["status"]["pendingPlan"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(id3, id);
    support::wait_for(
        Duration::from_secs(60),
        "the stale approval refused",
        || async {
            events(&rc, "ApprovalRefused")
                .await
                .iter()
                .any(|m| m.contains(&format!("pulumi.com/approve={id2} does not name")))
                .then_some(())
        },
    )
    .await;
    assert_eq!(applied(state.path()), Some(json!("one")));

    // Approving the new plan applies the world as it is now.
    approve(&rc, &id3).await;
    let s = real_node::wait_stack(
        &rc,
        "approval",
        Duration::from_secs(180),
        "the third plan applied",
        |s| {
            s["status"]["appliedPlan"] == json!(id3)
                && s["status"]["lastUpdate"]["state"] == "succeeded"
        },
    )
    .await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"value": "three", "extra": "two"}),
        "{s:#}"
    );
    assert_eq!(applied(state.path()), Some(json!("three")));
}
