//! Drift detection (issue 21), on a real node with the real CLI and the real Pulumi Kubernetes
//! provider: a Stack's program manages a ConfigMap in the test cluster; someone changes it
//! behind Pulumi's back; the next check (a preview-only refresh, run as an Update) reports
//! exactly that resource and path, not an ignored path, writes nothing, and says so once;
//! `remediate` puts the ConfigMap back.
//!
//! The provider (`pulumi-resource-kubernetes`, built by tests/tools/build.sh from its Go
//! module) is an installed plugin in the workspace image `pulumi-kubernetes`
//! (`e2e::images::pulumi_kubernetes_image`), and the programs pin its version, so `pulumi
//! install` finds it and nothing is downloaded; in the pod it talks to the API server as the
//! workspace's service account (in-cluster configuration), which a Role lets manage
//! ConfigMaps.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::FluxFixture;
use support::operator::{WORKSPACE_SA, flux_ref, shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};

/// The program: one ConfigMap, as PKO's Kubernetes examples manage their objects.
fn program(version: &str) -> String {
    format!(
        r#"name: drift
runtime: yaml
resources:
  settings:
    type: kubernetes:core/v1:ConfigMap
    properties:
      metadata:
        name: settings
        namespace: default
      data:
        color: blue
        size: small
    options:
      version: {version}
outputs:
  name: ${{settings.metadata.name}}
"#
    )
}

/// Lets the workspace's account manage ConfigMaps in `default`, as a user grants a Stack what
/// its program manages.
const CONFIGMAP_ROLE: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pulumi-configmaps, namespace: default}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
"#;

fn role_binding() -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: pulumi-configmaps, namespace: default}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pulumi-configmaps}}\n\
         subjects: [{{kind: ServiceAccount, name: {WORKSPACE_SA}, namespace: default}}]\n"
    )
}

/// Asks for a check now (the request annotation) and waits until its result is in.
async fn check_now(rc: &RealCluster, request: &str) -> Value {
    rc.kubectl(&[
        "annotate",
        "stack",
        "drift",
        "-n",
        "default",
        &format!("pulumi.com/drift-check-request={request}"),
        "--overwrite",
    ])
    .expect("request a drift check");
    real_node::wait_stack(
        rc,
        "drift",
        Duration::from_secs(180),
        &format!("drift check {request} handled"),
        |s| {
            s["status"]["drift"]["lastHandledRequest"] == request
                && s["status"]["currentUpdate"].is_null()
        },
    )
    .await
}

fn drifted(s: &Value) -> (String, String) {
    let c = support::condition(s, "Drifted").unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    )
}

async fn drift_events(rc: &RealCluster) -> Vec<(String, String, String)> {
    support::events_for(&rc.cp, "default", "Stack", "drift")
        .await
        .into_iter()
        .filter(|(_, r, _)| r.starts_with("Drift"))
        .collect()
}

