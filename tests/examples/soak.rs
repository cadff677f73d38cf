//! A soak run, outside CI (`bash tests/bench/soak.sh`): Stacks follow one git repository
//! through many revisions on a real node while faults strike at random; at the end every Stack
//! must be at the last revision, no Update left running, each revision applied at most once per
//! stack (counted from the Pulumi file backend's own history, not from our statuses), and a
//! secret output must appear in no log, event or status.
//!
//! Sizes (environment): SOAK_STACKS (default 6), SOAK_REVISIONS (10), SOAK_MINUTES (15, the
//! time for the revisions and the faults; convergence gets 10 minutes more), SOAK_FAULT_EVERY_S
//! (60), SOAK_SEED (1). The faults: the API server stopped for 30 s, source-controller scaled
//! to 0 for 30 s, the operator's pod force-deleted, a workspace pod deleted, a workspace pod
//! killed (force-deleted: no time to clean up, so an `up` it ran leaves the stack locked and
//! the provider operation in flight pending), the path between the operator and one
//! workspace's agent dropped for 60 s. Each program has a resource of the gate provider (the
//! test image's) that takes 3 s to create or update, so that kills strike inside provider
//! operations; at the end no stack's state may list a pending operation.
//!
//! It prints what it did and what it found, and exits non-zero when a check fails.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::operator::{flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, Xorshift, fault, gate};

/// A value no log, event or status may show.
const SECRET: &str = "soak-secret-5b1f0e7c";
const REPO: &str = "soak";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stack_name(i: u64) -> String {
    format!("soak{i}")
}

fn program(i: u64, revision: u64) -> String {
    format!(
        "name: soak{i}\nruntime: yaml\nresources:\n  slow:\n    type: gate:index:Resource\n    \
         properties:\n      value: \"{revision}\"\n      sleep: 3\n    options:\n      \
         version: 0.1.0\noutputs:\n  revision: {revision}\n  token:\n    fn::secret: {SECRET}\n"
    )
}

const FAULTS: [&str; 6] = [
    "api-server",
    "source-controller",
    "operator-pod",
    "workspace-pod",
    "workspace-pod-killed",
    "agent-path",
];

/// Injects one fault and lets it pass; what was done.
async fn inject(rc: &mut RealCluster, which: &str, stack: &str) -> String {
    let kubectl = |args: &[&str]| {
        rc.kubectl(args)
            .unwrap_or_else(|e| format!("(kubectl failed: {e})"))
    };
    match which {
        "api-server" => {
            rc.cp.stop_apiserver();
            tokio::time::sleep(Duration::from_secs(30)).await;
            match rc.cp.start_apiserver().await {
                Ok(()) => "the API server stopped for 30 s".into(),
                Err(e) => panic!("the API server did not come back: {e}"),
            }
        }
        "source-controller" => {
            fault::source_controller_replicas(rc, 0);
            tokio::time::sleep(Duration::from_secs(30)).await;
            fault::source_controller_replicas(rc, 1);
            "source-controller at 0 replicas for 30 s".into()
        }
        "operator-pod" => {
            kubectl(&[
                "delete",
                "pod",
                "-n",
                e2e::in_cluster::OPERATOR_NAMESPACE,
                "-l",
                "control-plane=controller-manager",
                "--grace-period=0",
                "--force",
            ]);
            "the operator's pod force-deleted".into()
        }
        "workspace-pod" => {
            kubectl(&[
                "delete",
                "pod",
                &format!("{stack}-workspace-0"),
                "--wait=false",
            ]);
            format!("{stack}'s workspace pod deleted")
        }
        "workspace-pod-killed" => {
            kubectl(&[
                "delete",
                "pod",
                &format!("{stack}-workspace-0"),
                "--grace-period=0",
                "--force",
            ]);
            format!("{stack}'s workspace pod killed")
        }
        _ => {
            let Some(container) = gate::running_pulumi_container(rc, stack).await else {
                return format!("{stack}'s agent path: no pod running, skipped");
            };
            let operator = fault::operator_ip(rc).await;
            if let Err(e) = fault::cut_agent_path(rc, &container, &operator, true) {
                return format!("{stack}'s agent path: not cut ({e})");
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            // A pod replaced meanwhile took its namespace and the rules with it.
            match fault::cut_agent_path(rc, &container, &operator, false) {
                Ok(()) => format!("{stack}'s agent path dropped for 60 s"),
                Err(_) => format!("{stack}'s agent path dropped until its pod was replaced"),
            }
        }
    }
}

/// The `up`s of each stack in the file backend's own history under `state`: (start time,
/// message, result), in order.
fn history(state: &Path) -> BTreeMap<String, Vec<(i64, String, String)>> {
    let mut out: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    let mut dirs = vec![state.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if !p.to_string_lossy().ends_with(".history.json") {
                continue;
            }
            let Ok(h) = std::fs::read_to_string(&p)
                .map_err(|_| ())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| ()))
            else {
                continue;
            };
            if h["kind"] != "update" {
                continue;
            }
            let stack = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.entry(stack).or_default().push((
                h["startTime"].as_i64().unwrap_or_default(),
                h["message"].as_str().unwrap_or_default().to_string(),
                h["result"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for ups in out.values_mut() {
        ups.sort();
    }
    out
}

/// The stacks whose state (the file backend's own file) lists pending operations, with them.
fn pending_left(state: &Path) -> Vec<String> {
    let stacks = state.join(".pulumi/stacks");
    let mut left = Vec::new();
    for project in std::fs::read_dir(&stacks).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(project.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(v) = std::fs::read_to_string(file.path())
                .map_err(|_| ())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| ()))
            else {
                continue;
            };
            let pending = &v["checkpoint"]["latest"]["pending_operations"];
            if pending.as_array().is_some_and(|p| !p.is_empty()) {
                left.push(format!("{}: {pending}", file.path().display()));
            }
        }
    }
    left
}

