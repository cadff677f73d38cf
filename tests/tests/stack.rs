//! Stacks end to end on a local cluster with a real node: Flux's source-controller and this
//! operator installed in the cluster as users install them (its own RBAC), a real git server,
//! workspace pods running our fetch and agent and the real Pulumi CLI from the registry's
//! images. The troubleshooting guide's flow, new revisions, failures and back-off,
//! the reconciliation-request annotation, verbose logs, git and Program sources, destroy on
//! finalize, and stack lock conflicts.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::git_server::{Credentials, GitServer};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use support::operator::{self, PASSPHRASE, flux_ref, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, UpdateLog, condition, events_for, get_json, stacks, updates, wait_for};

fn program(project: &str, greeting: &str) -> String {
    format!(
        "name: {project}\nruntime: yaml\noutputs:\n  greeting: {greeting}\n  password:\n    fn::secret: s3cr3t\n"
    )
}

struct Env {
    rc: RealCluster,
    state: tempfile::TempDir,
}

/// The cluster (the operator and source-controller installed in it) and the file backend's
/// directory, shared by the host (the tests' Pulumi CLI) and the workspace pods.
fn env(rc: RealCluster) -> Env {
    Env {
        rc,
        state: operator::shared_state(),
    }
}

impl Env {
    fn stack_yaml(&self, name: &str, source: Value) -> String {
        stack_yaml_with(name, (&self.rc.images.pulumi, self.state.path()), source)
    }

    /// A container's log in the workspace pod of `stack` (empty when there is none).
    fn log(&self, stack: &str, container: &str) -> String {
        real_node::workspace_log(&self.rc, stack, container)
    }

    async fn stack(&self, name: &str) -> Option<Value> {
        get_json(&self.rc.cp, &stacks(), "default", name).await
    }

    /// Waits until `ok` holds for the Stack; on timeout, fails with what there is to see.
    async fn wait_stack(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        real_node::wait_stack(&self.rc, name, limit, what, ok).await
    }

    /// Waits until the Stack no longer exists.
    async fn wait_gone(&self, name: &str, limit: Duration, when: &str) {
        wait_for(
            limit,
            &format!("Stack {name} to be gone {when}"),
            || async { self.stack(name).await.is_none().then_some(()) },
        )
        .await;
    }

    async fn wait_ready(&self, name: &str) -> Value {
        self.wait_stack(name, Duration::from_secs(240), "Ready", |s| {
            condition(s, "Ready").is_some_and(|c| c["status"] == "True")
                && s["status"]["observedGeneration"] == s["metadata"]["generation"]
        })
        .await
    }

