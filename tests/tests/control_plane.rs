//! Proof that the harness is real: our CRDs and samples on a real apiserver, a real
//! source-controller making artifacts from the harness's git server, and a workspace-shaped pod
//! on a real node whose init container is our `fetch` image.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::ControlPlane;
use e2e::control_plane::{repo_root, yaml_files};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::Api;

use support::real_node;
use support::{FluxFixture, events_for, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_and_every_sample_applies_strictly() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let mut ours = cp.install_project_crds().await.expect("our CRDs install");
    ours.sort();
    assert_eq!(
        ours.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "programs.pulumi.com",
            "stacks.pulumi.com",
            "updates.auto.pulumi.com",
            "workspaces.auto.pulumi.com"
        ],
        "config/crd/bases changed: update this list"
    );
    let flux = cp.install_flux_crds().await.expect("Flux CRDs install");
    assert!(
        flux.iter()
            .any(|n| n == "gitrepositories.source.toolkit.fluxcd.io"),
        "{flux:?}"
    );

    let samples = yaml_files(&repo_root().join("config/samples")).expect("samples listed");
    assert!(samples.len() >= 5, "{samples:?}");
    let mut kinds = BTreeMap::new();
    for file in &samples {
        let text = std::fs::read_to_string(file).expect("sample readable");
        let applied = cp
            .apply_yaml(&text, &file.display().to_string(), "default")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} must apply with strict validation: {e:?}",
                    file.display()
                )
            });
        for obj in applied {
            let kind = obj.types.map(|t| t.kind).unwrap_or_default();
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    for kind in [
        "Stack",
        "Program",
        "Workspace",
        "Update",
        "GitRepository",
        "ServiceAccount",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no sample applied a {kind}: {kinds:?}"
        );
    }

    // Strict validation is real: an unknown field in a Stack is refused, with its name.
    let bad = "apiVersion: pulumi.com/v1\nkind: Stack\nmetadata: {name: bad}\n\
               spec: {stack: dev/bad, projectRepo: https://example.com/r.git, branch: main, nosuchField: 1}\n";
    let err = cp
        .apply_yaml(bad, "inline", "default")
        .await
        .expect_err("an unknown field must be refused");
    let text = format!("{err:?}");
    assert!(text.contains("nosuchField"), "{text}");

    // And the CEL rule on the stack name is enforced by the apiserver.
    let long = format!(
        "apiVersion: pulumi.com/v1\nkind: Stack\nmetadata: {{name: {}}}\nspec: {{stack: dev/x}}\n",
        "a".repeat(43)
    );
    let err = cp
        .apply_yaml(&long, "inline", "default")
        .await
        .expect_err("a 43-character Stack name must be refused");
    assert!(format!("{err:?}").contains("42"), "{err:?}");

    // A Stack nothing has reconciled reads observedGeneration 0 (kstatus: in progress), not
    // an empty status (kstatus: current).
    let fresh = cp
        .apply_yaml(
            "apiVersion: pulumi.com/v1\nkind: Stack\nmetadata: {name: fresh}\nspec: {stack: dev/x}\n",
            "inline",
            "default",
        )
        .await
        .expect("a Stack");
    let status = serde_json::to_value(&fresh[0]).expect("json")["status"].clone();
    assert_eq!(status, serde_json::json!({"observedGeneration": 0}));
    let read = support::get_json(&cp, &support::stacks(), "default", "fresh")
        .await
        .expect("the Stack");
    assert_eq!(read["status"]["observedGeneration"], 0, "{read:#}");
    assert_eq!(read["metadata"]["generation"], 1);

    // The additions explain themselves, from the served schema.
    let explained = cp
        .kubectl(&["explain", "stacks.spec.suspend"])
        .expect("kubectl explain");
    assert!(
        explained.contains("FIELD: suspend <boolean>") && explained.contains("Flux's suspend"),
        "{explained}"
    );

    two_field_managers_merge_a_workspace_template_as_kubernetes_merges_pods(&cp).await;
}

