//! The Workspace and Update controllers on the local control plane, with the operator installed
//! in the cluster as users install it (its own RBAC), Flux's source-controller in the cluster,
//! and a real node running the workspace pods from the registry's images (our `fetch` and agent, the real Pulumi CLI). The
//! file backend is a host directory mounted into the pulumi container (hostPath), so the test
//! can gate a program and look at the stack's locks.

mod support;

use std::path::Path;
use std::time::Duration;

use e2e::ControlPlane;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use support::operator::{self, BACKEND, PASSPHRASE, WORKSPACE_SA};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, condition, events_for, get_json, updates, wait_for, workspaces};

const GOOD: &str = "name: e2e-app
runtime: yaml
config:
  greeting:
    type: string
  tags:
    type: object
outputs:
  greeting: ${greeting}
  owner: ${tags.owner}
  password:
    fn::secret: s3cr3t-value
";

const BROKEN: &str = "name: e2e-broken\nruntime: yaml\noutputs:\n  x: ${undefinedThing}\n";

const UNINSTALLABLE: &str = "name: e2e-uninstallable
runtime: yaml
resources:
  r:
    type: random:RandomString
    properties:
      length: 4
    options:
      version: 4.16.0
      pluginDownloadURL: http://127.0.0.1:9/plugins
";

const GATED: &str = "name: e2e-gated\nruntime: yaml\nvariables:\n  gate:\n    fn::readFile: /state/gate\noutputs:\n  gate: ${gate}\n";

fn workspace_yaml(
    name: &str,
    (image, state): (&str, &Path),
    url: &str,
    digest: &str,
    dir: &str,
    config: Value,
) -> String {
    let ws = json!({
        "apiVersion": "auto.pulumi.com/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": WORKSPACE_SA,
            "image": image,
            "podTemplate": operator::state_pod_template(state),
            "flux": {"url": url, "digest": digest, "dir": dir},
            "env": [
                {"name": "PULUMI_BACKEND_URL", "value": BACKEND},
                {"name": "PULUMI_CONFIG_PASSPHRASE", "value": PASSPHRASE},
            ],
            "stacks": [{"name": format!("{name}-dev"), "create": true, "config": config}],
        },
    });
    serde_json::to_string(&ws).expect("json")
}

fn update_yaml(name: &str, workspace: &str, kind: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "auto.pulumi.com/v1alpha1",
        "kind": "Update",
        "metadata": {"name": name},
        "spec": {"workspaceName": workspace, "stackName": format!("{workspace}-dev"), "type": kind,
                 "ttlAfterCompleted": "1h"},
    }))
    .expect("json")
}

