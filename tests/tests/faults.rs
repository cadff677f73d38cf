//! Faults around a running update (issue 20), on a real node with the real CLI: each ends with
//! the Stack converged and nothing applied twice.
//!
//! - The API server stops for 30 s while an update runs, and the update ends inside the
//!   outage: its result is held and recorded once the API server is back (not lost, which
//!   would end the Update `Aborted` and run the revision again).
//! - The path between the operator and the workspace's agent is dropped (iptables in the
//!   workspace pod's network namespace, both ways): both sides notice by their missed pings,
//!   the Update fails saying so, the agent interrupts the orphaned run, and once the path is
//!   back one retry applies the revision.
//!
//! The program waits at a gate (a named pipe, `support::gate`), so each fault surely strikes
//! in the middle of `pulumi up`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;

use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, fault, gate};

/// The Stack `name` running [`gate::GATED`] from a GitRepository, with its gate made in a
/// fresh shared state directory; returns the directory (kept while it lives) and the gate.
async fn gated_stack(rc: &RealCluster, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    FluxFixture::serving(
        &rc.cp,
        name,
        rc.network.gateway(),
        &[("app/Pulumi.yaml", gate::GATED)],
    )
    .await;
    let state = shared_state();
    let fifo = gate::make(state.path());
    rc.cp
        .apply_yaml(
            &stack_yaml_with(
                name,
                (rc.images.pulumi.as_str(), state.path()),
                flux_ref(name, "app"),
            ),
            "stack",
            "default",
        )
        .await
        .expect("Stack");
    (state, fifo)
}

