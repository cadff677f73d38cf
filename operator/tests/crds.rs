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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd/bases");
    for (file, c) in crd::all() {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            committed == crd::to_yaml(&c),
            "config/crd/bases/{file} is out of date with the API types; regenerate it with \
             `cargo run -p operator --bin crdgen` and commit the result"
        );
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
            "Permalink"
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
    ] {
        at(spec, &[field]);
    }
    assert_eq!(
        at(spec, &["pulumiLogLevel"]).type_.as_deref(),
        Some("integer")
    );
    assert_eq!(
        at(spec, &["config"])
            .additional_properties
            .as_ref()
            .map(|_| ()),
        Some(()),
        "config values are free-form JSON"
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