async fn wait_ready(rc: &RealCluster, name: &str) -> Value {
    let cp = &rc.cp;
    let pods: Api<Pod> = Api::namespaced(cp.client(), "default");
    let pod = format!("{name}-workspace-0");
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            if let Some(ws) = get_json(cp, &workspaces(), "default", name).await {
                last = ws.clone();
                let ready = condition(&ws, "Ready");
                if ready.as_ref().is_some_and(|c| c["status"] == "True")
                    && ws["status"]["observedGeneration"] == ws["metadata"]["generation"]
                {
                    return ws;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    match found {
        Ok(ws) => ws,
        Err(_) => panic!(
            "Workspace {name} never became Ready: {last:#}\npod: {:?}\nfetch: {}\npulumi: {}\noperator:\n{}",
            pods.get_opt(&pod)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.status),
            rc.kubectl(&["logs", &pod, "-c", "fetch"])
                .unwrap_or_else(|e| e),
            rc.kubectl(&["logs", &pod, "-c", "pulumi"])
                .unwrap_or_else(|e| e),
            rc.operator_log()
        ),
    }
}

async fn wait_complete(rc: &RealCluster, name: &str) -> Value {
    let cp = &rc.cp;
    let mut last = Value::Null;
    let done = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            if let Some(u) = get_json(cp, &updates(), "default", name).await {
                last = u.clone();
                if condition(&u, "Complete").is_some_and(|c| c["status"] == "True") {
                    return u;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    done.unwrap_or_else(|_| {
        panic!(
            "Update {name} never completed: {last:#}\noperator:\n{}",
            rc.operator_log()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_workspace_initializes_once_and_runs_updates_with_outputs() {
    let rc = real_node::start_installed().await;
    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "wsgood", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", GOOD)], "program")
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &sha).await;
    let (url, digest) = (
        artifact["url"].as_str().expect("url"),
        artifact["digest"].as_str().expect("digest"),
    );
    let state = operator::shared_state();
    let pod_env = (rc.images.pulumi.as_str(), state.path());

    let config = json!([{"key": "greeting", "value": "hello"}, {"key": "tags", "value": {"owner": "team-a"}}]);
    cp.apply_yaml(
        &workspace_yaml("app", pod_env, url, digest, "app", config),
        "ws",
        "default",
    )
    .await
    .expect("workspace");
    let ws = wait_ready(&rc, "app").await;
    assert_eq!(ws["status"]["pulumiVersion"], "3.259.0");
    assert_eq!(ws["status"]["address"], "app-workspace.default:50051");
    let pods: Api<Pod> = Api::namespaced(cp.client(), "default");
    let pod = pods.get("app-workspace-0").await.expect("pod");
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("auto.pulumi.com/initialized").map(String::as_str),
        Some("true")
    );
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(containers, ["bootstrap", "fetch", "pulumi"]);
    let events = events_for(cp, "default", "Workspace", "app").await;
    let initialized: Vec<_> = events.iter().filter(|e| e.1 == "Initialized").collect();
    assert_eq!(initialized.len(), 1, "initialized once: {events:?}");
    assert_eq!(
        initialized[0].2,
        "Initialized workspace pod \"app-workspace-0\""
    );

    cp.apply_yaml(&update_yaml("app-up-1", "app", "up"), "update", "default")
        .await
        .expect("update");
    let u = wait_complete(&rc, "app-up-1").await;
    assert_eq!(
        condition(&u, "Failed").expect("Failed")["reason"],
        "UpdateSucceeded",
        "{u:#}"
    );
    assert_eq!(
        condition(&u, "Progressing").expect("Progressing")["status"],
        "False"
    );
    assert!(
        u["status"]["startTime"].is_string() && u["status"]["endTime"].is_string(),
        "{u:#}"
    );
    assert_eq!(
        u["status"]["projectInfo"],
        json!({"name": "e2e-app", "runtime": "yaml"})
    );
    assert_eq!(u["status"]["outputs"], "app-up-1-stack-outputs");
    let secrets: Api<Secret> = Api::namespaced(cp.client(), "default");
    let out = secrets
        .get("app-up-1-stack-outputs")
        .await
        .expect("outputs secret");
    let data = out.data.clone().expect("data");
    assert_eq!(data["greeting"].0, b"\"hello\"");
    assert_eq!(data["owner"].0, b"\"team-a\"");
    assert_eq!(data["password"].0, b"\"s3cr3t-value\"");
    assert_eq!(out.immutable, Some(true));
    assert_eq!(
        out.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pulumi.com/secrets"))
            .map(String::as_str),
        Some("[\"password\"]")
    );
    let events = events_for(cp, "default", "Workspace", "app").await;
    assert!(
        events
            .iter()
            .any(|e| e.1 == "UpdateSucceeded" && e.2 == "Updated stack \"app-dev\""),
        "{events:?}"
    );

    // A preview in the same pod: no re-initialization.
    cp.apply_yaml(
        &update_yaml("app-preview-1", "app", "preview"),
        "update",
        "default",
    )
    .await
    .expect("preview");
    let p = wait_complete(&rc, "app-preview-1").await;
    assert_eq!(
        condition(&p, "Failed").expect("Failed")["reason"],
        "UpdateSucceeded",
        "{p:#}"
    );
    let events = events_for(cp, "default", "Workspace", "app").await;
    assert_eq!(
        events.iter().filter(|e| e.1 == "Initialized").count(),
        1,
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.2 == "Previewed stack \"app-dev\""),
        "{events:?}"
    );
    let log = real_node::operator_log_all(&rc);
    assert!(!log.is_empty(), "the operator's log");
    assert!(
        !log.contains("s3cr3t-value"),
        "no secret in the operator log"
    );

    let metrics = real_node::operator_metrics(&rc).await;
    assert!(
        metrics.contains("reconcile_total{controller=\"workspace\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_install_and_program_failures_each_say_what_went_wrong() {
    let rc = real_node::start_installed().await;
    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "wsbad", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(
            &[
                ("broken/Pulumi.yaml", BROKEN),
                ("uninstallable/Pulumi.yaml", UNINSTALLABLE),
            ],
            "programs",
        )
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &sha).await;
    let (url, digest) = (
        artifact["url"].as_str().expect("url"),
        artifact["digest"].as_str().expect("digest"),
    );
    let state = operator::shared_state();
    let pod_env = (rc.images.pulumi.as_str(), state.path());

    let wrong = format!("sha256:{}", "0".repeat(64));
    cp.apply_yaml(
        &workspace_yaml("baddigest", pod_env, url, &wrong, "broken", json!([])),
        "ws",
        "default",
    )
    .await
    .expect("ws");
    cp.apply_yaml(
        &workspace_yaml(
            "uninstallable",
            pod_env,
            url,
            digest,
            "uninstallable",
            json!([]),
        ),
        "ws",
        "default",
    )
    .await
    .expect("ws");
    cp.apply_yaml(
        &workspace_yaml("broken", pod_env, url, digest, "broken", json!([])),
        "ws",
        "default",
    )
    .await
    .expect("ws");

    let ws = wait_for(
        Duration::from_secs(120),
        "baddigest to report FetchFailed",
        || async {
            let ws = get_json(cp, &workspaces(), "default", "baddigest").await?;
            (condition(&ws, "Ready")?["reason"] == "FetchFailed").then_some(ws)
        },
    )
    .await;
    let msg = condition(&ws, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("digest") && msg.contains("000000000000"),
        "the fetch container's own words: {msg}"
    );
    let events = events_for(cp, "default", "Workspace", "baddigest").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "FetchFailed" && e.2 == msg),
        "{events:?}"
    );

    let ws = wait_for(
        Duration::from_secs(180),
        "uninstallable to stall",
        || async {
            let ws = get_json(cp, &workspaces(), "default", "uninstallable").await?;
            (condition(&ws, "Stalled")?["reason"] == "InstallationFailed").then_some(ws)
        },
    )
    .await;
    assert_eq!(
        condition(&ws, "Ready").expect("Ready")["reason"],
        "InstallationFailed"
    );
    let events = events_for(cp, "default", "Workspace", "uninstallable").await;
    let install = events
        .iter()
        .find(|e| e.1 == "InstallationFailure")
        .expect("InstallationFailure event");
    assert!(install.2.contains("random"), "{install:?}");

    wait_ready(&rc, "broken").await;
    cp.apply_yaml(
        &update_yaml("broken-up", "broken", "up"),
        "update",
        "default",
    )
    .await
    .expect("update");
    let u = wait_complete(&rc, "broken-up").await;
    let failed = condition(&u, "Failed").expect("Failed");
    assert_eq!(failed["status"], "True", "{u:#}");
    let message = u["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("undefinedThing"), "{u:#}");
    let events = events_for(cp, "default", "Workspace", "broken").await;
    assert!(
        events
            .iter()
            .any(|e| e.1 == "UpdateFailed"
                && e.2.starts_with("Failed to update stack \"broken-dev\"")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.1 == "UpdateSucceeded"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pod_mid_update_ends_the_update_aborted_and_unlocked() {
    let rc = real_node::start_installed().await;
    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "wsgated", rc.network.gateway()).await;
    let sha = fx
        .repo
        .commit(&[("Pulumi.yaml", GATED)], "program")
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &sha).await;
    let (url, digest) = (
        artifact["url"].as_str().expect("url"),
        artifact["digest"].as_str().expect("digest"),
    );
    let state = operator::shared_state();
    let gate = state.path().join("gate");
    std::fs::write(&gate, "open\n").expect("gate");
    let pod_env = (rc.images.pulumi.as_str(), state.path());
    cp.apply_yaml(
        &workspace_yaml("gated", pod_env, url, digest, "", json!([])),
        "ws",
        "default",
    )
    .await
    .expect("ws");
    wait_ready(&rc, "gated").await;

    // The gate becomes a pipe: the next update blocks reading it, mid-run.
    std::fs::remove_file(&gate).expect("rm");
    let c = std::ffi::CString::new(gate.display().to_string()).expect("path");
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    cp.apply_yaml(&update_yaml("gated-up", "gated", "up"), "update", "default")
        .await
        .expect("update");
    wait_for(Duration::from_secs(120), "the update to run", || async {
        let u = get_json(cp, &updates(), "default", "gated-up").await?;
        (condition(&u, "Progressing")?["status"] == "True").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods: Api<Pod> = Api::namespaced(cp.client(), "default");
    pods.delete("gated-workspace-0", &Default::default())
        .await
        .expect("delete pod");
    // The agent interrupts Pulumi, which finishes its step (the read) and saves its state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writer = std::thread::spawn(move || std::fs::write(&gate, "open\n"));
    let u = wait_complete(&rc, "gated-up").await;
    let _ = writer.join();
    let failed = condition(&u, "Failed").expect("Failed");
    assert_eq!(
        (failed["status"].as_str(), failed["reason"].as_str()),
        (Some("True"), Some("Aborted")),
        "{u:#}"
    );
    let locks = state
        .path()
        .join(".pulumi/locks/organization/e2e-gated/gated-dev");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no lock left behind: {left:?}");
}

/// The operator writes Workspace statuses behind its reconciles; a status still queued for a
/// Workspace that was deleted and created again under the same name must be refused by the
/// API server, not written onto the new object. Written with the operator's own RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_queued_for_a_replaced_workspace_is_refused() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let kubeconfig = operator::install(&cp).await;
    let client = e2e::control_plane::client_from(&kubeconfig)
        .await
        .expect("the operator's client");
    let write = ::operator::controller::workspace::status_writer(client);
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client(), "default", &workspaces());
    let create = || async {
        let yaml = workspace_yaml(
            "replaced",
            ("e2e.local/unused:1", Path::new("/tmp")),
            "http://127.0.0.1:9/a.tar.gz",
            &format!("sha256:{}", "0".repeat(64)),
            "app",
            json!([]),
        );
        let obj: DynamicObject = serde_json::from_str(&yaml).expect("workspace json");
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create the Workspace")
            .metadata
            .uid
            .expect("uid")
    };
    let job = |uid: &str| ::operator::controller::runtime::status_queue::Job {
        namespace: "default".into(),
        name: "replaced".into(),
        uid: uid.into(),
        status: json!({"observedGeneration": 1, "address": "old.example:50051"}),
    };

    let first = create().await;
    api.delete("replaced", &Default::default())
        .await
        .expect("delete");
    wait_for(Duration::from_secs(30), "the Workspace to go", || async {
        api.get_opt("replaced").await.ok()?.is_none().then_some(())
    })
    .await;
    let second = create().await;
    assert_ne!(first, second);

    match write(&job(&first)).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("a status for the old uid was not refused: {other:?}"),
    }
    let now = api.get("replaced").await.expect("get");
    assert!(
        now.data.get("status").is_none_or(Value::is_null),
        "the new Workspace got the old one's status: {:?}",
        now.data.get("status")
    );

    write(&job(&second))
        .await
        .expect("a status for the current uid");
    let now = api.get("replaced").await.expect("get");
    assert_eq!(now.data["status"]["address"], "old.example:50051");
    assert_eq!(now.data["status"]["observedGeneration"], 1);
}