/// Server-side apply by two managers (a platform team's manifest, and Flux or a person adding
/// to it): their containers, env vars and volumes merge by name as in a Pod, where atomic
/// lists would let the second take the first's.
async fn two_field_managers_merge_a_workspace_template_as_kubernetes_merges_pods(
    cp: &ControlPlane,
) {
    use kube::api::{DynamicObject, Patch, PatchParams};
    let stacks: Api<DynamicObject> =
        Api::namespaced_with(cp.client(), "default", &support::stacks());
    let apply = |manager: &'static str, template: serde_json::Value| {
        let stacks = stacks.clone();
        async move {
            let doc = serde_json::json!({
                "apiVersion": "pulumi.com/v1", "kind": "Stack", "metadata": {"name": "ssa"},
                "spec": {"stack": "dev", "projectRepo": "https://example.com/r.git",
                         "workspaceTemplate": {"spec": template}},
            });
            stacks
                .patch("ssa", &PatchParams::apply(manager), &Patch::Apply(&doc))
                .await
                .unwrap_or_else(|e| panic!("{manager} applies: {e}"))
        }
    };
    apply(
        "platform",
        serde_json::json!({"env": [{"name": "TEAM", "value": "a"}],
            "podTemplate": {"spec": {
                "containers": [{"name": "pulumi", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 8080}]}],
                "volumes": [{"name": "cache", "emptyDir": {}}]}}}),
    )
    .await;
    let merged = apply(
        "flux",
        serde_json::json!({"env": [{"name": "REGION", "value": "eu"}],
            "podTemplate": {"spec": {
                "containers": [{"name": "pulumi", "env": [{"name": "B", "value": "2"}]},
                               {"name": "sidecar", "image": "busybox"}],
                "volumes": [{"name": "tmp", "emptyDir": {}}]}}}),
    )
    .await;
    let t = &merged.data["spec"]["workspaceTemplate"]["spec"];
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(String::from))
            .collect()
    };
    let containers = &t["podTemplate"]["spec"]["containers"];
    assert_eq!(names(containers), ["pulumi", "sidecar"], "{t:#}");
    assert_eq!(names(&containers[0]["env"]), ["A", "B"], "{t:#}");
    assert_eq!(
        containers[0]["ports"][0]["protocol"], "TCP",
        "a port's protocol is defaulted, as in a Pod: {t:#}"
    );
    assert_eq!(
        names(&t["podTemplate"]["spec"]["volumes"]),
        ["cache", "tmp"],
        "{t:#}"
    );
    assert_eq!(names(&t["env"]), ["TEAM", "REGION"], "{t:#}");
}

