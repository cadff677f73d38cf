//! The CRDs: generated from the types, committed, PKO-compatible, and explained field by field.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use operator::api::crd;

fn crd_named(name: &str) -> CustomResourceDefinition {
    crd::all()
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

fn schema_of(c: &CustomResourceDefinition, version: &str) -> JSONSchemaProps {
    c.spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.clone())
        .unwrap_or_else(|| panic!("no schema for {version}"))
}

fn at<'a>(s: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    path.iter().fold(s, |s, p| {
        s.properties
            .as_ref()
            .and_then(|m| m.get(*p))
            .unwrap_or_else(|| panic!("no property {p} in {path:?}"))
    })
}

#[test]
fn the_committed_crds_are_what_the_types_generate() {
    for dir in crd::COMMITTED_DIRS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        for (file, c) in crd::all() {
            let committed = std::fs::read_to_string(path.join(file)).unwrap_or_default();
            assert!(
                committed == crd::to_yaml(&c),
                "{dir}/{file} is out of date with the API types; regenerate it with \
                 `cargo run -p operator --bin crdgen` and commit the result"
            );
        }
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut expected: Vec<String> = crd::all().iter().map(|(f, _)| f.to_string()).collect();
        expected.sort();
        assert_eq!(files, expected, "{dir} holds exactly the generated CRDs");
    }
}

#[test]
fn every_kind_is_namespaced_in_category_pulumi_with_a_status_subresource_and_no_short_names() {
    for (_, c) in crd::all() {
        let name = c.metadata.name.clone().unwrap();
        assert_eq!(c.spec.scope, "Namespaced", "{name}");
        assert_eq!(
            c.spec.names.categories,
            Some(vec!["pulumi".to_string()]),
            "{name}"
        );
        assert_eq!(c.spec.names.short_names, None, "{name}");
        for v in &c.spec.versions {
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name} {}",
                v.name
            );
        }
    }
}

#[test]
fn stack_serves_v1_as_storage_and_v1alpha1_deprecated() {
    let c = crd_named("stacks.pulumi.com");
    let versions: Vec<_> = c
        .spec
        .versions
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.served,
                v.storage,
                v.deprecated.unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![("v1", true, true, false), ("v1alpha1", true, false, true)]
    );
    let columns: Vec<_> = c.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Stack",
            "Last Update",
            "Age",
            "Last Commit",
            "Ready",
            "Reconciling",
            "Stalled",
            // Ours: what the last drift check found (spec.driftDetection), and the plan
            // awaiting approval (spec.approval).
            "Drifted",
            "Awaiting Approval",
            "Permalink",
            "Suspended"
        ]
    );
    assert!(c.spec.versions[1].additional_printer_columns.is_none());
}

#[test]
fn stack_names_are_limited_to_42_characters_by_a_cel_rule() {
    let c = crd_named("stacks.pulumi.com");
    for v in ["v1", "v1alpha1"] {
        let rules = schema_of(&c, v)
            .x_kubernetes_validations
            .unwrap_or_default();
        assert!(
            rules
                .iter()
                .any(|r| r.rule == "size(self.metadata.name) <= 42"
                    && r.message.as_deref()
                        == Some("Stack name must be no more than 42 characters in length.")),
            "{v}: {rules:?}"
        );
    }
}