fn configmap(rc: &RealCluster) -> Value {
    let out = rc
        .kubectl(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .expect("the ConfigMap");
    serde_json::from_str(&out).expect("json")
}

/// The ConfigMap's `data.color` in the stack's state, from the file backend's own file.
fn color_in_state(state: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(state.join(".pulumi/stacks/drift/drift.json"))
        .expect("the stack's state file");
    let v: Value = serde_json::from_str(&text).expect("state JSON");
    v["checkpoint"]["latest"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "kubernetes:core/v1:ConfigMap")
        .map(|r| r["outputs"]["data"]["color"].clone())
        .collect()
}

const URN: &str = "urn:pulumi:drift::drift::kubernetes:core/v1:ConfigMap::settings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_finds_drift_reports_it_once_leaves_ignored_paths_out_and_remediates() {
    let rc = real_node::start_installed().await;
    let image = rc
        .pulumi_kubernetes_image()
        .unwrap_or_else(|e| panic!("the pulumi-kubernetes image: {e}"));
    let version = e2e::tools::pulumi_kubernetes_version().expect("provider version");
    let prog = program(&version);
    let (_fx, _) = FluxFixture::serving(
        &rc.cp,
        "drift",
        rc.network.gateway(),
        &[("app/Pulumi.yaml", prog.as_str())],
    )
    .await;
    for (doc, what) in [
        (CONFIGMAP_ROLE.to_string(), "role"),
        (role_binding(), "binding"),
    ] {
        rc.cp
            .apply_yaml(&doc, what, "default")
            .await
            .expect("workspace RBAC");
    }
    let state = shared_state();
    let mut spec = flux_ref("drift", "app");
    spec["driftDetection"] = json!({
        "interval": "1h",
        "mode": "warn",
        "ignore": [{"type": "kubernetes:core/v1:*", "paths": ["data.size"]}],
    });
    rc.cp
        .apply_yaml(
            &stack_yaml_with("drift", (image.as_str(), state.path()), spec),
            "stack",
            "default",
        )
        .await
        .expect("Stack");
    let s = real_node::wait_ready_after_success(&rc, "drift").await;
    assert_eq!(s["status"]["outputs"], json!({"name": "settings"}), "{s:#}");
    assert_eq!(
        configmap(&rc)["data"],
        json!({"color": "blue", "size": "small"})
    );

    // The first check runs once the program is deployed, and finds nothing; the Stack stays
    // Ready through it.
    let s = real_node::wait_stack(
        &rc,
        "drift",
        Duration::from_secs(120),
        "the first drift check",
        |s| {
            !s["status"]["drift"]["lastCheckTime"].is_null()
                && s["status"]["currentUpdate"].is_null()
        },
    )
    .await;
    assert_eq!(
        drifted(&s),
        ("False".into(), "NoDrift".into()),
        "{:#}",
        s["status"]
    );
    assert_eq!(
        support::condition(&s, "Ready").map(|c| c["status"].clone()),
        Some(json!("True"))
    );
    let first = s["status"]["drift"]["update"]
        .as_str()
        .expect("the check's Update")
        .to_string();
    let u = support::get_json(&rc.cp, &support::updates(), "default", &first)
        .await
        .expect("the check's Update");
    assert_eq!(
        (
            u["spec"]["type"].as_str(),
            u["spec"]["previewOnly"].as_bool()
        ),
        (Some("refresh"), Some(true)),
        "{u:#}"
    );
    assert!(drift_events(&rc).await.is_empty(), "no news, no event");

    // Someone edits the ConfigMap: a managed field, a field the Stack ignores, and an
    // annotation of another controller's (which the provider does not read back).
    rc.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "default",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"color":"red","size":"large"},"metadata":{"annotations":{"other.example.com/owner":"x"}}}"#,
    ])
    .expect("edit the ConfigMap");
    let s = check_now(&rc, "one").await;
    let st = &s["status"];
    assert_eq!(
        drifted(&s),
        ("True".into(), "DriftDetected".into()),
        "{st:#}"
    );
    assert_eq!(
        st["drift"]["resources"],
        json!([{"urn": URN, "type": "kubernetes:core/v1:ConfigMap", "operation": "update", "paths": ["data.color"]}]),
        "{st:#}"
    );
    assert_eq!(st["drift"]["ignored"], 1, "data.size: {st:#}");
    assert!(
        !st.to_string().contains(r#""red""#) && !st.to_string().contains(r#""large""#),
        "no value is shown: {st:#}"
    );
    assert_eq!(
        support::condition(&s, "Ready").map(|c| c["status"].clone()),
        Some(json!("True")),
        "drift does not make the Stack un-Ready"
    );
    let events = drift_events(&rc).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (kind, _, note) = &events[0];
    assert_eq!(kind, "Warning", "warn mode");
    assert!(
        note.contains("ConfigMap::settings (update: data.color)")
            && !note.contains("data.size")
            && note.contains("mode: remediate"),
        "{note}"
    );
    // The check wrote nothing: the state still holds what the program applied.
    assert_eq!(color_in_state(state.path()), [json!("blue")]);
    assert_eq!(configmap(&rc)["data"]["color"], "red");
    let table = rc
        .kubectl(&["get", "stack", "drift", "-n", "default"])
        .expect("kubectl get");
    assert!(table.contains("DRIFTED"), "{table}");
    // The gauges are refreshed from the cache every 5 s.
    let gauge = r#"stacks_drifted{namespace="default",name="drift"} 1"#;
    support::wait_for(Duration::from_secs(30), gauge, || async {
        real_node::operator_metrics(&rc)
            .await
            .contains(gauge)
            .then_some(())
    })
    .await;

    // The same finding again: no second event.
    let s = check_now(&rc, "two").await;
    assert_eq!(drifted(&s).1, "DriftDetected");
    assert_eq!(
        drift_events(&rc).await.len(),
        1,
        "{:?}",
        drift_events(&rc).await
    );

    // Remediate: an up with refresh puts the ConfigMap back as the program declares it.
    let stacks: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(rc.cp.client(), "default", &support::stacks());
    stacks
        .patch(
            "drift",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"driftDetection": {"mode": "remediate"}}})),
        )
        .await
        .expect("patch the mode");
    let s = real_node::wait_stack(
        &rc,
        "drift",
        Duration::from_secs(240),
        "the remediation",
        |s| drifted(s).1 == "DriftRemediated" && s["status"]["currentUpdate"].is_null(),
    )
    .await;
    let remediation = s["status"]["drift"]["remediation"]
        .as_str()
        .expect("the remediation's name")
        .to_string();
    let u = support::get_json(&rc.cp, &support::updates(), "default", &remediation)
        .await
        .expect("the remediation Update");
    assert_eq!(
        (u["spec"]["type"].as_str(), u["spec"]["refresh"].as_bool()),
        (Some("up"), Some(true)),
        "{u:#}"
    );
    assert_eq!(
        configmap(&rc)["data"],
        json!({"color": "blue", "size": "small"})
    );
    assert_eq!(color_in_state(state.path()), [json!("blue")]);
    let reasons: Vec<String> = drift_events(&rc)
        .await
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(
        reasons,
        ["DriftDetected", "DriftRemediated"],
        "the remediation was announced"
    );

    // And the next check finds nothing.
    let s = check_now(&rc, "three").await;
    assert_eq!(
        drifted(&s),
        ("False".into(), "NoDrift".into()),
        "{:#}",
        s["status"]
    );
}