/// PKO's `Migrated`: a workspace StatefulSet whose fields an update cannot change differ from
/// ours (one PKO or an older release made) is deleted and created again, with a Warning event
/// on the Workspace, instead of failing every reconcile. No node: the pods never run here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_an_update_cannot_change_is_replaced_as_pko_does() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let kubeconfig = support::operator::install(&cp).await;
    let old = cp
        .apply_yaml(
            r#"{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "mig-workspace"},
                "spec": {"serviceName": "made-by-someone-else",
                         "selector": {"matchLabels": {"app": "old"}},
                         "template": {"metadata": {"labels": {"app": "old"}},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
            "inline",
            "default",
        )
        .await
        .expect("an old StatefulSet");
    let old_uid = old[0].uid().expect("uid");
    let _op = support::operator::start(&cp, &kubeconfig, &[]).await;
    cp.apply_yaml(
        &format!(
            "apiVersion: auto.pulumi.com/v1alpha1\nkind: Workspace\nmetadata: {{name: mig}}\n\
             spec: {{serviceAccountName: {}, image: pulumi/pulumi:latest, local: {{dir: /app}}}}\n",
            support::operator::WORKSPACE_SA
        ),
        "inline",
        "default",
    )
    .await
    .expect("Workspace");
    let sts: Api<StatefulSet> = Api::namespaced(cp.client(), "default");
    let new = wait_for(
        Duration::from_secs(60),
        "the StatefulSet made again with our fields",
        || {
            let sts = sts.clone();
            let old_uid = old_uid.clone();
            async move {
                let s = sts.get_opt("mig-workspace").await.ok()??;
                (s.uid().as_deref() != Some(old_uid.as_str())).then_some(s)
            }
        },
    )
    .await;
    let spec = new.spec.expect("spec");
    assert_eq!(spec.service_name.as_deref(), Some("mig-workspace"));
    let selector = spec.selector.match_labels.unwrap_or_default();
    assert!(!selector.contains_key("app"), "{selector:?}");
    let events = events_for(&cp, "default", "Workspace", "mig").await;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == "Migrated"
            && note == "Replaced the workspace statefulset"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_repository_gets_an_artifact_and_follows_new_commits() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let fx = FluxFixture::start(&cp, "gitrepo").await;
    let first = fx
        .repo
        .commit(&[("Pulumi.yaml", support::PROGRAM)], "first")
        .expect("commit");
    fx.apply_git_repository(&cp).await;
    let artifact = fx.wait_revision(&cp, &first).await;
    // Advertised where its artifact server listens (`--storage-adv-addr`).
    let served = fx
        .source_controller
        .as_ref()
        .expect("source-controller on the host")
        .storage_addr();
    assert!(
        artifact["url"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("http://{served}/")),
        "{artifact}"
    );
    assert!(
        artifact["digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{artifact}"
    );
    assert!(
        fx.git.requests() > 0,
        "source-controller fetched through the git server"
    );

    let second = fx
        .repo
        .commit(
            &[("Pulumi.yaml", &support::PROGRAM.replace("hello", "bonjour"))],
            "second",
        )
        .expect("commit");
    assert_ne!(first, second);
    fx.request_reconcile(&cp).await;
    let artifact2 = fx.wait_revision(&cp, &second).await;
    assert_ne!(artifact["digest"], artifact2["digest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_shaped_pod_fetches_the_artifact_and_reports_fetch_failures() {
    let mut rc = real_node::start().await;
    let fx = FluxFixture::start_on(&rc.cp, "podfetch", rc.network.gateway()).await;
    let cp = &rc.cp;
    let sha = fx
        .repo
        .commit(
            &[
                ("infra/Pulumi.yaml", support::PROGRAM),
                ("README.md", "top\n"),
            ],
            "program",
        )
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &sha).await;
    let url = artifact["url"].as_str().expect("url").to_string();
    let digest = artifact["digest"].as_str().expect("digest").to_string();

    // The main container is the Pulumi image's shell (busybox, UID 1000).
    let (fetch_image, shell_image) = (rc.images.fetch.clone(), rc.images.pulumi.clone());
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(cp.client(), "default");

    let good = support::workspace_pod_with(
        "fetch-ok",
        &url,
        &digest,
        "infra",
        &fetch_image,
        &shell_image,
    );
    pods.create(&Default::default(), &good)
        .await
        .expect("pod created");
    let pod = wait_for(Duration::from_secs(120), "pod fetch-ok to finish", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("fetch-ok").await.ok()?;
            let phase = p.status.as_ref()?.phase.clone()?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(p)
        }
    })
    .await;
    let status = pod.status.clone().expect("status");
    let logs = rc
        .kubectl(&["logs", "fetch-ok", "-c", "pulumi"])
        .unwrap_or_else(|e| e);
    let fetch_logs = rc
        .kubectl(&["logs", "fetch-ok", "-c", "fetch"])
        .unwrap_or_else(|e| e);
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "status: {status:?}\nfetch: {fetch_logs}\npulumi: {logs}"
    );
    assert!(
        status
            .pod_ip
            .as_deref()
            .unwrap_or("")
            .starts_with(rc.node.pod_subnet().trim_end_matches("0/24")),
        "a pod IP of the node's subnet: {status:?}"
    );
    let init = &status
        .init_container_statuses
        .as_ref()
        .expect("init statuses")[0];
    let term = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(term.exit_code, 0);
    // The main container ran as uid 1000 and saw the program, not the repository root.
    assert!(logs.contains("uid=1000"), "{logs}");
    assert!(logs.contains("name: e2e-program"), "{logs}");
    assert!(
        !logs.contains("README.md"),
        "--dir selects the subdirectory: {logs}"
    );

    let wrong = format!("sha256:{}", "0".repeat(64));
    let bad = support::workspace_pod_with(
        "fetch-bad-digest",
        &url,
        &wrong,
        "infra",
        &fetch_image,
        &shell_image,
    );
    pods.create(&Default::default(), &bad)
        .await
        .expect("pod created");
    let pod = wait_for(
        Duration::from_secs(120),
        "pod fetch-bad-digest to fail",
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get("fetch-bad-digest").await.ok()?;
                (p.status.as_ref()?.phase.as_deref()? == "Failed").then_some(p)
            }
        },
    )
    .await;
    let status = pod.status.expect("status");
    let init = &status.init_container_statuses.expect("init statuses")[0];
    let term = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("fetch terminated");
    assert_eq!(
        term.exit_code, 5,
        "fetch's verification exit code: {term:?}"
    );
    let message = term.message.unwrap_or_default();
    assert!(
        message.contains("digest"),
        "termination message from fetch: {message}"
    );
    assert!(
        message.contains(&wrong[7..19]),
        "names the expected digest: {message}"
    );
    let main = &status.container_statuses.expect("statuses")[0];
    assert!(
        main.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_none(),
        "the main container never ran: {main:?}"
    );

    // Deleting a pod kills its processes and the kubelet finishes the delete.
    let sleeper = support::sleeper_pod_with("sleeper", &shell_image);
    pods.create(&Default::default(), &sleeper)
        .await
        .expect("pod created");
    let container = wait_for(Duration::from_secs(60), "sleeper running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("sleeper").await.ok()?;
            let status = p.status?;
            (status.phase.as_deref()? == "Running").then_some(())?;
            status.container_statuses?.first()?.container_id.clone()
        }
    })
    .await;
    // The sleeper's own process, as containerd knows it (other nodes on this machine run
    // containers too: a command-line search would see theirs).
    let pid = rc
        .node
        .task_pid(&container)
        .expect("ctr tasks ls")
        .expect("the sleeper's task");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} of the running sleeper"
    );
    pods.delete("sleeper", &Default::default())
        .await
        .expect("delete");
    wait_for(Duration::from_secs(60), "sleeper gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("sleeper").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the sleeper's process ({pid}) must be gone after the delete"
    );
    drop(fx);
    rc.node.stop();
}