#[test]
fn stack_spec_matches_pko_with_pulumi_log_level_added() {
    let s = schema_of(&crd_named("stacks.pulumi.com"), "v1");
    let spec = at(&s, &["spec"]);
    assert_eq!(spec.required, Some(vec!["stack".to_string()]));
    for field in [
        "accessTokenSecret",
        "envs",
        "envSecrets",
        "envRefs",
        "secrets",
        "secretsRef",
        "secretsProvider",
        "projectRepo",
        "gitAuthSecret",
        "gitAuth",
        "repoDir",
        "commit",
        "branch",
        "shallow",
        "fluxSource",
        "programRef",
        "stack",
        "backend",
        "config",
        "configRef",
        "environment",
        "targets",
        "targetDependents",
        "prerequisites",
        "continueResyncOnCommitMatch",
        "refresh",
        "expectNoRefreshChanges",
        "destroyOnFinalize",
        "runProgram",
        "retryOnUpdateConflict",
        "useLocalStackOnly",
        "resyncFrequencySeconds",
        "retryMaxBackoffDurationSeconds",
        "preview",
        "serviceAccountName",
        "workspaceTemplate",
        "workspaceReclaimPolicy",
        "updateTemplate",
        "pulumiLogLevel",
        "pendingOperations",
    ] {
        at(spec, &[field]);
    }
    assert_eq!(
        at(spec, &["pulumiLogLevel"]).type_.as_deref(),
        Some("integer")
    );
    let config = at(spec, &["config"]);
    assert_eq!(
        (
            config.type_.as_deref(),
            config.x_kubernetes_preserve_unknown_fields
        ),
        (None, Some(true)),
        "config is free-form JSON, as in PKO (its shape is checked by the controller)"
    );
    let flux = at(spec, &["fluxSource", "sourceRef"]);
    let mut req = flux.required.clone().unwrap();
    req.sort();
    assert_eq!(req, ["apiVersion", "kind", "name"]);
    let status = at(&s, &["status"]);
    for field in [
        "outputs",
        "lastUpdate",
        "observedGeneration",
        "observedReconcileRequest",
        "conditions",
        "currentUpdate",
        "projectInfo",
    ] {
        at(status, &[field]);
    }
    let v1alpha1 = schema_of(&crd_named("stacks.pulumi.com"), "v1alpha1");
    let mut fields: Vec<_> = at(&v1alpha1, &["status"])
        .properties
        .as_ref()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, ["lastUpdate", "outputs"]);
}

#[test]
fn update_type_is_an_enum_and_workspace_defaults_match_pko() {
    let u = schema_of(&crd_named("updates.auto.pulumi.com"), "v1alpha1");
    let values: Vec<_> = at(&u, &["spec", "type"])
        .enum_
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|v| v.0.as_str().map(str::to_string))
        .collect();
    assert_eq!(values, ["preview", "up", "destroy", "refresh"]);

    let w = schema_of(&crd_named("workspaces.auto.pulumi.com"), "v1alpha1");
    let spec = at(&w, &["spec"]);
    assert_eq!(
        at(spec, &["serviceAccountName"])
            .default
            .as_ref()
            .map(|d| d.0.clone()),
        Some("default".into())
    );
    assert_eq!(
        at(spec, &["securityProfile"])
            .default
            .as_ref()
            .map(|d| d.0.clone()),
        Some("restricted".into())
    );
    let stacks = at(spec, &["stacks"]);
    assert_eq!(stacks.x_kubernetes_list_type.as_deref(), Some("map"));
    assert_eq!(
        stacks.x_kubernetes_list_map_keys,
        Some(vec!["name".to_string()])
    );
}

#[test]
fn program_has_a_program_field_not_a_spec() {
    let p = schema_of(&crd_named("programs.pulumi.com"), "v1");
    let top: Vec<_> = p.properties.as_ref().unwrap().keys().cloned().collect();
    assert!(
        top.contains(&"program".to_string()) && !top.contains(&"spec".to_string()),
        "{top:?}"
    );
    at(&p, &["program", "resources"]);
    at(&p, &["status", "artifact", "digest"]);
}

/// Walks every schema node: `path` is where it sits.
fn walk(s: &JSONSchemaProps, path: &str, f: &mut dyn FnMut(&str, &JSONSchemaProps)) {
    f(path, s);
    if let Some(props) = &s.properties {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), f);
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        walk(items, &format!("{path}[]"), f);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(a)) =
        &s.additional_properties
    {
        walk(a, &format!("{path}{{}}"), f);
    }
}

