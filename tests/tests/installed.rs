//! Installed as users install (real nodes, step 2, first part): on a real node, CoreDNS runs as
//! `kube-dns`, Flux's source-controller from its own kustomize config in `flux-system`, and this
//! operator from `kubectl apply --server-side -k` of `config/default` with an overlay naming
//! the registry's images; `kubectl apply -k config/flux` is accepted. A Flux Stack reaches
//! Ready: its workspace pod fetches the artifact from source-controller by its cluster DNS
//! name, through kube-proxy; `kubectl logs <pod> -c fetch` shows fetch's report and `kubectl
//! exec <pod> -c pulumi -- sh -c 'pulumi version'` works. Every pod runs on the node from the
//! registry's images (image IDs are registry digests), and the node's containerd agrees.
//! Deleting the Stack runs its destroy; the node then stops leaving nothing behind.

mod support;

use std::time::{Duration, Instant};

use e2e::in_cluster::{FLUX_NAMESPACE, OPERATOR_NAMESPACE};
use e2e::node::Leftovers;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::{Value, json};

use support::operator::PASSPHRASE;
use support::real_node::{self, RealCluster};
use support::{FluxFixture, UpdateLog, condition, events_for, get_json, stacks};

const STACK: &str = "installed";

fn stack(image: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "pulumi.com/v1",
        "kind": "Stack",
        "metadata": {"name": STACK},
        "spec": {
            "stack": "dev",
            "serviceAccountName": "pulumi",
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

async fn wait_ready(rc: &RealCluster, revision: &Value, limit: Duration) -> Value {
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
            let pods = rc
                .kubectl(&["get", "pods", "-A", "-o", "wide"])
                .unwrap_or_else(|e| e);
            panic!(
                "Stack {STACK} not Ready at {revision} within {limit:?}; status: {:#}\n\
                 events: {:?}\npods:\n{pods}\noperator log:\n{}{}",
                s.map(|s| s["status"].clone()).unwrap_or_default(),
                events_for(&rc.cp, "default", "Stack", STACK).await,
                rc.operator_log(),
                rc.node.diagnose()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_as_users_install_a_flux_stack_reaches_ready() {
    let mut rc = real_node::start().await;
    rc.install_in_cluster()
        .await
        .unwrap_or_else(|e| panic!("installing in the cluster: {e}"));
    let flux_config = e2e::control_plane::repo_root().join("config/flux");
    rc.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &flux_config.display().to_string(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));

    let fx = FluxFixture::in_cluster(&rc.cp, STACK, rc.network.gateway()).await;
    let first = fx
        .repo
        .commit(
            &[(
                "app/Pulumi.yaml",
                "name: installed\nruntime: yaml\noutputs:\n  greeting: hello\n",
            )],
            "one",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    let artifact = fx.wait_revision(&rc.cp, &first).await;
    let url = artifact["url"].as_str().expect("artifact URL");
    assert!(
        url.starts_with("http://source-controller.flux-system.svc.cluster.local./"),
        "source-controller advertises its Service's DNS name: {url}"
    );

    rc.cp
        .apply_yaml(&stack(&rc.images.pulumi), "stack", "default")
        .await
        .expect("apply the Stack");
    let s = wait_ready(&rc, &artifact["revision"], Duration::from_secs(240)).await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello"}),
        "{s:#}"
    );

    // fetch reached source-controller by its cluster DNS name (CoreDNS, kube-proxy).
    let pod_name = format!("{STACK}-workspace-0");
    let fetch_log = rc
        .kubectl(&["logs", &pod_name, "-c", "fetch"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fetch_log.contains("artifact verified and unpacked")
            && fetch_log.contains("url=http://source-controller.flux-system.svc.cluster.local./"),
        "fetch's log: {fetch_log}"
    );

    // The guide's shell: the Pulumi CLI in the workspace container.
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

    // Every pod of the cluster runs on the node, from the registry's images.
    let pods = Api::<Pod>::all(rc.cp.client())
        .list(&ListParams::default())
        .await
        .expect("pods");
    let mut seen = Vec::new();
    for pod in &pods.items {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().expect("spec");
        assert_eq!(
            spec.node_name.as_deref(),
            Some(rc.node.name()),
            "{ns}/{name}"
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running"),
            "{ns}/{name}"
        );
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let image = c.image.clone().unwrap_or_default();
            assert!(
                image.starts_with(rc.registry.addr()),
                "{ns}/{name} container {} runs {image}",
                c.name
            );
            seen.push(image);
        }
        // What containerd pulled: a digest in the cluster's registry.
        let status = pod.status.clone().unwrap_or_default();
        for cs in status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
        {
            assert!(
                cs.image_id.contains(rc.registry.addr()) && cs.image_id.contains("@sha256:"),
                "{ns}/{name} container {} has image ID {}",
                cs.name,
                cs.image_id
            );
        }
        seen.push(format!("{ns}/{name}"));
    }
    for ns in ["kube-system", FLUX_NAMESPACE, OPERATOR_NAMESPACE, "default"] {
        assert!(
            seen.iter().any(|s| s.starts_with(&format!("{ns}/"))),
            "no pod in {ns}: {seen:?}"
        );
    }
    // The node's containerd runs the same images.
    let on_node = rc.node.container_images().expect("ctr containers ls");
    for image in seen.iter().filter(|s| s.starts_with(rc.registry.addr())) {
        assert!(
            on_node.contains(image),
            "containerd has no container of {image}: {on_node:?}"
        );
    }

    // Deleting the Stack destroys it through the in-cluster operator.
    let updates = UpdateLog::watch(&rc.cp, STACK);
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", &stacks());
    api.delete(STACK, &DeleteParams::default())
        .await
        .expect("delete the Stack");
    let deadline = Instant::now() + Duration::from_secs(180);
    while api.get_opt(STACK).await.ok().flatten().is_some() {
        assert!(
            Instant::now() < deadline,
            "the Stack was not destroyed and removed; operator log:\n{}{}",
            rc.operator_log(),
            rc.node.diagnose()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(updates.succeeded("destroy"), "{:?}", updates.states());

    drop(fx);
    rc.node.stop();
    assert_eq!(Leftovers::of(&rc.node), Leftovers::default());
}
