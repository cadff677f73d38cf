//! The CustomResourceDefinitions, as installed: every version of every kind, merged and
//! checked. `crdgen` writes them to `config/crd/bases`; a test fails when those files drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps, JSONSchemaPropsOrArray,
    JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use schemars::JsonSchema;

use super::program::Program;
use super::stack::{Stack, v1alpha1};
use super::update::Update;
use super::workspace::Workspace;

/// The structural schema of `T`, generated the way kube-derive does for derived kinds.
pub fn structural_schema<T: JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>());
    // The apiserver owns `metadata`: a CRD may say it is an object and nothing else; a
    // description or the `default` that `#[serde(default)]` brings is refused.
    if let Ok(root) = schema.as_mut()
        && let Some(meta) = root
            .pointer_mut("/properties/metadata")
            .and_then(|m| m.as_object_mut())
    {
        meta.retain(|k, _| k == "type");
    }
    schema.and_then(serde_json::from_value).unwrap_or_else(|e| {
        panic!(
            "schema of {} is not a JSONSchemaProps: {e}",
            T::schema_name()
        )
    })
}

fn program_crd() -> CustomResourceDefinition {
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some("programs.pulumi.com".into()),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: "pulumi.com".into(),
            names: CustomResourceDefinitionNames {
                categories: Some(vec!["pulumi".into()]),
                kind: "Program".into(),
                list_kind: Some("ProgramList".into()),
                plural: "programs".into(),
                singular: Some("program".into()),
                short_names: None,
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                additional_printer_columns: Some(vec![
                    CustomResourceColumnDefinition {
                        name: "Age".into(),
                        type_: "date".into(),
                        json_path: ".metadata.creationTimestamp".into(),
                        ..Default::default()
                    },
                    CustomResourceColumnDefinition {
                        name: "URL".into(),
                        type_: "string".into(),
                        json_path: ".status.artifact.url".into(),
                        ..Default::default()
                    },
                ]),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(structural_schema::<Program>()),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                    scale: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// The Stack CRD: v1 (storage) and v1alpha1 (served, deprecated).
fn stack_crd() -> CustomResourceDefinition {
    let mut crd = Stack::crd();
    for schema in schemas_mut(&mut crd) {
        not_yet_observed(schema);
    }
    let mut old = v1alpha1::Stack::crd().spec.versions;
    for v in &mut old {
        v.storage = false;
    }
    crd.spec.versions.extend(old);
    crd
}

/// A Stack the operator has not reconciled yet reads `status.observedGeneration: 0` (a
/// default, applied when the object is read), so kstatus, and with it Flux's health checks
/// (`wait: true`, `healthChecks`), sees it in progress rather than ready: kstatus takes an
/// object with no status at all for Current.
fn not_yet_observed(schema: &mut JSONSchemaProps) {
    if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
        status.default = Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                serde_json::json!({"observedGeneration": 0}),
            ),
        );
    }
}

/// Where the generated CRDs are committed, relative to the repository: the kustomize base and
/// the Helm chart's `crds/` (Helm installs those before the templates). `crdgen` writes both;
/// a test fails when either drifts from the types.
pub const COMMITTED_DIRS: &[&str] = &["config/crd/bases", "config/helm/pulumi-operator/crds"];

/// Every CRD, with its file name in each of [`COMMITTED_DIRS`].
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("pulumi.com_stacks.yaml", stack_crd()),
        ("pulumi.com_programs.yaml", program_crd()),
        ("auto.pulumi.com_workspaces.yaml", Workspace::crd()),
        ("auto.pulumi.com_updates.yaml", Update::crd()),
    ]
    .into_iter()
    .map(|(file, crd)| (file, with_kubernetes_merge_markers(as_lenient_as_pko(crd))))
    .collect()
}

/// Server-side apply merges the Kubernetes parts of a Workspace (its own, or a Stack's
/// `workspaceTemplate`) as Kubernetes merges them (see `list_markers`).
fn with_kubernetes_merge_markers(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let path: &[&str] = match crd.spec.names.kind.as_str() {
        "Workspace" => &["spec"],
        "Stack" => &["spec", "workspaceTemplate", "spec"],
        _ => return crd,
    };
    for root in schemas_mut(&mut crd) {
        let mut node = Some(root);
        for p in path {
            node = node.and_then(|n| n.properties.as_mut()?.get_mut(*p));
        }
        if let Some(spec) = node {
            super::list_markers::mark_workspace_spec(spec);
        }
    }
    crd
}

/// What PKO's CRDs admit, ours admit (`operator/tests/crds.rs` checks it against PKO's own):
/// an object without `spec` (the types read it as the default spec, and the controllers say
/// what it lacks), and a reference without `name` (Kubernetes' own API defaults a referent's
/// name to "", and says so in its description; the derived schemas made it required). Every
/// kind gets its `listKind`, as PKO's have.
fn as_lenient_as_pko(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    if crd.spec.names.list_kind.is_none() {
        crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    }
    for schema in schemas_mut(&mut crd) {
        not_required(schema, "spec");
        referent_names_optional(schema);
    }
    crd
}

/// The schema of every version.
fn schemas_mut(crd: &mut CustomResourceDefinition) -> impl Iterator<Item = &mut JSONSchemaProps> {
    crd.spec
        .versions
        .iter_mut()
        .filter_map(|v| v.schema.as_mut()?.open_api_v3_schema.as_mut())
}

/// Removes `field` from the schema's required fields (and the list, left empty).
fn not_required(schema: &mut JSONSchemaProps, field: &str) {
    if let Some(required) = schema.required.as_mut() {
        required.retain(|r| r != field);
        if required.is_empty() {
            schema.required = None;
        }
    }
}

fn referent_names_optional(schema: &mut JSONSchemaProps) {
    let referent = schema
        .properties
        .as_ref()
        .and_then(|p| p.get("name"))
        .and_then(|n| n.description.as_deref())
        .is_some_and(|d| d.starts_with("Name of the referent."));
    if referent {
        not_required(schema, "name");
    }
    for p in schema.properties.iter_mut().flat_map(|m| m.values_mut()) {
        referent_names_optional(p);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => referent_names_optional(s),
        Some(JSONSchemaPropsOrArray::Schemas(list)) => {
            list.iter_mut().for_each(referent_names_optional)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = schema.additional_properties.as_mut() {
        referent_names_optional(s);
    }
}

/// The YAML of a CRD as it is committed.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml::to_string(crd).unwrap_or_else(|e| panic!("CRD to YAML: {e}"));
    format!("# Generated by `cargo run -p operator --bin crdgen`; do not edit.\n---\n{body}")
}