/// Converged: Ready after a succeeded update, with the program's output, exactly one Update
/// succeeded, none left running, the pod unmarked.
async fn converged_once(rc: &RealCluster, name: &str) -> Vec<(String, String, String, String)> {
    let s = real_node::wait_ready_after_success(rc, name).await;
    assert_eq!(s["status"]["outputs"], json!({"passed": "open"}), "{s:#}");
    let all = gate::update_states(rc).await;
    let succeeded = all
        .iter()
        .filter(|(_, _, reason, _)| reason == "UpdateSucceeded")
        .count();
    assert_eq!(succeeded, 1, "the revision applied once: {all:?}");
    assert!(
        all.iter().all(|(_, p, _, c)| p == "False" && c == "True"),
        "an Update is left running: {all:?}"
    );
    let p = gate::pod_of(rc, name).await;
    assert!(!gate::guarded(&p), "{:?}", p.metadata.annotations);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_as_an_update_ends_loses_no_result() {
    let mut rc = real_node::start_installed().await;
    let (_state, fifo) = gated_stack(&rc, "outage").await;
    let running = gate::running(&rc).await;
    gate::wait_reader(&rc, "outage", Duration::from_secs(60)).await;

    // The API server goes away; meanwhile the update passes its gate and ends, with nobody to
    // take its result.
    rc.cp.stop_apiserver();
    let down = Instant::now();
    gate::open(&fifo, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    rc.cp
        .start_apiserver()
        .await
        .unwrap_or_else(|e| panic!("the API server did not come back: {e}"));

    // The result was held and written: that same Update succeeded, and no other ran.
    let done = gate::ended(&rc, &running, Duration::from_secs(120)).await;
    assert_eq!(done.2, "UpdateSucceeded", "{done:?}");
    // The Stack takes it in at once, or at its next look at a running Update (a minute) if
    // the Update's watch event was lost with the API server.
    real_node::wait_stack(
        &rc,
        "outage",
        Duration::from_secs(90),
        "Ready within 90 s of its Update's end",
        |s| support::condition(s, "Ready").is_some_and(|c| c["status"] == "True"),
    )
    .await;
    let all = converged_once(&rc, "outage").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, running, "{all:?}");
    let log = real_node::operator_log_all(&rc);
    assert!(
        log.contains("written once the API server answered again"),
        "the result was not held through the outage; operator log:\n{}",
        real_node::tail_lines(&log, 60)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_path_to_the_agent_fails_the_update_and_one_retry_applies() {
    let rc = real_node::start_installed().await;
    let (state, fifo) = gated_stack(&rc, "dropped").await;
    let running = gate::running(&rc).await;
    gate::wait_reader(&rc, "dropped", Duration::from_secs(60)).await;
    let container = gate::pulumi_container(&rc, "dropped").await;
    let operator = fault::operator_ip(&rc).await;

    // The path goes silent (no reset, no refusal): only missed pings tell.
    fault::cut_agent_path(&rc, &container, &operator, true).expect("cut the path");
    let failed = gate::ended(&rc, &running, Duration::from_secs(150)).await;
    // Meanwhile the Stack says so.
    let stack = real_node::wait_stack(
        &rc,
        "dropped",
        Duration::from_secs(60),
        "not Ready, its last update failed",
        |s| {
            support::condition(s, "Ready").is_some_and(|c| c["status"] == "False")
                && s["status"]["lastUpdate"]["state"] == "failed"
        },
    )
    .await;
    eprintln!(
        "while the path is dropped: Update {failed:?}; Stack Ready {}; lastUpdate {}",
        support::condition(&stack, "Ready").unwrap_or_default(),
        stack["status"]["lastUpdate"]
    );

    // The agent, on its side, finds its caller gone by the missed pings, and interrupts the
    // run (which stops at its next step, past the gate).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !real_node::workspace_log(&rc, "dropped", "pulumi")
        .contains("the caller went away; interrupting the operation")
    {
        assert!(
            Instant::now() < deadline,
            "the agent never found its caller gone; the pod's rules:\n{}\nits sockets:\n{}",
            rc.node
                .pod_iptables(&container, &["-L", "-v", "-n", "-x"])
                .unwrap_or_else(|e| e.to_string()),
            rc.node
                .in_pod_netns(&container, "ss", &["-tnoi"])
                .unwrap_or_else(|e| e.to_string()),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(failed.2, "Aborted", "the cut-off Update: {failed:?}");
    let said = stack["status"]["lastUpdate"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("the connection to the workspace's agent was lost during the operation"),
        "{said}"
    );

    // The path comes back. The orphaned run is still at the gate: let it through (it stops,
    // interrupted), then let every later run pass at once.
    fault::cut_agent_path(&rc, &container, &operator, false).expect("restore the path");
    gate::open(&fifo, Duration::from_secs(30)).await;
    std::fs::remove_file(&fifo).expect("remove the gate");
    std::fs::write(state.path().join("gate"), "open\n").expect("an open gate");

    let all = converged_once(&rc, "dropped").await;
    assert_eq!(all[0].0, running, "{all:?}");
    assert_ne!(all[0].2, "UpdateSucceeded", "{all:?} (failed: {failed:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_controller_down_while_a_pod_must_fetch_says_so_and_recovers_without_a_rerun() {
    let rc = real_node::start_installed().await;
    // Kept to the end: source-controller fetches from its git server again.
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "sourceless",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", support::CONFIG_PROGRAM)],
    )
    .await;
    let state = shared_state();
    let mut spec = flux_ref("sourceless", "app");
    spec["config"] = json!({"greeting": "hello", "extra": "one"});
    rc.cp
        .apply_yaml(
            &stack_yaml_with(
                "sourceless",
                (rc.images.pulumi.as_str(), state.path()),
                spec,
            ),
            "stack",
            "default",
        )
        .await
        .expect("Stack");
    let outputs = |want: serde_json::Value| {
        move |s: &serde_json::Value| {
            support::condition(s, "Ready").is_some_and(|c| c["status"] == "True")
                && s["status"]["lastUpdate"]["state"] == "succeeded"
                && s["status"]["outputs"] == want
        }
    };
    real_node::wait_stack(
        &rc,
        "sourceless",
        Duration::from_secs(180),
        "the first update",
        outputs(json!({"greeting": "hello", "extra": "one"})),
    )
    .await;

    // source-controller goes away (its artifacts with it: they live in its pod), and a key
    // removed from the config needs a fresh workspace pod, which must fetch the program.
    fault::source_controller_replicas(&rc, 0);
    rc.kubectl(&[
        "wait",
        "--for=delete",
        "pod",
        "-n",
        "flux-system",
        "-l",
        "app=source-controller",
        "--timeout=60s",
    ])
    .expect("source-controller's pod gone");
    rc.kubectl(&[
        "patch",
        "stack",
        "sourceless",
        "--type=merge",
        "-p",
        r#"{"spec":{"config":{"extra":null}}}"#,
    ])
    .expect("remove a key");

    // Meanwhile the Stack says what is wrong and where.
    stalled(&rc, "sourceless", "cannot fetch the program").await;

    // It comes back (with empty storage: the artifact is made again), and the Stack converges
    // with the one update the config change asked for.
    fault::source_controller_replicas(&rc, 1);
    real_node::wait_stack(
        &rc,
        "sourceless",
        Duration::from_secs(300),
        "the update after source-controller came back",
        outputs(json!({"greeting": "hello", "extra": "none"})),
    )
    .await;
    let all = gate::update_states(&rc).await;
    assert_eq!(
        all.len(),
        2,
        "the first update and the config change's: {all:?}"
    );
    assert!(
        all.iter()
            .all(|(_, p, reason, c)| p == "False" && reason == "UpdateSucceeded" && c == "True"),
        "{all:?}"
    );
}

/// Waits until Stack `stack` is Stalled, `SourceUnavailable`, with a message that `says`
/// something; prints the condition.
async fn stalled(rc: &RealCluster, stack: &str, says: &str) {
    let s = real_node::wait_stack(
        rc,
        stack,
        Duration::from_secs(180),
        &format!("Stalled: {says}"),
        |s| {
            support::condition(s, "Stalled").is_some_and(|c| {
                c["status"] == "True"
                    && c["reason"] == "SourceUnavailable"
                    && c["message"].as_str().is_some_and(|m| m.contains(says))
            })
        },
    )
    .await;
    eprintln!(
        "{stack}: {}",
        support::condition(&s, "Stalled").unwrap_or_default()
    );
}

/// `n` bytes of text that does not compress (base64 of a xorshift stream).
fn incompressible(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = support::Xorshift(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| ALPHABET[rng.below(64) as usize] as char)
        .collect()
}

/// The Stack's workspace pod template with its share volume in memory, `limit` in size.
fn share_limited(state: &std::path::Path, limit: &str) -> serde_json::Value {
    let mut template = support::operator::state_pod_template(state);
    template["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "share", "emptyDir": {"medium": "Memory", "sizeLimit": limit}}));
    template
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_share_volume_says_so_and_a_larger_one_converges() {
    let rc = real_node::start_installed().await;
    // 8 MB that the archive cannot shrink, beside the agent (about 16 MB) in a 20 MiB volume.
    let ballast = incompressible(8 << 20);
    // Kept to the end: source-controller fetches from its git server again.
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "cramped",
        rc.network.gateway(),
        &[
            ("app/Pulumi.yaml", support::PROGRAM),
            ("app/ballast.txt", ballast.as_str()),
        ],
    )
    .await;
    let state = shared_state();
    let yaml = stack_yaml_with(
        "cramped",
        (rc.images.pulumi.as_str(), state.path()),
        flux_ref("cramped", "app"),
    );
    let mut stack: serde_json::Value = serde_json::from_str(&yaml).expect("json");
    stack["spec"]["workspaceTemplate"]["spec"]["podTemplate"] = share_limited(state.path(), "20Mi");
    rc.cp
        .apply_yaml(&stack.to_string(), "stack", "default")
        .await
        .expect("Stack");

    // The fetch fills the volume: the Stack says so, and what to do.
    stalled(&rc, "cramped", "the workspace volume is full").await;
    assert!(gate::update_states(&rc).await.is_empty(), "nothing ran");

    // A larger volume: a fresh pod fetches the whole program, and the one update runs.
    let larger = json!({"spec": {"workspaceTemplate": {"spec": {
        "podTemplate": share_limited(state.path(), "64Mi")}}}});
    rc.kubectl(&[
        "patch",
        "stack",
        "cramped",
        "--type=merge",
        "-p",
        &larger.to_string(),
    ])
    .expect("a larger volume");
    let s = real_node::wait_ready_after_success(&rc, "cramped").await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello"}),
        "{s:#}"
    );
    let all = gate::update_states(&rc).await;
    assert_eq!(all.len(), 1, "{all:?}");
}
