//! The drop-in promise, checked as a PKO user would make the switch: PKO v2.9.0's own Helm
//! chart (from the PKO snapshot, `tests/tools/build.sh pko`), installed by `helm install` on a
//! real node with nothing changed but the image values, and PKO's quickstart manifest, applied
//! with its image replaced, each run our operator image; PKO's own Flux example
//! (`examples/flux-source`) then reaches Ready and, being `destroyOnFinalize`, is destroyed
//! when deleted. What the example names that cannot exist here is replaced and
//! nothing else: its GitHub repository by a git server on loopback (same GitRepository name,
//! program in the same `random-yaml/` directory, a program without providers, which cannot
//! be downloaded here), Pulumi Cloud (`PULUMI_ACCESS_TOKEN`) by a file backend, its Pulumi
//! image by ours.

mod support;

use std::path::Path;
use std::time::Duration;

use e2e::cluster::tool_dir;
use e2e::in_cluster::wait_available;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::{Value, json};

use support::operator::{BACKEND, PASSPHRASE, shared_state, state_pod_template};
use support::real_node::tail_lines;
use support::real_node::{self, RealCluster};
use support::{FluxFixture, get_json, helm, stacks};

const NAMESPACE: &str = "pulumi-kubernetes-operator";
const RELEASE: &str = "pulumi-kubernetes-operator";

