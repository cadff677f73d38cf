//! `config/`: every manifest parses, kustomizations point at real files, the samples validate
//! strictly against the generated CRDs, the NetworkPolicies select what the operator labels,
//! and RBAC grants exactly the calls the operator makes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use e2e::schema_check::validate;

mod support;
use operator::api::names::{flux, label, operator as op, pod};
use operator::rbac::Scope;
use serde_json::Value;
use support::rbac;

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // The Helm chart's templates are not manifests until rendered (tests/tests/helm_chart.rs).
        if path.is_dir() && !path.ends_with("helm") {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every YAML document in a file, as JSON values.
fn docs(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn docs_under(rel: &str) -> Vec<Value> {
    yaml_files(&config().join(rel))
        .iter()
        .flat_map(|p| docs(p))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let files = yaml_files(&config());
    assert!(files.len() > 15, "{files:?}");
    for f in files {
        for d in docs(&f) {
            assert!(
                d["apiVersion"].is_string() && d["kind"].is_string(),
                "{}: a document without apiVersion/kind",
                f.display()
            );
        }
    }
}

#[test]
fn kustomizations_only_reference_files_that_exist() {
    for f in yaml_files(&config()) {
        if f.file_name().unwrap() != "kustomization.yaml" {
            continue;
        }
        let dir = f.parent().unwrap();
        for d in docs(&f) {
            for r in d["resources"].as_array().into_iter().flatten() {
                let target = dir.join(r.as_str().unwrap());
                assert!(
                    target.exists(),
                    "{}: {} is missing",
                    f.display(),
                    target.display()
                );
                if target.is_dir() {
                    assert!(
                        target.join("kustomization.yaml").exists(),
                        "{}",
                        target.display()
                    );
                }
            }
        }
    }
}

/// The generated schema for a kind and version.
fn crd_schema(api_version: &str, kind: &str) -> Option<Value> {
    let (group, version) = api_version.split_once('/')?;
    operator::api::crd::all().into_iter().find_map(|(_, c)| {
        (c.spec.group == group && c.spec.names.kind == kind).then_some(())?;
        let v = c.spec.versions.iter().find(|v| v.name == version)?;
        serde_json::to_value(v.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()
    })
}

/// Validates an object of one of our kinds; apiVersion, kind and metadata are the apiserver's
/// own and not in a CRD's schema.
fn strict_errors(obj: &Value) -> Vec<String> {
    let schema = crd_schema(
        obj["apiVersion"].as_str().unwrap(),
        obj["kind"].as_str().unwrap(),
    )
    .expect("one of our kinds");
    let mut body = obj.clone();
    for own in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(own);
    }
    validate(&schema, &body)
}

#[test]
fn every_sample_validates_strictly_against_the_generated_crds() {
    let samples = docs_under("samples");
    let mut ours = BTreeSet::new();
    for s in &samples {
        let (api, kind) = (
            s["apiVersion"].as_str().unwrap(),
            s["kind"].as_str().unwrap(),
        );
        if crd_schema(api, kind).is_none() {
            assert!(
                [
                    "GitRepository",
                    "ServiceAccount",
                    "ClusterRoleBinding",
                    "Kustomization"
                ]
                .contains(&kind),
                "unexpected kind {kind} in samples"
            );
            continue;
        }
        let errors = strict_errors(s);
        assert!(
            errors.is_empty(),
            "{kind} {}: {errors:#?}",
            s["metadata"]["name"]
        );
        ours.insert(kind.to_string());
    }
    assert_eq!(
        ours.into_iter().collect::<Vec<_>>(),
        ["Program", "Stack", "Update", "Workspace"]
    );
    let sources: Vec<&str> = samples
        .iter()
        .filter(|s| s["kind"] == "Stack")
        .filter_map(|s| {
            let spec = &s["spec"];
            ["fluxSource", "projectRepo", "programRef"]
                .into_iter()
                .find(|k| !spec[*k].is_null())
        })
        .collect();
    assert_eq!(sources, ["fluxSource", "projectRepo", "programRef"]);
}

#[test]
fn strict_validation_refuses_what_the_apiserver_would() {
    let samples = docs_under("samples");
    let stack = find(&samples, "Stack", "random-yaml");

    let mut unknown = stack.clone();
    unknown["spec"]["fluxSource"]["directory"] = "typo".into();
    assert_eq!(
        strict_errors(&unknown),
        [".spec.fluxSource.directory: unknown field"]
    );

    let mut missing = stack.clone();
    missing["spec"].as_object_mut().unwrap().remove("stack");
    assert!(strict_errors(&missing)[0].contains("required field \"stack\""));

    let mut bad_type = find(&samples, "Update", "raw-workspace-up").clone();
    bad_type["spec"]["type"] = "upp".into();
    assert!(strict_errors(&bad_type)[0].contains("is not one of"));

    let mut log_level = stack.clone();
    log_level["spec"]["pulumiLogLevel"] = "verbose".into();
    assert!(strict_errors(&log_level)[0].contains("expected integer"));
}

fn match_labels(selector: &Value) -> Vec<(String, String)> {
    selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn workspace_pod_labels() -> Vec<(String, String)> {
    vec![(
        label::AUTO_COMPONENT.to_string(),
        label::COMPONENT_WORKSPACE.to_string(),
    )]
}

#[test]
fn the_flux_policies_admit_workspace_pods_to_source_controller_artifacts() {
    let policies = docs_under("flux/all-namespaces");
    let p = find(
        &policies,
        "NetworkPolicy",
        "allow-pulumi-fetch-flux-artifacts",
    );
    assert_eq!(p["metadata"]["namespace"], flux::NAMESPACE);
    let (k, v) = flux::SOURCE_CONTROLLER_LABEL;
    assert_eq!(
        match_labels(&p["spec"]["podSelector"]),
        [(k.to_string(), v.to_string())]
    );
    let rule = &p["spec"]["ingress"][0];
    assert_eq!(rule["from"].as_array().unwrap().len(), 1);
    assert_eq!(
        match_labels(&rule["from"][0]["podSelector"]),
        workspace_pod_labels()
    );
    assert_eq!(rule["from"][0]["namespaceSelector"], serde_json::json!({}));
    assert_eq!(
        rule["ports"],
        serde_json::json!([{"protocol": "TCP", "port": flux::ARTIFACT_PORT_NAME}])
    );

    let overlay = docs(&config().join("flux/selected-namespaces/kustomization.yaml"));
    let patch = overlay[0]["patches"][0]["patch"].as_str().unwrap();
    assert!(patch.contains("/spec/ingress/0/from/0/namespaceSelector"));
    assert!(patch.contains("kubernetes.io/metadata.name"));
}

#[test]
fn the_workspace_rpc_policy_admits_only_the_operator_on_the_grpc_port() {
    let policies = docs_under("flux/workspace-rpc");
    let p = find(&policies, "NetworkPolicy", "allow-workspace-rpc");
    assert_eq!(
        match_labels(&p["spec"]["podSelector"]),
        workspace_pod_labels()
    );
    let ingress = p["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "one rule: the operator");
    let from = &ingress[0]["from"];
    assert_eq!(from.as_array().unwrap().len(), 1);
    let (k, v) = op::POD_LABEL;
    assert_eq!(
        match_labels(&from[0]["podSelector"]),
        [(k.to_string(), v.to_string())]
    );
    assert_eq!(
        match_labels(&from[0]["namespaceSelector"]),
        [(
            "kubernetes.io/metadata.name".to_string(),
            op::NAMESPACE.to_string()
        )]
    );
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": pod::GRPC_PORT}])
    );
}

#[test]
fn rbac_grants_exactly_the_calls_the_operator_makes() {
    let rbac = docs_under("rbac");
    let mut granted = rbac::grants(
        find(
            &rbac,
            "ClusterRole",
            "pulumi-kubernetes-operator-controller-manager",
        ),
        Scope::Cluster,
    );
    let ns_role = find(&rbac, "Role", "pulumi-kubernetes-operator");
    assert_eq!(ns_role["metadata"]["namespace"], op::NAMESPACE);
    granted.extend(rbac::grants(ns_role, Scope::OperatorNamespace));

    rbac::assert_exact(&granted, &rbac::needed(op::SERVICE_ACCOUNT), "config/rbac");

    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let b = find(&rbac, binding, "pulumi-kubernetes-operator");
        assert_eq!(b["subjects"][0]["name"], op::SERVICE_ACCOUNT);
        assert_eq!(b["subjects"][0]["namespace"], op::NAMESPACE);
    }
}

#[test]
fn the_namespaced_variant_grants_the_operator_roles_only() {
    let namespaced = docs_under("namespaced");
    let role = find(
        &namespaced,
        "Role",
        "pulumi-kubernetes-operator-controller-manager",
    );
    assert_eq!(role["metadata"]["namespace"], "stacks");
    rbac::assert_exact(
        &rbac::grants(role, Scope::Cluster),
        &rbac::in_a_namespace(&rbac::needed(op::SERVICE_ACCOUNT)),
        "config/namespaced",
    );
    let binding = find(&namespaced, "RoleBinding", "pulumi-kubernetes-operator");
    assert_eq!(binding["metadata"]["namespace"], "stacks");
    assert_eq!(binding["subjects"][0]["name"], op::SERVICE_ACCOUNT);
    assert_eq!(binding["subjects"][0]["namespace"], op::NAMESPACE);

    // What it deletes from config/default is the operator's cluster-wide grant.
    let kustomization = docs(&config().join("namespaced/kustomization.yaml"));
    let rbac_docs = docs_under("rbac");
    let mut deleted = Vec::new();
    for p in kustomization[0]["patches"].as_array().expect("patches") {
        let text = p["patch"].as_str().expect("patch");
        if text.contains("$patch: delete") {
            let d: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
            let d = serde_json::to_value(d).expect("JSON");
            let (kind, name) = (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            );
            find(&rbac_docs, kind, name);
            deleted.push(format!("{kind}/{name}"));
        } else {
            assert!(text.contains("--watch-namespace=stacks"), "{text}");
            assert!(text.contains("--metrics-secure=false"), "{text}");
        }
    }
    assert!(
        deleted.contains(&"ClusterRole/pulumi-kubernetes-operator-controller-manager".to_string())
            && deleted.contains(&"ClusterRoleBinding/pulumi-kubernetes-operator".to_string()),
        "{deleted:?}"
    );
}

#[test]
fn the_manager_runs_non_root_read_only_with_probes_and_the_images_agree() {
    let manager = docs_under("manager");
    let d = find(&manager, "Deployment", "controller-manager");
    let pod_spec = &d["spec"]["template"]["spec"];
    assert_eq!(pod_spec["serviceAccountName"], op::SERVICE_ACCOUNT);
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod_spec["securityContext"]["runAsUser"], 65532);
    let (k, v) = op::POD_LABEL;
    assert_eq!(d["spec"]["template"]["metadata"]["labels"][k], v);
    let c = &pod_spec["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["livenessProbe"].is_object() && c["readinessProbe"].is_object());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {name}"))
            .to_string()
    };
    let kustomization = docs(&config().join("manager/kustomization.yaml"));
    let image = &kustomization[0]["images"][0];
    assert_eq!(image["name"], c["image"]);
    assert_eq!(
        env("AGENT_IMAGE"),
        format!(
            "{}:{}",
            image["newName"].as_str().unwrap(),
            image["newTag"].as_str().unwrap()
        ),
        "workspace pods run the agent from the operator's own image"
    );
    assert!(env("FETCH_IMAGE").contains("fetch"));

    let svc = find(&manager, "Service", "pulumi-kubernetes-operator");
    let port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == op::FILESERVER_PORT_NAME)
        .expect("the Program artifact port");
    assert_eq!(port["targetPort"], op::FILESERVER_PORT_NAME);
    let container_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == op::FILESERVER_PORT_NAME)
        .unwrap();
    assert_eq!(container_port["containerPort"], op::FILESERVER_PORT);
}

#[test]
fn the_samples_round_trip_through_the_rust_types() {
    use operator::api::{program::Program, stack::Stack, update::Update, workspace::Workspace};
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
        let typed: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(&back["spec"], &doc["spec"], "{}", doc["metadata"]["name"]);
        assert_eq!(&back["program"], &doc["program"]);
    }
    for doc in docs_under("samples") {
        match doc["kind"].as_str().unwrap() {
            "Stack" => round_trip::<Stack>(&doc),
            "Workspace" => round_trip::<Workspace>(&doc),
            "Update" => round_trip::<Update>(&doc),
            "Program" => round_trip::<Program>(&doc),
            _ => {}
        }
    }
}
