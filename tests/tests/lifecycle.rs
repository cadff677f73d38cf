//! What a Stack's lifecycle settings do, on a real node with the real CLI, each said by an
//! event or a condition: `workspaceReclaimPolicy: Delete` deletes the Workspace after a
//! successful update (`WorkspaceDeleted`), an Update's `ttlAfterCompleted` (from the Stack's
//! `updateTemplate`) deletes it once absorbed (`UpdateExpired`), and a `preview: true` Stack
//! whose program fails says `PreviewFailed` and when it tries again.

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
    for (name, spec) in [("reclaimed", reclaim_spec), ("previewed", preview)] {
        rc.cp
            .apply_yaml(&stack_yaml_with(name, pulumi, spec), name, "default")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

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
    drop(fx);
}