    async fn updates_of(&self, stack: &str) -> Vec<Value> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.rc.cp.client(), "default", &updates());
        let lp = ListParams::default().labels(&format!("pulumi.com/stack-name={stack}"));
        let mut list: Vec<Value> = api
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect();
        list.sort_by_key(|u| {
            u["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        list
    }

    async fn annotate(&self, stack: &str, value: &str) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.rc.cp.client(), "default", &stacks());
        let patch =
            json!({"metadata": {"annotations": {"pulumi.com/reconciliation-request": value}}});
        api.patch(stack, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// The Pulumi CLI on the host, against the shared backend, in a directory holding `project`.
    fn pulumi(&self, project: &str, args: &[&str]) -> std::process::Output {
        let dir = self.state.path().join(format!("cli-{project}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("Pulumi.yaml"),
            format!("name: {project}\nruntime: yaml\n"),
        )
        .expect("project");
        std::process::Command::new(operator::pulumi_dir().join("pulumi"))
            .arg("--non-interactive")
            .args(args)
            .current_dir(&dir)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", operator::pulumi_dir().display()),
            )
            .env("PULUMI_HOME", self.state.path().join("cli-home"))
            .env(
                "PULUMI_BACKEND_URL",
                format!("file://{}", self.state.path().display()),
            )
            .env("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
            .env("PULUMI_SKIP_UPDATE_CHECK", "true")
            .output()
            .expect("pulumi")
    }
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().and_then(|s| s.parse().ok()).expect("timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_troubleshooting_flow_from_a_flux_source_and_new_revisions() {
    let rc = real_node::start_installed().await;
    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "stackflux", rc.network.gateway()).await;
    let first = fx
        .repo
        .commit(&[("app/Pulumi.yaml", &program("e2e-flux", "hello"))], "one")
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &first).await;
    let e = env(rc);

    let mut spec = flux_ref("stackflux", "app");
    spec["pulumiLogLevel"] = json!(10);
    e.rc.cp
        .apply_yaml(&e.stack_yaml("app", spec), "stack", "default")
        .await
        .expect("stack");
    let s = e.wait_ready("app").await;
    let last = &s["status"]["lastUpdate"];
    assert_eq!(last["state"], "succeeded", "{s:#}");
    assert_eq!(last["type"], "up");
    assert_eq!(last["lastSuccessfulCommit"], artifact["revision"]);
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello", "password": "[secret]"})
    );
    assert_eq!(
        s["status"]["projectInfo"],
        json!({"name": "e2e-flux", "runtime": "yaml"})
    );
    assert!(s["status"]["currentUpdate"].is_null(), "{s:#}");

    // The guide's event sequence, across the Stack and its Workspace.
    let mut all: Vec<(jiff::Timestamp, String)> = Vec::new();
    for kind in ["Stack", "Workspace"] {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(e.rc.cp.client(), "default");
        for ev in api.list(&Default::default()).await.expect("events").items {
            let r = ev.regarding.clone().unwrap_or_default();
            if r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some("app") {
                all.push((
                    ev.event_time.map(|t| t.0).expect("time"),
                    ev.reason.unwrap_or_default(),
                ));
            }
        }
    }
    all.sort();
    let order: Vec<&str> = all.iter().map(|(_, r)| r.as_str()).collect();
    let pos = |r: &str| {
        order
            .iter()
            .position(|x| *x == r)
            .unwrap_or_else(|| panic!("no {r} in {order:?}"))
    };
    assert!(
        pos("StackUpdateDetected") < pos("Initialized")
            && pos("Initialized") < pos("UpdateSucceeded")
            && pos("UpdateSucceeded") < pos("StackCreated"),
        "{order:?}"
    );

    // The pod: container pulumi working in the program, the engine's verbose log in its output.
    let pods: Api<Pod> = Api::namespaced(e.rc.cp.client(), "default");
    let pod = pods.get("app-workspace-0").await.expect("pod");
    let main = pod
        .spec
        .as_ref()
        .expect("spec")
        .containers
        .iter()
        .find(|c| c.name == "pulumi")
        .expect("pulumi");
    assert_eq!(main.working_dir.as_deref(), Some("/share/workspace"));
    let log = e.log("app", "pulumi");
    let verbose = log.lines().filter(|l| l.contains(r#""v":"#)).count();
    assert!(
        verbose > 20,
        "pulumiLogLevel 10 puts the engine log in the pulumi container ({verbose} lines)"
    );
    let ups = e.updates_of("app").await;
    assert_eq!(
        ups.len(),
        1,
        "one update: {:#?}\noperator:\n{}",
        ups.iter()
            .map(|u| (
                &u["metadata"]["name"],
                &u["spec"]["message"],
                &u["status"]["conditions"]
            ))
            .collect::<Vec<_>>(),
        real_node::operator_log_all(&e.rc)
            .lines()
            .filter(|l| l.contains("update created") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Source-controller looking again at the same commit: no new update.
    fx.request_reconcile(&e.rc.cp).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        e.updates_of("app").await.len(),
        1,
        "an unchanged revision runs nothing"
    );

    // A new commit: a new artifact revision, a new update, the new output.
    let second = fx
        .repo
        .commit(
            &[("app/Pulumi.yaml", &program("e2e-flux", "bonjour"))],
            "two",
        )
        .expect("commit");
    fx.request_reconcile(&e.rc.cp).await;
    let artifact2 = fx.wait_revision(&e.rc.cp, &second).await;
    let s = e
        .wait_stack("app", Duration::from_secs(240), "the new revision", |s| {
            s["status"]["lastUpdate"]["lastSuccessfulCommit"] == artifact2["revision"]
        })
        .await;
    assert_eq!(s["status"]["outputs"]["greeting"], "bonjour");
    let ups = e.updates_of("app").await;
    assert_eq!(ups.len(), 2, "{ups:#?}");
    assert!(
        ups[1]["spec"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("New commit detected"),
        "{:#}",
        ups[1]["spec"]
    );

    let metrics = real_node::operator_metrics(&e.rc).await;
    assert!(metrics.contains("stacks_active 1"), "{metrics}");
    // controller-runtime's reconcile metrics, under PKO's controller names.
    let count = |needle: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(needle))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{needle} missing in:\n{metrics}"))
    };
    for controller in ["stack", "workspace", "update"] {
        let time = format!(
            "controller_runtime_reconcile_time_seconds_count{{controller=\"{controller}-controller\"}}"
        );
        assert!(count(&time) >= 1, "{time}");
        // controller-runtime's workqueue metrics that describe the work.
        let queue =
            format!("{{name=\"{controller}-controller\",controller=\"{controller}-controller\"}}");
        assert!(count(&format!("workqueue_work_duration_seconds_count{queue}")) >= 1);
        assert!(
            metrics.contains(&format!("workqueue_retries_total{queue}")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "workqueue_longest_running_processor_seconds{queue}"
            )),
            "{metrics}"
        );
        // And those of the queue: every reconcile was asked for (an add), and those the
        // watches asked for waited a measured time; nothing waits now (a failed reconcile's
        // retry falling due at the scrape may, for a moment).
        assert!(
            count(&format!("workqueue_adds_total{queue}"))
                >= count(&format!("workqueue_work_duration_seconds_count{queue}")),
            "{metrics}"
        );
        assert!(count(&format!("workqueue_queue_duration_seconds_count{queue}")) >= 1);
        assert!(count(&format!("workqueue_depth{queue}")) <= 1, "{metrics}");
    }
    assert!(
        metrics.contains(
            "controller_runtime_max_concurrent_reconciles{controller=\"stack-controller\"} 25"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("stacks_failing{namespace=\"default\",name=\"app\"} 0"),
        "{metrics}"
    );
    drop(fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_the_annotation_retries_at_once_and_locks_are_explained() {
    let rc = real_node::start_installed().await;
    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "stackfail", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(
            &[
                (
                    "broken/Pulumi.yaml",
                    "name: e2e-broken\nruntime: yaml\noutputs:\n  x: ${nope}\n",
                ),
                ("good/Pulumi.yaml", &program("e2e-locked", "hi")),
            ],
            "programs",
        )
        .expect("commit");
    fx.apply_git_repository(cp).await;
    fx.wait_revision(cp, &sha).await;
    let e = env(rc);

    // A stack that exists and is locked by "another update" in the backend.
    let init = e.pulumi("e2e-locked", &["stack", "init", "locked"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    lock_stack(e.state.path(), "e2e-locked", "locked");

    let mut broken = flux_ref("stackfail", "broken");
    broken["retryMaxBackoffDurationSeconds"] = json!(20);
    e.rc.cp
        .apply_yaml(&e.stack_yaml("broken", broken), "stack", "default")
        .await
        .expect("stack");
    e.rc.cp
        .apply_yaml(
            &e.stack_yaml("locked", flux_ref("stackfail", "good")),
            "stack",
            "default",
        )
        .await
        .expect("stack");
    // Specs that cannot work stall at once, naming the field.
    e.rc.cp.apply_yaml(
        &e.stack_yaml("both", json!({"projectRepo": "https://example.com/r.git", "commit": "a".repeat(40), "branch": "main"})),
        "stack",
        "default",
    )
    .await
    .expect("stack");
    e.rc.cp
        .apply_yaml(
            &e.stack_yaml(
                "envref",
                json!({"envRefs": {"X": {"type": "Env", "env": {"name": "HOME"}}}}),
            ),
            "stack",
            "default",
        )
        .await
        .expect("stack");
    for (name, needle) in [
        ("both", "only one of \"commit\" or \"branch\""),
        ("envref", "spec.envRefs[X]"),
    ] {
        let s = e
            .wait_stack(name, Duration::from_secs(60), "SpecInvalid", |s| {
                condition(s, "Stalled").is_some_and(|c| c["reason"] == "SpecInvalid")
            })
            .await;
        let msg = condition(&s, "Stalled").expect("stalled")["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(msg.contains(needle), "{msg}");
        // The event is sent after the status it describes is written: wait for it too.
        wait_for(
            Duration::from_secs(30),
            &format!("a StackConfigInvalid event for {name} naming {needle}"),
            || async {
                events_for(&e.rc.cp, "default", "Stack", name)
                    .await
                    .iter()
                    .any(|ev| ev.1 == "StackConfigInvalid" && ev.2.contains(needle))
                    .then_some(())
            },
        )
        .await;
    }

    // Failures: each retry waits 10s × 3ⁿ, capped at 20s here. A reconcile writes its status
    // more than once, so wait for the state it settles on (not an intermediate write).
    let s = e
        .wait_stack(
            "broken",
            Duration::from_secs(300),
            "3 failures, waiting to retry",
            |s| {
                s["status"]["lastUpdate"]["failures"].as_i64().unwrap_or(0) >= 3
                    && condition(s, "Reconciling")
                        .is_some_and(|c| c["reason"] == "RetryingAfterFailure")
            },
        )
        .await;
    let failures = s["status"]["lastUpdate"]["failures"].as_i64().unwrap_or(0);
    let reconciling = condition(&s, "Reconciling").expect("Reconciling");
    assert!(
        reconciling["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{failures} update failure(s); next attempt at")),
        "{reconciling:#}"
    );
    assert!(
        s["status"]["lastUpdate"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nope"),
        "{s:#}"
    );
    let ups = e.updates_of("broken").await;
    let starts: Vec<jiff::Timestamp> = ups
        .iter()
        .map(|u| ts(&u["metadata"]["creationTimestamp"]))
        .collect();
    let ends: Vec<jiff::Timestamp> = ups
        .iter()
        .filter_map(|u| u["status"]["endTime"].as_str())
        .map(|t| t.parse().expect("t"))
        .collect();
    assert!(starts.len() >= 3 && ends.len() >= 2, "{ups:#?}");
    let gap = |i: usize| starts[i + 1].duration_since(ends[i]).as_secs_f64();
    assert!(gap(0) >= 8.0, "the first retry waits ~10s: {}", gap(0));
    assert!(gap(1) >= 18.0, "the second ~30s, capped at 20s: {}", gap(1));
    assert!(gap(1) < 40.0, "the cap holds: {}", gap(1));
    let stack_events = events_for(&e.rc.cp, "default", "Stack", "broken").await;
    assert!(
        stack_events
            .iter()
            .any(|ev| ev.1 == "StackUpdateFailure" && ev.2.contains("nope")),
        "{stack_events:?}"
    );
    let ws_events = events_for(&e.rc.cp, "default", "Workspace", "broken").await;
    assert!(
        ws_events.iter().any(|ev| ev.1 == "UpdateFailed"),
        "{ws_events:?}"
    );

    // The annotation runs an attempt now, whatever the back-off.
    let before = e.updates_of("broken").await.len();
    let last_end =
        e.stack("broken").await.expect("stack")["status"]["lastUpdate"]["lastResyncTime"].clone();
    e.annotate("broken", "retry-now").await;
    let asked = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "an update for the annotation",
        || async { (e.updates_of("broken").await.len() > before).then_some(()) },
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?} (last attempt at {last_end})",
        asked.elapsed()
    );
    let s = e
        .wait_stack(
            "broken",
            Duration::from_secs(120),
            "the requested attempt",
            |s| s["status"]["lastUpdate"]["reconcileRequest"] == "retry-now",
        )
        .await;
    assert_eq!(s["status"]["observedReconcileRequest"], "retry-now");
    assert_eq!(
        s["status"]["lastUpdate"]["failures"], 1,
        "a new request counts afresh"
    );

    // The locked stack: a conflict, explained with the way out.
    e.wait_stack("locked", Duration::from_secs(240), "a conflict", |s| {
        s["status"]["lastUpdate"]["state"] == "failed"
    })
    .await;
    let events = events_for(&e.rc.cp, "default", "Stack", "locked").await;
    let conflict = events
        .iter()
        .find(|ev| ev.1 == "StackUpdateConflictDetected")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(conflict.2.contains("pulumi cancel"), "{conflict:?}");
    let cancel = e.pulumi("e2e-locked", &["cancel", "--yes", "--stack", "locked"]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let s = e.wait_ready("locked").await;
    assert_eq!(s["status"]["outputs"]["greeting"], "hi");

    the_guide_commands_work(&e, "locked").await;
    drop(fx);
}

/// Runs every `kubectl` command of docs/troubleshooting.md against this environment, for one
/// Stack, and checks what they show: on a real node, `kubectl logs` and `kubectl exec` too (the
/// interactive shell gets its commands on stdin). Only `--watch` is left out: it never ends.
async fn the_guide_commands_work(e: &Env, stack: &str) {
    let root = e2e::control_plane::repo_root();
    let guide = std::fs::read_to_string(root.join("docs/troubleshooting.md")).expect("the guide");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in guide.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && l.starts_with("kubectl ") => commands.push(l.to_string()),
            _ => {}
        }
    }
    assert!(commands.len() >= 15, "{commands:?}");
    // The guide's Flux section applies config/flux into flux-system, where source-controller
    // runs.
    let kubectl_dir =
        e.rc.cp
            .tool("kubectl")
            .expect("kubectl")
            .parent()
            .expect("dir")
            .to_path_buf();
    let mut outputs = std::collections::HashMap::new();
    for cmd in &commands {
        if cmd.contains("--watch") {
            continue;
        }
        let mut child = std::process::Command::new("bash")
            .args(["-c", cmd])
            .current_dir(&root)
            .env("STACK_NAME", stack)
            .env("NAMESPACE", "default")
            .env("KUBECONFIG", e.rc.cp.kubeconfig())
            .env("PATH", format!("{}:/usr/bin:/bin", kubectl_dir.display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bash");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            // What a user types into the guide's shell; other commands ignore it.
            let _ = stdin.write_all(b"ls Pulumi.yaml\npulumi stack --show-name\nexit\n");
        }
        let out = child.wait_with_output().expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.insert(cmd.clone(), stdout);
    }
    let shown = |needle: &str, pred: &dyn Fn(&str) -> bool| {
        let (cmd, out) = outputs
            .iter()
            .find(|(c, _)| c.contains(needle))
            .unwrap_or_else(|| panic!("the guide has no command with {needle}"));
        assert!(pred(out), "`{cmd}` shows:\n{out}");
    };
    shown("--field-selector involvedObject.name", &|o| {
        [
            "StackUpdateDetected",
            "Initialized",
            "StackUpdateConflictDetected",
            "StackCreated",
        ]
        .iter()
        .all(|r| o.contains(r))
    });
    shown("describe stack", &|o| {
        o.contains("Last Update") && o.contains("Outputs")
    });
    shown("{.status.lastUpdate}", &|o| {
        o.contains(r#""state":"succeeded""#)
    });
    shown(r#"type=="Ready")].reason"#, &|o| o == "ProcessingCompleted");
    shown("{.status.outputs}", &|o| o.contains(r#""greeting":"hi""#));
    shown(
        "get workspace $STACK_NAME -n $NAMESPACE -o jsonpath='{range",
        &|o| o.contains("Ready=True Succeeded"),
    );
    shown("get updates", &|o| {
        o.matches(&format!("{stack}-")).count() >= 2
    });
    shown("annotate stack", &|o| o.contains("annotated"));
    shown("describe pod", &|o| {
        o.contains("fetch:") && o.contains("pulumi:")
    });
    shown("get networkpolicy -n flux-system", &|o| {
        o.contains("allow-pulumi-fetch-flux-artifacts")
    });
    shown("patch stack", &|o| o.contains("patched"));
    // The shell starts in the program (its Pulumi.yaml is there), with the stack selected.
    shown("-c pulumi -- sh", &|o| {
        o.lines().any(|l| l.trim() == "Pulumi.yaml") && o.lines().any(|l| l.trim() == stack)
    });
    shown(
        "logs $STACK_NAME-workspace-0 -n $NAMESPACE -c pulumi",
        &|o| o.contains("agent serving"),
    );
    shown(
        "logs $STACK_NAME-workspace-0 -n $NAMESPACE -c fetch",
        &|o| o.contains("artifact verified and unpacked") || o.contains("workspace ready"),
    );

    // The pod those commands reach.
    let pod = format!("{stack}-workspace-0");
    let pods: Api<Pod> = Api::namespaced(e.rc.cp.client(), "default");
    let spec = pods.get(&pod).await.expect("pod").spec.expect("spec");
    let main = spec
        .containers
        .iter()
        .find(|c| c.name == "pulumi")
        .expect("container pulumi");
    assert_eq!(
        main.working_dir.as_deref(),
        Some("/share/workspace"),
        "the shell starts in the program"
    );
    assert!(
        spec.init_containers
            .unwrap_or_default()
            .iter()
            .any(|c| c.name == "fetch")
    );
    for c in ["pulumi", "fetch"] {
        assert!(!e.log(stack, c).is_empty(), "{c} has a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_and_program_sources_and_destroy_on_finalize() {
    let rc = real_node::start_installed().await;
    let gateway = IpAddr::V4(rc.network.gateway());
    let git = GitServer::start(
        gateway,
        Credentials {
            username: "git".into(),
            password: "tok-123".into(),
        },
    )
    .expect("git server");
    let repo = git.create_repo("gitsrc").expect("repo");
    let sha = repo
        .commit(
            &[("infra/Pulumi.yaml", &program("e2e-git", "from-git"))],
            "one",
        )
        .expect("commit");
    let e = env(rc);
    e.rc.cp.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: git-token}\nstringData: {accessToken: tok-123}\n",
        "secret",
        "default",
    )
    .await
    .expect("secret");

    let spec = json!({
        "projectRepo": git.url("gitsrc"),
        "branch": "main",
        "repoDir": "infra",
        "gitAuth": {"accessToken": {"type": "Secret", "secret": {"name": "git-token", "key": "accessToken"}}},
        "destroyOnFinalize": true,
    });
    e.rc.cp
        .apply_yaml(&e.stack_yaml("fromgit", spec.clone()), "stack", "default")
        .await
        .expect("stack");
    let s = e.wait_ready("fromgit").await;
    assert_eq!(s["status"]["lastUpdate"]["lastSuccessfulCommit"], sha);
    assert_eq!(s["status"]["outputs"]["greeting"], "from-git");
    let ws = get_json(&e.rc.cp, &support::workspaces(), "default", "fromgit")
        .await
        .expect("ws");
    assert_eq!(
        ws["spec"]["git"]["ref"], sha,
        "the branch resolved to its commit"
    );
    assert_eq!(
        ws["spec"]["git"]["auth"]["token"]["name"], "git-token",
        "a Secret reference, not the token"
    );
    assert!(
        !serde_json::to_string(&ws)
            .expect("json")
            .contains("tok-123")
    );

    // A Program, served by the operator as an artifact.
    e.rc.cp.apply_yaml(
        "apiVersion: pulumi.com/v1\nkind: Program\nmetadata: {name: prog}\nprogram:\n  outputs:\n    greeting: from-program\n",
        "program",
        "default",
    )
    .await
    .expect("program");
    e.rc.cp
        .apply_yaml(
            &e.stack_yaml("fromprogram", json!({"programRef": {"name": "prog"}})),
            "stack",
            "default",
        )
        .await
        .expect("stack");
    let s = e.wait_ready("fromprogram").await;
    assert_eq!(s["status"]["outputs"]["greeting"], "from-program");
    assert_eq!(
        s["status"]["lastUpdate"]["lastSuccessfulCommit"], "1",
        "a Program's revision is its generation"
    );

    // Deleting the git Stack destroys its resources first. Every state of its Updates is
    // recorded from a watch: once the Stack is gone, the garbage collector removes them in any
    // order, so a list taken afterwards proves nothing. A destroy that fails (the backend's
    // stack is locked by "someone else") keeps the finalizer, and the Stack, until a destroy
    // succeeds.
    let seen = UpdateLog::watch(&e.rc.cp, "fromgit");
    let lock = lock_stack(e.state.path(), "e2e-git", "fromgit");
    let api: Api<DynamicObject> = Api::namespaced_with(e.rc.cp.client(), "default", &stacks());
    api.delete("fromgit", &Default::default())
        .await
        .expect("delete");
    wait_for(
        Duration::from_secs(180),
        "the destroy to fail on the lock",
        || async { seen.has("destroy", "failed").then_some(()) },
    )
    .await;
    let kept = e
        .wait_stack(
            "fromgit",
            Duration::from_secs(60),
            "the failed destroy recorded",
            |s| {
                s["status"]["lastUpdate"]["type"] == "destroy"
                    && s["status"]["lastUpdate"]["state"] == "failed"
            },
        )
        .await;
    assert!(
        kept["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "finalizer.stack.pulumi.com")),
        "a failed destroy keeps the finalizer: {kept:#}"
    );
    std::fs::remove_file(&lock).expect("unlock");
    e.wait_gone("fromgit", Duration::from_secs(240), "after its destroy")
        .await;
    let destroyed = seen.succeeded("destroy");
    assert!(
        destroyed,
        "a destroy Update succeeded before the Stack went away; seen: {:?}",
        seen.states()
    );
    let checkpoint = read_checkpoint(e.state.path(), "e2e-git", "fromgit");
    let resources = checkpoint["checkpoint"]["latest"]["resources"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(
        resources, 0,
        "the stack's resources are destroyed: {checkpoint:#}"
    );
    let history = e.pulumi(
        "e2e-git",
        &["stack", "history", "--json", "--stack", "fromgit"],
    );
    let history: Value = serde_json::from_slice(&history.stdout).unwrap_or_default();
    assert_eq!(history[0]["kind"], "destroy", "{history:#}");
    assert_eq!(history[0]["result"], "succeeded", "{history:#}");

    // A deleting Stack whose workspace cannot run the destroy (the stack name is refused by
    // the CLI, so no lastUpdate ever exists) is not let go on a guess: it stays Stalled, says
    // how to opt out, and goes once destroyOnFinalize is turned off.
    let mut bad = spec.clone();
    bad["stack"] = json!("not a valid name!");
    e.rc.cp
        .apply_yaml(&e.stack_yaml("badname", bad), "stack", "default")
        .await
        .expect("stack");
    e.wait_stack(
        "badname",
        Duration::from_secs(180),
        "a stalled workspace",
        |s| condition(s, "Stalled").is_some_and(|c| c["reason"] == "WorkspaceFailed"),
    )
    .await;
    api.delete("badname", &Default::default())
        .await
        .expect("delete");
    let s = e
        .wait_stack(
            "badname",
            Duration::from_secs(60),
            "the blocked destroy explained",
            |s| {
                condition(s, "Stalled").is_some_and(|c| {
                    c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("destroyOnFinalize\":false"))
                })
            },
        )
        .await;
    assert!(s["status"]["lastUpdate"].is_null(), "{s:#}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        e.stack("badname").await.is_some(),
        "the finalizer stays without a destroy"
    );
    let events = events_for(&e.rc.cp, "default", "Stack", "badname").await;
    assert!(
        events
            .iter()
            .any(|ev| ev.1 == "StackDestroyBlocked" && ev.2.contains("kubectl patch stack badname")),
        "{events:?}"
    );
    api.patch(
        "badname",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"destroyOnFinalize": false}})),
    )
    .await
    .expect("opt out");
    e.wait_gone(
        "badname",
        Duration::from_secs(60),
        "once the user opted out",
    )
    .await;

    // A Stack deleted with its finalizers stripped while an Update holds the Stack
    // controller's finalizer: nobody is left to absorb that Update, so it lets go by itself
    // instead of staying Terminating (and its namespace with it).
    e.rc.cp.apply_yaml(
        "apiVersion: pulumi.com/v1\nkind: Program\nmetadata: {name: prog}\nprogram:\n  outputs:\n    greeting: from-program-2\n",
        "program",
        "default",
    )
    .await
    .expect("program v2");
    let in_flight = e
        .wait_stack(
            "fromprogram",
            Duration::from_secs(60),
            "an update for the new Program",
            |s| s["status"]["currentUpdate"]["name"].is_string(),
        )
        .await;
    let held = in_flight["status"]["currentUpdate"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    api.patch(
        "fromprogram",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("strip finalizers");
    api.delete("fromprogram", &Default::default())
        .await
        .expect("delete");
    let update_api: Api<DynamicObject> =
        Api::namespaced_with(e.rc.cp.client(), "default", &updates());
    wait_for(
        Duration::from_secs(180),
        "the orphaned Update to be deleted",
        || async {
            match update_api.get_opt(&held).await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

/// Locks a stack in the file backend as another update would; returns the lock file.
fn lock_stack(state: &Path, project: &str, stack: &str) -> std::path::PathBuf {
    let locks = state.join(format!(".pulumi/locks/organization/{project}/{stack}"));
    std::fs::create_dir_all(&locks).expect("locks");
    let lock = locks.join("8a1e3c8e-0000-4000-8000-000000000007.json");
    std::fs::write(
        &lock,
        r#"{"pid":7,"username":"someone","hostname":"elsewhere","timestamp":"2026-11-25T10:00:00Z"}"#,
    )
    .expect("lock");
    // Created as root here; the workspace pods write there as uid 1000.
    let chmod = std::process::Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(state.join(".pulumi"))
        .status()
        .expect("chmod");
    assert!(chmod.success());
    lock
}

fn read_checkpoint(state: &Path, project: &str, stack: &str) -> Value {
    let path = state.join(format!(".pulumi/stacks/{project}/{stack}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("checkpoint JSON")
}