#[test]
fn every_field_is_described_so_kubectl_explain_teaches() {
    let mut missing = Vec::new();
    for (_, c) in crd::all() {
        for v in &c.spec.versions {
            let s = v
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            for (name, p) in s.properties.as_ref().unwrap() {
                if name == "metadata" || name == "apiVersion" || name == "kind" {
                    continue;
                }
                walk(
                    p,
                    &format!("{}/{}.{name}", c.spec.names.kind, v.name),
                    &mut |path, node| {
                        // Map values and list items inherit their parent's description.
                        let leaf = !path.ends_with("[]") && !path.ends_with('}');
                        if leaf && node.description.as_deref().unwrap_or("").is_empty() {
                            missing.push(path.to_string());
                        }
                    },
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a description:\n{}",
        missing.join("\n")
    );
}

#[test]
fn schemas_are_structural() {
    for (_, c) in crd::all() {
        for v in &c.spec.versions {
            let s = v
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            walk(s, &c.spec.names.kind, &mut |path, node| {
                let free = node.x_kubernetes_preserve_unknown_fields == Some(true)
                    || node.x_kubernetes_int_or_string == Some(true);
                assert!(node.type_.is_some() || free, "{path} has no type");
                assert!(node.ref_path.is_none(), "{path} uses $ref");
                for branch in [&node.any_of, &node.one_of, &node.all_of]
                    .into_iter()
                    .flatten()
                {
                    for b in branch {
                        assert!(
                            b.type_.is_none() || node.type_ == b.type_,
                            "{path}: typed branch"
                        );
                    }
                }
            });
        }
    }
}

/// PKO v2.9.0's CRD `file`, from its snapshot (the chart's `crds/`, tool `pko`).
fn pko_crd(file: &str) -> serde_json::Value {
    let dir = e2e::cluster::tool_dir("pko", "pulumi-kubernetes-agent").expect("PKO's snapshot");
    let path = dir.join("chart/crds").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_json::to_value(yaml).expect("JSON")
}

/// Reads `obj` as our type for its kind and version.
fn read_as_ours(kind: &str, version: &str, obj: serde_json::Value) -> Result<(), String> {
    use operator::api::{program::Program, stack, update::Update, workspace::Workspace};
    let r = match (kind, version) {
        ("Stack", "v1") => serde_json::from_value::<stack::Stack>(obj).map(drop),
        ("Stack", "v1alpha1") => serde_json::from_value::<stack::v1alpha1::Stack>(obj).map(drop),
        ("Program", _) => serde_json::from_value::<Program>(obj).map(drop),
        ("Workspace", _) => serde_json::from_value::<Workspace>(obj).map(drop),
        ("Update", _) => serde_json::from_value::<Update>(obj).map(drop),
        _ => panic!("no type for {kind} {version}"),
    };
    r.map_err(|e| e.to_string())
}

/// A problem without its list indices and sample values, so that one kind of problem is
/// reported once.
fn general(problem: &str) -> String {
    let mut out = String::new();
    let mut chars = problem.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.next().is_some_and(|d| d != ']') {}
                out.push_str("[]");
            }
            '`' | '"' => {
                // A quoted sample value.
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push_str("<value>");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Where ours stays stricter than PKO's, documented (README, "Installing the CRDs"): an
/// Update's `type` is one of the four operations (as its template's), since PKO runs no other
/// either; and the entries of `workspaceTemplate.spec.stacks` (and of their `config`) name
/// the stack (the key) they merge into, since they are merged by it.
fn kept_on_purpose(kind: &str, problem: &str) -> bool {
    match kind {
        "Update" => problem.starts_with(".spec.type:"),
        "Stack" => {
            problem.starts_with(".spec.updateTemplate.spec.type:")
                || (problem.starts_with(".spec.workspaceTemplate.spec.stacks[")
                    && (problem.ends_with("required field \"name\" is missing")
                        || problem.ends_with("required field \"key\" is missing")))
        }
        _ => false,
    }
}

/// One version of one kind, both ways: PKO's schema and ours.
struct Version {
    kind: String,
    group: String,
    name: String,
    pko: serde_json::Value,
    ours: serde_json::Value,
}

fn versions() -> Vec<Version> {
    let mut all = Vec::new();
    for (file, ours) in crd::all() {
        let pko = pko_crd(file);
        let kind = pko["spec"]["names"]["kind"].as_str().expect("kind");
        let group = pko["spec"]["group"].as_str().expect("group");
        for version in pko["spec"]["versions"].as_array().expect("versions") {
            let name = version["name"].as_str().expect("name");
            all.push(Version {
                kind: kind.to_string(),
                group: group.to_string(),
                name: name.to_string(),
                pko: version["schema"]["openAPIV3Schema"].clone(),
                ours: serde_json::to_value(schema_of(&ours, name)).expect("schema"),
            });
        }
    }
    all
}

/// Objects made at random from `schema` (400 per version), without what the apiserver checks
/// itself rather than by the schema (apiVersion, kind, metadata).
fn samples(schema: &serde_json::Value) -> impl Iterator<Item = serde_json::Value> + '_ {
    (0..400).map(move |seed| {
        let mut obj = e2e::schema_sample::Sampler::new(seed).value(schema);
        for key in ["apiVersion", "kind", "metadata"] {
            if let Some(o) = obj.as_object_mut() {
                o.remove(key);
            }
        }
        obj
    })
}

fn assert_none(problems: std::collections::BTreeSet<String>) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Whatever PKO's CRDs let users store (objects made at random from PKO's schemas, every
/// version, spec and status), our CRDs admit and our types read: a user switching keeps every
/// object, and the operator never meets one it cannot read (which would stop its watch).
/// Kept on purpose: the `Update.spec.type` enum (PKO runs nothing else either).
#[test]
fn whatever_pkos_crds_admit_ours_admit_and_our_types_read() {
    use e2e::schema_check::validate;
    let mut problems = std::collections::BTreeSet::new();
    for v in versions() {
        let (kind, name) = (&v.kind, &v.name);
        for mut obj in samples(&v.pko) {
            let theirs = validate(&v.pko, &obj);
            assert!(
                theirs.is_empty(),
                "the sampler broke PKO's schema: {theirs:?}\n{obj}"
            );
            for e in validate(&v.ours, &obj) {
                if !kept_on_purpose(kind, &e) {
                    problems.insert(format!("{kind} {name}: ours refuses: {}", general(&e)));
                }
            }
            obj["apiVersion"] = format!("{}/{name}", v.group).into();
            obj["kind"] = kind.clone().into();
            obj["metadata"] = serde_json::json!({"name": "s", "namespace": "default"});
            if let Err(e) = read_as_ours(kind, name, obj) {
                problems.insert(format!("{kind} {name}: cannot read: {}", general(&e)));
            }
        }
    }
    assert_none(problems);
}

/// Our fields PKO lacks (README, "Installing the CRDs"): the Stack's `pulumiLogLevel`,
/// Flux's `suspend` and `lastHandledReconcileAt` (with the request an update is for),
/// `outputsSecretRef`, `pendingOperations` (Stack, Update and updateTemplate), the Update's
/// `previewOnly`, `changes`, `savePlan` and `plan`, drift detection (`driftDetection`, `status.drift`, the
/// purpose of the update in flight), the approval gate (`approval`, `status.pendingPlan`,
/// `status.appliedPlan`), and pinned SSH host keys (`knownHosts`) wherever git
/// credentials are given.
fn our_addition(problem: &str) -> bool {
    problem.ends_with(": unknown field")
        && [
            ".spec.pulumiLogLevel:",
            ".spec.suspend:",
            ".spec.outputsSecretRef:",
            ".spec.pendingOperations:",
            ".spec.updateTemplate.spec.pendingOperations:",
            ".spec.previewOnly:",
            ".spec.savePlan:",
            ".spec.plan:",
            ".status.plan:",
            ".spec.updateTemplate.spec.savePlan:",
            ".spec.updateTemplate.spec.plan:",
            ".spec.updateTemplate.status.plan:",
            ".spec.driftDetection:",
            ".spec.approval:",
            ".status.pendingPlan:",
            ".status.appliedPlan:",
            ".status.drift:",
            ".status.currentUpdate.purpose:",
            ".spec.updateTemplate.spec.previewOnly:",
            ".status.changes:",
            ".status.changesOmitted:",
            ".spec.updateTemplate.status.changes:",
            ".spec.updateTemplate.status.changesOmitted:",
            ".status.lastHandledReconcileAt:",
            ".status.currentUpdate.reconcileRequestedAt:",
            ".spec.gitAuth.sshAuth.knownHosts:",
            ".spec.workspaceTemplate.spec.git.auth.knownHosts:",
            ".spec.git.auth.knownHosts:",
        ]
        .iter()
        .any(|f| problem.starts_with(f))
}

/// What PKO's CRDs would refuse of what ours admit (objects made at random from our schemas),
/// other than our documented additions: a manifest written against our CRDs still applies if a
/// user goes back, and the apiserver keeps out of our objects what PKO keeps out of its own.
#[test]
fn whatever_ours_admit_pkos_admit_but_our_additions() {
    use e2e::schema_check::validate;
    let mut problems = std::collections::BTreeSet::new();
    for v in versions() {
        for obj in samples(&v.ours) {
            let ours_say = validate(&v.ours, &obj);
            assert!(
                ours_say.is_empty(),
                "the sampler broke our schema: {ours_say:?}\n{obj}"
            );
            for e in validate(&v.pko, &obj) {
                if !our_addition(&e) {
                    problems.insert(format!(
                        "{} {}: PKO refuses: {}",
                        v.kind,
                        v.name,
                        general(&e)
                    ));
                }
            }
        }
    }
    assert_none(problems);
}
