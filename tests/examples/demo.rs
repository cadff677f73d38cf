//! The main job (`bash scripts/demo.sh`): a Stack reaching Ready from a Flux source, live, with
//! its workspace pod running as real containers on a real node.
//!
//! Starts the local control plane (etcd, kube-apiserver, controller-manager, scheduler), a real
//! node (containerd, runc, the kubelet, kube-proxy) pulling from a loopback registry that holds
//! our images built from our Dockerfiles and a Pulumi image; installs CoreDNS, Flux's
//! source-controller (its own kustomize config) and this operator (`kubectl apply
//! --server-side -k config/default`, the registry's images) in the cluster; serves a git
//! repository on the node network; applies the flux-source sample of config/samples (pointed at the local repository and the
//! registry's Pulumi image), prints the events as they happen, then the Stack's status, the
//! workspace pod's logs and a new commit rolling out. `DEMO_KEEP=1` leaves everything running
//! for kubectl until Ctrl-C.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::ControlPlane;
use e2e::control_plane::{documents, repo_root};
use serde_json::{Value, json};

use support::real_node;
use support::{FluxFixture, condition, get_json, stacks};

const PROGRAM_DIR: &str = "random-yaml";

fn program(greeting: &str) -> String {
    format!(
        "name: demo\nruntime: yaml\ndescription: a provider-free program, so nothing is downloaded\n\
         outputs:\n  greeting: {greeting}\n  password:\n    fn::secret: s3cr3t\n"
    )
}

fn step(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

/// The flux-source sample Stack, with its source and image made local (the sample's
/// emptyDir for the file backend stays).
fn sample_stack(source: &str, image: &str) -> (String, Value) {
    let path = repo_root().join("config/samples/flux_source_stack.yaml");
    let text = std::fs::read_to_string(&path).expect("config/samples/flux_source_stack.yaml");
    let mut stack = documents(&text, "flux_source_stack.yaml")
        .expect("YAML")
        .into_iter()
        .find(|d| d["kind"] == "Stack")
        .expect("a Stack in the sample");
    stack["spec"]["fluxSource"]["sourceRef"]["name"] = json!(source);
    stack["spec"]["workspaceTemplate"]["spec"]["image"] = json!(image);
    let name = stack["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    (name, stack)
}

/// Prints the events of the Stack and its Workspace not printed yet.
async fn print_events(cp: &ControlPlane, name: &str, seen: &mut HashSet<String>) {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cp.client(), "default");
    let Ok(list) = api.list(&Default::default()).await else {
        return;
    };
    let mut fresh: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| {
            let r = e.regarding.as_ref();
            r.and_then(|r| r.name.as_deref()) == Some(name)
                && e.metadata.name.as_ref().is_some_and(|n| !seen.contains(n))
        })
        .collect();
    fresh.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    for e in fresh {
        seen.insert(e.metadata.name.clone().unwrap_or_default());
        let kind = e.regarding.and_then(|r| r.kind).unwrap_or_default();
        let note = e.note.unwrap_or_default();
        let note = note.lines().next().unwrap_or("");
        println!(
            "  {:<8} {:<28} {kind}/{name}: {note}",
            e.type_.unwrap_or_default(),
            e.reason.unwrap_or_default()
        );
    }
}