/// The YAML documents of a file of PKO's snapshot, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} from the PKO snapshot: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("YAML");
            serde_json::to_value(v).expect("JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkos_own_chart_runs_our_image_and_its_flux_example_reaches_ready() {
    let mut rc = real_node::start_with_dependencies().await;
    let pko = tool_dir("pko", "pulumi-kubernetes-agent").expect("PKO's snapshot (tool pko)");

    // Only the image values change: `<registry>/<repository>:<tag>` is the chart's image.
    helm::install(&rc, RELEASE, &pko.join("chart"), NAMESPACE, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let deployment = format!("{RELEASE}-controller-manager");
    wait_available(
        &rc.cp,
        &mut rc.node,
        NAMESPACE,
        &deployment,
        &format!("app.kubernetes.io/name={RELEASE},app.kubernetes.io/instance={RELEASE}"),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("PKO's chart with our image: {e}"));
    let manifest = helm::on(&rc, &["get", "manifest", RELEASE, "-n", NAMESPACE]).expect("manifest");
    assert!(
        manifest.contains("- /manager") && manifest.contains("--metrics-secure=true"),
        "the chart's own command line: {manifest}"
    );

    // The chart asks for secure metrics but grants no TokenReview: scrapes fail as PKO's do.
    let ip = rc
        .kubectl(&[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .expect("the operator pod's IP");
    let token = rc
        .kubectl(&["create", "token", "default", "-n", "default"])
        .expect("a token");
    let scrape = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(format!("https://{ip}:8383/metrics"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("the metrics endpoint answers over HTTPS");
    assert_eq!(scrape.status().as_u16(), 500);
    assert_eq!(
        scrape.text().await.unwrap_or_default().trim(),
        "Authentication failed"
    );

    pkos_flux_example_reaches_ready_and_is_destroyed(&rc, &pko, &deployment).await;
}

/// PKO's quickstart manifest (`deploy/quickstart/install.yaml`, what PKO's README tells users
/// to `kubectl apply -f`, which must be `--server-side` for PKO's CRDs), its image replaced by
/// ours and nothing else: the Deployment's
/// command line (`--metrics-bind-address=:8443`, `--zap-*`, the leader-election variables) is
/// taken, and PKO's example reaches Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkos_quickstart_manifest_runs_our_image_and_its_flux_example_reaches_ready() {
    let mut rc = real_node::start_with_dependencies().await;
    let pko = tool_dir("pko", "pulumi-kubernetes-agent").expect("PKO's snapshot (tool pko)");
    let manifest = std::fs::read_to_string(pko.join("quickstart/install.yaml"))
        .expect("PKO's quickstart manifest");
    let theirs = "image: pulumi/pulumi-kubernetes-operator:v2.9.0";
    assert_eq!(manifest.matches(theirs).count(), 1, "PKO's one image");
    let ours = manifest.replace(theirs, &format!("image: {}", rc.images.operator));
    let file = rc.cp.dir().join("pko-quickstart.yaml");
    std::fs::write(&file, ours).expect("write the manifest");
    // PKO's README says `kubectl apply -f`, which the apiserver refuses for PKO's Stack and
    // Workspace CRDs whatever the image ("metadata.annotations: Too long": client-side apply
    // keeps the whole object in an annotation of at most 262144 bytes); server-side it is.
    rc.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])
        .unwrap_or_else(|e| panic!("kubectl apply --server-side -f PKO's quickstart: {e}"));
    let deployment = "controller-manager";
    wait_available(
        &rc.cp,
        &mut rc.node,
        NAMESPACE,
        deployment,
        "control-plane=controller-manager",
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("PKO's quickstart with our image: {e}"));
    pkos_flux_example_reaches_ready_and_is_destroyed(&rc, &pko, deployment).await;
}

/// PKO's `examples/flux-source` under the operator that `deployment` (in [`NAMESPACE`]) runs:
/// Ready with its outputs, events from PKO's recorder names, no call the manifests' RBAC
/// refuses, and destroyed when deleted.
async fn pkos_flux_example_reaches_ready_and_is_destroyed(
    rc: &RealCluster,
    pko: &Path,
    deployment: &str,
) {
    // PKO's example, with what cannot exist here replaced.
    let example = pko.join("examples/flux-source");
    let mut repository = documents(&example.join("repository.yaml"));
    let mut stack_docs = documents(&example.join("stack.yaml"));
    let repo_name = repository[0]["metadata"]["name"]
        .as_str()
        .expect("the GitRepository's name")
        .to_string();
    let fx = FluxFixture::in_cluster(&rc.cp, &repo_name, rc.network.gateway()).await;
    let stack = stack_docs
        .iter_mut()
        .find(|d| d["kind"] == "Stack")
        .expect("the example's Stack");
    let dir = stack["spec"]["fluxSource"]["dir"]
        .as_str()
        .expect("the example's dir")
        .trim_end_matches('/')
        .to_string();
    let program =
        "name: random-yaml\nruntime: yaml\noutputs:\n  greeting: hello from PKO's example\n";
    let sha = fx
        .repo
        .commit(&[(&format!("{dir}/Pulumi.yaml"), program)], "the example")
        .expect("commit");
    let spec = &mut repository[0]["spec"];
    spec["url"] = json!(fx.git.url(&repo_name));
    spec["ref"] = json!({"branch": "main"});
    spec["secretRef"] = json!({"name": format!("{repo_name}-auth")});
    let state = shared_state();
    let spec = &mut stack["spec"];
    spec["envRefs"] = json!({"PULUMI_CONFIG_PASSPHRASE":
        {"type": "Literal", "literal": {"value": PASSPHRASE}}});
    spec["backend"] = json!(BACKEND);
    spec["workspaceTemplate"]["spec"]["image"] = json!(rc.images.pulumi);
    spec["workspaceTemplate"]["spec"]["podTemplate"] = state_pod_template(state.path());
    let name = stack["metadata"]["name"]
        .as_str()
        .expect("the Stack's name")
        .to_string();
    for doc in repository.iter().chain(&stack_docs) {
        rc.cp
            .apply_yaml(&doc.to_string(), "PKO's flux-source example", "default")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    fx.wait_revision(&rc.cp, &sha).await;

    let s = real_node::wait_ready_after_success(rc, &name).await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": "hello from PKO's example"}),
        "{s:#}"
    );

    // Events through the RBAC PKO's chart grants (core events), from PKO's recorder names.
    let events: Api<Event> = Api::namespaced(rc.cp.client(), "default");
    let from_stack: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("stack-controller")
        })
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        from_stack.iter().any(|r| r == "StackCreated"),
        "events from stack-controller: {from_stack:?}"
    );
    let log = rc
        .kubectl(&["logs", "-n", NAMESPACE, &format!("deploy/{deployment}")])
        .unwrap_or_else(|e| e);
    // Everything but the metrics' TokenReview, which PKO's chart does not grant.
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forbidden") && !l.contains("TokenReview was refused"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC covers every call the operator makes:\n{}",
        forbidden.join("\n")
    );

    // destroyOnFinalize: deleting the Stack destroys it, then the Stack goes.
    let api: Api<DynamicObject> = Api::namespaced_with(rc.cp.client(), "default", &stacks());
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the Stack");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while get_json(&rc.cp, &stacks(), "default", &name)
        .await
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the Stack was not finalized:\n{}",
            tail_lines(
                &rc.kubectl(&["logs", "-n", NAMESPACE, &format!("deploy/{deployment}")])
                    .unwrap_or_else(|e| e),
                40
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
