//! What a Stack's lifecycle settings do, on a real node with the real CLI, each said by an
//! event or a condition: `workspaceReclaimPolicy: Delete` deletes the Workspace after a
//! successful update (`WorkspaceDeleted`), an Update's `ttlAfterCompleted` (from the Stack's
//! `updateTemplate`) deletes it once absorbed (`UpdateExpired`), and a `preview: true` Stack
//! whose program fails says `PreviewFailed` and when it tries again; a Stack with
//! `prerequisites` waits for them (`PrerequisiteNotSatisfied`), runs once they succeed, and asks
//! one that succeeded too long ago to run again.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::operator::{shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, events_for, get_json, updates, workspaces};

/// Waits until `what` holds, or fails with `detail`'s answer.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F, detail: impl AsyncFn() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            panic!("{what} within {limit:?}: {}", detail().await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn source(extra: Value) -> Value {
    let mut spec = json!({"fluxSource": {
        "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1",
                      "kind": "GitRepository", "name": "life"},
    }});
    if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        s.extend(extra);
    }
    spec
}

async fn reasons(rc: &RealCluster, kind: &str, name: &str) -> Vec<String> {
    events_for(&rc.cp, "default", kind, name)
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_delete_update_ttl_and_a_failed_preview_say_what_happened() {
    let rc = real_node::start_installed().await;
    let fx = FluxFixture::in_cluster(&rc.cp, "life", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(
            &[
                (
                    "good/Pulumi.yaml",
                    "name: life\nruntime: yaml\noutputs:\n  greeting: hello\n",
                ),
                // Refers to a variable that does not exist: the program fails in preview.
                (
                    "bad/Pulumi.yaml",
                    "name: life\nruntime: yaml\noutputs:\n  greeting: ${nowhere.value}\n",
                ),
            ],
            "two programs",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &sha).await;
    let state = shared_state();
    let pulumi = (rc.images.pulumi.as_str(), state.path());
    let reclaim = source(json!({
        "workspaceReclaimPolicy": "Delete",
        "updateTemplate": {"spec": {"ttlAfterCompleted": "5s"}},
    }));
    let mut reclaim_spec = reclaim.clone();
    reclaim_spec["fluxSource"]["dir"] = json!("good");
    let mut preview = source(json!({"preview": true}));
    preview["fluxSource"]["dir"] = json!("bad");
    let after = prerequisite_on("before", "1h");
    for (name, spec) in [
        ("reclaimed", reclaim_spec),
        ("previewed", preview),
        ("after", after),
    ] {
        rc.cp
            .apply_yaml(&stack_yaml_with(name, pulumi, spec), name, "default")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // A prerequisite that does not exist: the Stack waits, saying for what, and runs nothing.
    let waiting = real_node::wait_stack(
        &rc,
        "after",
        Duration::from_secs(60),
        "PrerequisiteNotSatisfied",
        |s| {
            support::condition(s, "Reconciling").is_some_and(|c| {
                c["reason"] == "PrerequisiteNotSatisfied"
                    && c["message"]
                        == "prerequisite not satisfied for \"before\": prerequisite not found"
            })
        },
    )
    .await;
    assert!(waiting["status"]["lastUpdate"].is_null(), "{waiting:#}");

    // Reclaim: the update succeeds, then the Workspace (and its pod) goes, said by an event.
    let s = real_node::wait_ready_after_success(&rc, "reclaimed").await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello"}),
        "{s:#}"
    );
    let update = s["status"]["lastUpdate"]["name"]
        .as_str()
        .expect("the last Update's name")
        .to_string();
    until(
        Duration::from_secs(60),
        "the Workspace deleted per reclaim policy",
        || async {
            get_json(&rc.cp, &workspaces(), "default", "reclaimed")
                .await
                .is_none()
        },
        || async { format!("{:?}", reasons(&rc, "Stack", "reclaimed").await) },
    )
    .await;
    until(
        Duration::from_secs(30),
        "a WorkspaceDeleted event",
        || async {
            reasons(&rc, "Stack", "reclaimed")
                .await
                .iter()
                .any(|r| r == "WorkspaceDeleted")
        },
        || async { format!("{:?}", reasons(&rc, "Stack", "reclaimed").await) },
    )
    .await;

    // TTL: the completed Update is deleted once its 5 s are over, with an event.
    until(
        Duration::from_secs(60),
        "the Update deleted after its TTL",
        || async {
            get_json(&rc.cp, &updates(), "default", &update)
                .await
                .is_none()
        },
        || async {
            format!(
                "{:?}",
                get_json(&rc.cp, &updates(), "default", &update).await
            )
        },
    )
    .await;
    let expired = reasons(&rc, "Update", &update).await;
    assert!(
        expired.iter().any(|r| r == "UpdateExpired"),
        "{update}: {expired:?}"
    );
    // The Stack keeps its record of the update.
    let s = get_json(&rc.cp, &support::stacks(), "default", "reclaimed")
        .await
        .expect("the Stack");
    assert_eq!(s["status"]["lastUpdate"]["name"], update.as_str());

    // Preview: it fails; the Stack says so and when it tries again.
    let s = real_node::wait_stack(
        &rc,
        "previewed",
        Duration::from_secs(240),
        "PreviewFailed",
        |s| {
            s["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "PreviewFailed")
        },
    )
    .await;
    assert_eq!(s["status"]["lastUpdate"]["state"], "failed", "{s:#}");
    assert_eq!(s["status"]["lastUpdate"]["type"], "preview", "{s:#}");
    let c = s["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "PreviewFailed")
        .cloned()
        .unwrap_or_default();
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("preview failed") && m.contains("next attempt")),
        "{c:#}"
    );

    // The prerequisite appears and succeeds: the waiting Stack runs then, not before.
    rc.cp
        .apply_yaml(
            &stack_yaml_with("before", pulumi, good()),
            "before",
            "default",
        )
        .await
        .expect("before");
    let after = real_node::wait_ready_after_success(&rc, "after").await;
    let before = get_json(&rc.cp, &support::stacks(), "default", "before")
        .await
        .expect("before");
    let resynced = |s: &Value| {
        s["status"]["lastUpdate"]["lastResyncTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("no lastResyncTime: {s:#}"))
    };
    assert_eq!(before["status"]["lastUpdate"]["state"], "succeeded");
    assert!(
        resynced(&after) >= resynced(&before),
        "{after:#}\n{before:#}"
    );

    // A prerequisite that succeeded longer ago than required is asked to run again (a
    // reconcile request naming its last Update), and the dependent runs after it.
    let first = before["status"]["lastUpdate"]["name"]
        .as_str()
        .expect("before's Update")
        .to_string();
    let stale_after = resynced(&before) + jiff::SignedDuration::from_secs(21);
    let wait = jiff::Timestamp::now().duration_until(stale_after);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    rc.cp
        .apply_yaml(
            &stack_yaml_with("later", pulumi, prerequisite_on("before", "20s")),
            "later",
            "default",
        )
        .await
        .expect("later");
    let later = real_node::wait_ready_after_success(&rc, "later").await;
    let before = get_json(&rc.cp, &support::stacks(), "default", "before")
        .await
        .expect("before");
    assert_eq!(
        before["metadata"]["annotations"]["pulumi.com/reconciliation-request"],
        format!("after-{first}").as_str(),
        "{before:#}"
    );
    assert_ne!(before["status"]["lastUpdate"]["name"], first.as_str());
    assert!(
        resynced(&later) >= resynced(&before),
        "{later:#}\n{before:#}"
    );
    drop(fx);
}

/// The `good` program.
fn good() -> Value {
    let mut spec = source(json!({}));
    spec["fluxSource"]["dir"] = json!("good");
    spec
}

/// The `good` program, once `name` has succeeded within `within`.
fn prerequisite_on(name: &str, within: &str) -> Value {
    let mut spec = good();
    spec["prerequisites"] =
        json!([{"name": name, "requirement": {"succeededWithinDuration": within}}]);
    spec
}