/// A Stack whose repository needs a GitHub App: the operator asks GitHub's API (a stand-in that
/// checks what GitHub checks) for an installation token with the App's key from a Secret, picks
/// the commit with it, and hands `fetch` the Secret's keys and the same `GITHUB_API_URL`; a key
/// that is not the App's stalls the Stack with GitHub's answer, and no key in sight. No node:
/// the operator's side is what is checked here (`fetch`'s side: fetch/tests/git_github_app.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_resolves_a_github_app_stack_with_an_installation_token() {
    use e2e::github::{APP_ID, AppFixture, INSTALLATION, TOKEN};
    use serde_json::json;
    use support::{condition, get_json, stacks, workspaces};

    let AppFixture {
        pem,
        other_pem,
        github,
        git,
        sha,
        ..
    } = AppFixture::start(&[("Pulumi.yaml", support::PROGRAM)]);

    let cp = ControlPlane::start().await.expect("control plane starts");
    let kubeconfig = support::operator::install(&cp).await;
    let ca = github.ca_path().display().to_string();
    let api = github.url();
    let op = support::operator::start(
        &cp,
        &kubeconfig,
        &[("GITHUB_API_URL", &api), ("SSL_CERT_FILE", &ca)],
    )
    .await;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"},
        "stringData": {"appID": APP_ID, "installationID": INSTALLATION,
                       "privateKey": pem, "notTheAppsKey": other_pem},
    });
    cp.apply_yaml(&secret.to_string(), "secret", "default")
        .await
        .expect("secret");
    let from = |key: &str| json!({"type": "Secret", "secret": {"name": "app", "key": key}});
    for (name, key) in [("gh", "privateKey"), ("gh-wrong", "notTheAppsKey")] {
        let stack = json!({
            "apiVersion": "pulumi.com/v1", "kind": "Stack", "metadata": {"name": name},
            "spec": {"stack": "dev", "projectRepo": git.url("app-repo"), "branch": "main",
                     "gitAuth": {"githubApp": {"appID": from("appID"),
                                               "installationID": from("installationID"),
                                               "privateKey": from(key)}}},
        });
        cp.apply_yaml(&stack.to_string(), name, "default")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    let ws = wait_for(
        Duration::from_secs(60),
        "a Workspace at the commit the token let the operator see",
        || async {
            get_json(&cp, &workspaces(), "default", "gh")
                .await
                .filter(|w| w["spec"]["git"]["ref"] == sha.as_str())
        },
    )
    .await;
    assert_eq!(
        ws["spec"]["git"]["auth"]["githubApp"]["privateKey"],
        json!({"name": "app", "key": "privateKey"}),
        "{ws:#}"
    );
    assert!(github.accepted() >= 1, "the operator asked for a token");
    let sts: Api<StatefulSet> = Api::namespaced(cp.client(), "default");
    let set = wait_for(Duration::from_secs(60), "the workspace StatefulSet", || {
        let sts = sts.clone();
        async move { sts.get_opt("gh-workspace").await.ok()? }
    })
    .await;
    let fetch = set
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.init_containers)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "fetch")
        .expect("the fetch container");
    let env = serde_json::to_value(fetch.env.unwrap_or_default()).expect("env");
    let var = |n: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {env:#}"))
    };
    assert_eq!(var("GITHUB_API_URL")["value"], api.as_str());
    assert_eq!(
        var("GIT_GITHUB_APP_PRIVATE_KEY")["valueFrom"]["secretKeyRef"],
        json!({"name": "app", "key": "privateKey"})
    );

    let stalled = wait_for(
        Duration::from_secs(60),
        "the Stack with the wrong key stalled",
        || async {
            let s = get_json(&cp, &stacks(), "default", "gh-wrong").await?;
            condition(&s, "Stalled").filter(|c| c["status"] == "True")
        },
    )
    .await;
    let message = stalled["message"].as_str().unwrap_or_default();
    assert_eq!(stalled["reason"], "SourceUnavailable", "{stalled:#}");
    assert!(
        message.contains("could not be decoded") && message.contains("GitHub App"),
        "{stalled:#}"
    );
    assert!(github.rejected() >= 1);
    assert!(
        get_json(&cp, &workspaces(), "default", "gh-wrong")
            .await
            .is_none(),
        "no Workspace without a commit"
    );
    let log = op.log();
    for secret in [pem.as_str(), other_pem.as_str(), TOKEN] {
        let line = secret.lines().nth(1).unwrap_or(secret);
        assert!(!log.contains(line), "a credential in the operator's log");
        assert!(!message.contains(line), "a credential in the condition");
    }
}