async fn wait_ready(
    cp: &ControlPlane,
    name: &str,
    seen: &mut HashSet<String>,
    revision: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        print_events(cp, name, seen).await;
        if let Some(s) = get_json(cp, &stacks(), "default", name).await
            && condition(&s, "Ready").is_some_and(|c| c["status"] == "True")
            && s["status"]["lastUpdate"]["lastSuccessfulCommit"] == revision
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the Stack did not become Ready in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    step("a local cluster: etcd, kube-apiserver, controller-manager, scheduler, and a real node");
    println!("  building our images from Dockerfile.fetch and Dockerfile.operator (buildah)");
    let mut rc = real_node::start().await;
    println!("  apiserver {}", rc.cp.url());
    println!(
        "  node {} ({}): containerd, runc, kubelet, kube-proxy",
        rc.node.name(),
        rc.node.ip()
    );
    println!("  registry {}:", rc.registry.addr());
    for image in [&rc.images.fetch, &rc.images.operator, &rc.images.pulumi] {
        println!("    {image}");
    }

    step("installed as users install: CoreDNS, Flux's source-controller, this operator");
    rc.install_in_cluster()
        .await
        .unwrap_or_else(|e| panic!("installing in the cluster: {e}"));
    println!("  CoreDNS as kube-dns (kube-system)");
    println!("  source-controller: its own config/default, in flux-system");
    println!(
        "  this operator: kubectl apply --server-side -k config/default (images: the registry's)"
    );

    step("Flux: a git repository with a Pulumi YAML program");
    let fx = FluxFixture::in_cluster(&rc.cp, "demo", rc.network.gateway()).await;
    let path = format!("{PROGRAM_DIR}/Pulumi.yaml");
    let first = fx
        .repo
        .commit(&[(&path, &program("hello from Flux"))], "a program")
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    let artifact = fx.wait_revision(&rc.cp, &first).await;
    println!(
        "  GitRepository demo: artifact {} ({})",
        artifact["revision"], artifact["digest"]
    );

    let (name, stack) = sample_stack("demo", &rc.images.pulumi);
    step(&format!(
        "applying the sample Stack {name} (config/samples/flux_source_stack.yaml)"
    ));
    println!("{}", serde_yaml::to_string(&stack).unwrap_or_default());
    rc.cp
        .apply_yaml(
            &serde_json::to_string(&stack).expect("json"),
            "stack",
            "default",
        )
        .await
        .expect("apply the Stack");

    step("events, as `kubectl get events` shows them");
    let mut seen = HashSet::new();
    let started = Instant::now();
    let s = wait_ready(
        &rc.cp,
        &name,
        &mut seen,
        artifact["revision"].as_str().unwrap_or(""),
    )
    .await;
    step(&format!(
        "Stack {name} is Ready after {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let status = &s["status"];
    println!("  lastUpdate: {}", status["lastUpdate"]);
    println!("  outputs:    {}", status["outputs"]);
    let pod = format!("{name}-workspace-0");
    for (container, lines) in [("fetch", 3), ("pulumi", 8)] {
        println!("\n  $ kubectl logs {pod} -c {container} | tail -{lines}");
        let log = rc
            .kubectl(&["logs", &pod, "-c", container])
            .unwrap_or_else(|e| e);
        let all: Vec<&str> = log.lines().collect();
        for l in &all[all.len().saturating_sub(lines)..] {
            println!("    {l}");
        }
    }
    println!("\n  $ kubectl get pods -A -o wide");
    print_indented(
        &rc.kubectl(&["get", "pods", "-A", "-o", "wide"])
            .unwrap_or_else(|e| e),
    );

    step("a new commit: source-controller publishes a new revision, the Stack follows");
    let second = fx
        .repo
        .commit(&[(&path, &program("hello again"))], "a new greeting")
        .expect("commit");
    fx.request_reconcile(&rc.cp).await;
    let artifact = fx.wait_revision(&rc.cp, &second).await;
    let s = wait_ready(
        &rc.cp,
        &name,
        &mut seen,
        artifact["revision"].as_str().unwrap_or(""),
    )
    .await;
    println!("  outputs:    {}", s["status"]["outputs"]);

    if std::env::var("DEMO_KEEP").is_ok_and(|v| v == "1") {
        step("left running: Ctrl-C to stop");
        let kubectl = rc.cp.tool("kubectl").expect("kubectl");
        println!("  export KUBECONFIG={}", rc.cp.kubeconfig().display());
        println!(
            "  export PATH={}:$PATH",
            kubectl.parent().expect("dir").display()
        );
        println!("  kubectl get stacks,workspaces,updates");
        println!("  kubectl get pods -A -o wide");
        println!("  kubectl logs {pod} -c fetch");
        println!("  kubectl exec {pod} -c pulumi -- sh -c 'pulumi version'");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(fx);
    drop(rc);
}

fn print_indented(text: &str) {
    for l in text.lines() {
        println!("    {l}");
    }
}