/// Revisions applied more than once: after a revision's first `up` ("Initial stack update",
/// "New commit detected: ..."), a second one that succeeded too (a retry of an attempt whose
/// outcome the operator did not know) before the next revision's.
fn applied_twice(ups: &[(i64, String, String)]) -> Vec<String> {
    let mut twice = Vec::new();
    let mut revision = String::new();
    let mut applied = false;
    for (_, message, result) in ups {
        if message.starts_with("New commit detected") || message == "Initial stack update" {
            revision = message.clone();
            applied = false;
        }
        if result == "succeeded" {
            if applied {
                twice.push(format!("{revision} (again by: {message})"));
            }
            applied = true;
        }
    }
    twice
}

/// Where the secret shows: the operator's log (every container start), each workspace pod's
/// containers, every event, and the Stacks', Workspaces' and Updates' objects.
fn leaks(rc: &RealCluster, stacks: u64) -> Vec<String> {
    let mut sources: Vec<(String, String)> = vec![
        ("operator log".into(), real_node::operator_log_all(rc)),
        (
            "events".into(),
            rc.kubectl(&["get", "events", "-A", "-o", "json"])
                .unwrap_or_default(),
        ),
        (
            "stacks, workspaces, updates".into(),
            rc.kubectl(&["get", "stacks,workspaces,updates", "-A", "-o", "json"])
                .unwrap_or_default(),
        ),
    ];
    for i in 0..stacks {
        for c in ["fetch", "pulumi"] {
            sources.push((
                format!("{} {c} log", stack_name(i)),
                real_node::workspace_log(rc, &stack_name(i), c),
            ));
        }
    }
    sources
        .into_iter()
        .filter(|(_, text)| text.contains(SECRET))
        .map(|(what, _)| what)
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stacks = env_or("SOAK_STACKS", 6);
    let revisions = env_or("SOAK_REVISIONS", 10).max(1);
    let minutes = env_or("SOAK_MINUTES", 15);
    let fault_every = Duration::from_secs(env_or("SOAK_FAULT_EVERY_S", 60));
    let mut rng = Xorshift(
        env_or("SOAK_SEED", 1)
            .max(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    println!(
        "soak: {stacks} Stacks, {revisions} revisions, {minutes} min, a fault every {}s",
        fault_every.as_secs()
    );

    let mut rc = real_node::start_installed().await;
    let fx = FluxFixture::in_cluster(&rc.cp, REPO, rc.network.gateway()).await;
    let files = |revision: u64| -> Vec<(String, String)> {
        (0..stacks)
            .map(|i| (format!("s{i}/Pulumi.yaml"), program(i, revision)))
            .collect()
    };
    let commit = |revision: u64| {
        let files = files(revision);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_str()))
            .collect();
        fx.repo
            .commit(&refs, &format!("revision {revision}"))
            .expect("commit")
    };
    let mut last = commit(1);
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &last).await;
    let state = shared_state();
    for i in 0..stacks {
        let name = stack_name(i);
        let spec = flux_ref(REPO, &format!("s{i}"));
        let mut stack: Value = serde_json::from_str(&stack_yaml_with(
            &name,
            (rc.images.pulumi.as_str(), state.path()),
            spec,
        ))
        .expect("Stack JSON");
        // The default request (100m) fits 20 pods on this 2-core node, not 50.
        stack["spec"]["workspaceTemplate"]["spec"]["resources"] =
            json!({"requests": {"cpu": "10m", "memory": "64Mi"}});
        rc.cp
            .apply_yaml(&stack.to_string(), "stack", "default")
            .await
            .expect("Stack");
    }

    // Revisions at an even pace over the run, a fault every `fault_every`.
    let started = Instant::now();
    let pace = Duration::from_secs(minutes * 60) / revisions as u32;
    let mut next_fault = started + fault_every;
    let mut faults: Vec<String> = Vec::new();
    for revision in 2..=revisions {
        let due = started + pace * (revision - 1) as u32;
        while Instant::now() < due {
            if Instant::now() >= next_fault {
                let which = FAULTS[rng.below(FAULTS.len() as u64) as usize];
                let stack = stack_name(rng.below(stacks));
                let what = inject(&mut rc, which, &stack).await;
                println!("[{:>5}s] fault: {what}", started.elapsed().as_secs());
                faults.push(what);
                next_fault = Instant::now() + fault_every;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        last = commit(revision);
        // As a push webhook (or `flux reconcile source git`) would: not the 10-minute interval.
        fx.request_reconcile(&rc.cp).await;
        println!(
            "[{:>5}s] revision {revision}: {last}",
            started.elapsed().as_secs()
        );
    }

    // Convergence: every Stack at the last revision, succeeded.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut behind: Vec<String>;
    loop {
        behind = Vec::new();
        for i in 0..stacks {
            let s = support::get_json(&rc.cp, &support::stacks(), "default", &stack_name(i))
                .await
                .unwrap_or_default();
            let done = support::condition(&s, "Ready").is_some_and(|c| c["status"] == "True")
                && s["status"]["outputs"]["revision"] == json!(revisions);
            if !done {
                behind.push(stack_name(i));
            }
        }
        if behind.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let converged_after = started.elapsed();

    let updates = gate::update_states(&rc).await;
    let running: Vec<_> = updates.iter().filter(|u| u.1 == "True").collect();
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for u in &updates {
        *reasons.entry(u.2.clone()).or_default() += 1;
    }
    let history = history(state.path());
    let ups: usize = history.values().map(Vec::len).sum();
    let twice: Vec<(String, String)> = history
        .iter()
        .flat_map(|(stack, ups)| applied_twice(ups).into_iter().map(|t| (stack.clone(), t)))
        .collect();
    let leaked = leaks(&rc, stacks);
    let pending = pending_left(state.path());
    let mut recovered: Vec<String> = Vec::new();
    for i in 0..stacks {
        recovered.extend(
            support::events_for(&rc.cp, "default", "Stack", &stack_name(i))
                .await
                .into_iter()
                .filter(|(_, reason, _)| reason == "InterruptedUpdateRecovered")
                .map(|(_, _, message)| message),
        );
    }

    println!("\n== soak results");
    println!("faults injected: {}", faults.len());
    println!(
        "converged at: {} s (all at revision {revisions}: {})",
        converged_after.as_secs(),
        behind.is_empty()
    );
    println!("Updates: {} in all, by reason: {reasons:?}", updates.len());
    println!("Updates still running: {}", running.len());
    println!(
        "ups in the backend's history: {ups}; revisions applied more than once: {}",
        twice.len()
    );
    for (stack, what) in &twice {
        println!("  {stack}: {what}");
    }
    println!("secret found in: {leaked:?}");
    println!(
        "interrupted updates recovered (events): {}; pending operations left: {}",
        recovered.len(),
        pending.len()
    );
    for m in &recovered {
        println!("  {m}");
    }
    for p in &pending {
        println!("  {p}");
    }

    let mut failed = Vec::new();
    if !behind.is_empty() {
        failed.push(format!("not at the last revision: {behind:?}"));
    }
    if !running.is_empty() {
        failed.push(format!("Updates left running: {running:?}"));
    }
    if !twice.is_empty() {
        failed.push(format!("{} revisions applied more than once", twice.len()));
    }
    if !leaked.is_empty() {
        failed.push(format!("the secret shows in {leaked:?}"));
    }
    if !pending.is_empty() {
        failed.push(format!("pending operations left: {pending:?}"));
    }
    if failed.is_empty() {
        println!("soak: passed");
    } else {
        println!("soak: FAILED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
