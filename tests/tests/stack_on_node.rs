//! The Stack path on a real node (real nodes, step 1c): the operator (a host process under its
//! own RBAC) creates the workspace pod; the node pulls our fetch and operator images and a
//! Pulumi image from the registry and runs the bootstrap, `fetch` and `pulumi` containers as
//! real containers; `fetch` pulls the Flux artifact from source-controller; the Stack reaches
//! Ready; `kubectl logs <pod> -c fetch` shows fetch's report and `kubectl exec <pod> -c pulumi
//! -- sh -c 'pulumi version'` works. Deleting the Stack runs its destroy on the node, and the
//! node then stops leaving nothing behind.

mod support;

use std::time::{Duration, Instant};

use e2e::node::Leftovers;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::{Value, json};

use support::operator::{PASSPHRASE, WORKSPACE_SA};
use support::real_node::{self, HostOperator, RealCluster};
use support::{FluxFixture, UpdateLog, condition, events_for, get_json, stacks};

const STACK: &str = "onnode";

fn program(greeting: &str) -> String {
    format!("name: on-node\nruntime: yaml\noutputs:\n  greeting: {greeting}\n")
}

/// The Stack as config/samples/flux_source_stack.yaml has it (the file backend on an emptyDir
/// volume of the pulumi container), with this cluster's Pulumi image.
fn stack(image: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "pulumi.com/v1",
        "kind": "Stack",
        "metadata": {"name": STACK},
        "spec": {
            "stack": "dev",
            "serviceAccountName": WORKSPACE_SA,
            "fluxSource": {
                "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1",
                              "kind": "GitRepository", "name": STACK},
                "dir": "app",
            },
            "backend": "file:///state",
            "envRefs": {"PULUMI_CONFIG_PASSPHRASE":
                        {"type": "Literal", "literal": {"value": PASSPHRASE}}},
            "destroyOnFinalize": true,
            "workspaceTemplate": {"spec": {
                "image": image,
                "podTemplate": {"spec": {
                    "containers": [{"name": "pulumi",
                                    "volumeMounts": [{"name": "state", "mountPath": "/state"}]}],
                    "volumes": [{"name": "state", "emptyDir": {}}],
                }},
            }},
        },
    }))
    .expect("json")
}

async fn wait_stack(
    rc: &RealCluster,
    op_log: &dyn Fn() -> String,
    revision: &Value,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = get_json(&rc.cp, &stacks(), "default", STACK).await;
        if let Some(s) = &s
            && condition(s, "Ready").is_some_and(|c| c["status"] == "True")
            && s["status"]["lastUpdate"]["lastSuccessfulCommit"] == *revision
        {
            return s.clone();
        }
        if Instant::now() > deadline {
            let pod = format!("{STACK}-workspace-0");
            let describe = rc.kubectl(&["describe", "pod", &pod]).unwrap_or_else(|e| e);
            panic!(
                "Stack {STACK} not Ready at {revision} within {limit:?}; status: {:#}\n\
                 events: {:?}\n{describe}\noperator log:\n{}{}",
                s.map(|s| s["status"].clone()).unwrap_or_default(),
                events_for(&rc.cp, "default", "Stack", STACK).await,
                op_log(),
                rc.node.diagnose()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_stack_reaches_ready_on_a_real_node() {
    let mut rc = real_node::start().await;
    let fx = FluxFixture::start_on(&rc.cp, STACK, rc.network.gateway()).await;
    let first = fx
        .repo
        .commit(
            &[("app/Pulumi.yaml", &program("hello from a real node"))],
            "one",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    let artifact = fx.wait_revision(&rc.cp, &first).await;
    let (op, _kubeconfig) = rc.start_operator().await;
    let op_log = || e2e::process::tail(op.process.log_path(), 40);

    rc.cp
        .apply_yaml(&stack(&rc.images.pulumi), "stack", "default")
        .await
        .expect("apply the Stack");
    let s = wait_stack(
        &rc,
        &op_log,
        &artifact["revision"],
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(s["status"]["lastUpdate"]["state"], "succeeded", "{s:#}");
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello from a real node"})
    );

    // The workspace pod runs on the node, from the registry's images.
    let pod_name = format!("{STACK}-workspace-0");
    let pod = Api::<Pod>::namespaced(rc.cp.client(), "default")
        .get(&pod_name)
        .await
        .expect("workspace pod");
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(rc.node.name()));
    let images: Vec<(String, String)> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    for (name, image) in &images {
        assert!(
            image.starts_with(rc.registry.addr()),
            "container {name} runs {image}, not an image of the cluster's registry"
        );
    }
    let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"fetch") && names.contains(&"pulumi"),
        "{names:?}"
    );
    let status = pod.status.expect("status");
    for cs in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        // What containerd pulled: a digest in the cluster's registry.
        assert!(
            cs.image_id.contains(rc.registry.addr()) && cs.image_id.contains("@sha256:"),
            "container {} has image ID {}",
            cs.name,
            cs.image_id
        );
    }

    // fetch's report, and the Pulumi CLI in the workspace container.
    let fetch_log = rc
        .kubectl(&["logs", &pod_name, "-c", "fetch"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fetch_log.contains("artifact verified and unpacked")
            && fetch_log.contains(artifact["digest"].as_str().expect("digest")),
        "fetch's log: {fetch_log}"
    );
    let version = rc
        .kubectl(&[
            "exec",
            &pod_name,
            "-c",
            "pulumi",
            "--",
            "sh",
            "-c",
            "pulumi version",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        version.trim().starts_with("v3."),
        "pulumi version: {version}"
    );

    // Deleting the Stack destroys it through the workspace on the node.
    let seen = UpdateLog::watch(&rc.cp, STACK);
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", &stacks());
    api.delete(STACK, &DeleteParams::default())
        .await
        .expect("delete the Stack");
    let deadline = Instant::now() + Duration::from_secs(180);
    while api.get_opt(STACK).await.ok().flatten().is_some() {
        assert!(
            Instant::now() < deadline,
            "the Stack was not destroyed and removed; events: {:?}\noperator log:\n{}{}",
            events_for(&rc.cp, "default", "Stack", STACK).await,
            op_log(),
            rc.node.diagnose()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen.succeeded("destroy"),
        "no destroy Update succeeded before the Stack went away: {:?}",
        seen.states()
    );

    drop(op);
    drop(fx);
    rc.node.stop();
    assert_eq!(Leftovers::of(&rc.node), Leftovers::default());
}
