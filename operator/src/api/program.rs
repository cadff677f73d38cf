//! `programs.pulumi.com/v1`: a Pulumi YAML program held in the cluster. Its top-level field is
//! `program`, not `spec` (PKO's shape), so the root type is written by hand rather than derived.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::{JsonSchema, json_schema};
use serde::{Deserialize, Serialize};

use super::schema;

/// A Pulumi YAML program, served to workspaces as a Flux-style artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Program")]
pub struct Program {
    /// APIVersion of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Standard object metadata.
    #[serde(default)]
    #[schemars(schema_with = "object_meta")]
    pub metadata: ObjectMeta,
    /// The program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramSpec>,
    /// Where the program's artifact is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ProgramStatus>,
}

/// The apiserver owns metadata's schema; a CRD may only say it is an object.
fn object_meta(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    json_schema!({ "type": "object" })
}

impl kube::Resource for Program {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Program".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "pulumi.com".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "programs".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A Pulumi YAML program (the body of a Pulumi.yaml without name and runtime).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ProgramSpec {
    /// Configuration the program reads, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<BTreeMap<String, Configuration>>,
    /// Resources the program declares, by logical name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, Resource>>,
    /// Variables: expressions evaluated once, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub variables: Option<BTreeMap<String, serde_json::Value>>,
    /// Stack outputs, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub outputs: Option<BTreeMap<String, serde_json::Value>>,
    /// Packages (providers) the program uses, name to version or source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<BTreeMap<String, String>>,
}

/// A configuration value's declaration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Configuration {
    /// Type of the value.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    #[schemars(with = "ConfigType")]
    pub config_type: Option<ConfigType>,
    /// Value used when the stack sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub default: Option<serde_json::Value>,
}

/// Type of a configuration value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigType {
    String,
    Number,
    #[serde(rename = "List<Number>")]
    ListNumber,
    #[serde(rename = "List<String>")]
    ListString,
}

/// A resource declaration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Resource {
    /// Resource type token, e.g. `random:RandomPet`.
    #[schemars(length(min = 1))]
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Input properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
    /// Resource options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Read an existing resource instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<Getter>,
}

/// Reads an existing resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Getter {
    /// ID of the resource.
    #[schemars(length(min = 1))]
    pub id: String,
    /// State properties to look the resource up by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub state: Option<BTreeMap<String, serde_json::Value>>,
}

/// Resource options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Outputs to treat as secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_secret_outputs: Option<Vec<String>>,
    /// Former names of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// Timeouts for create, update and delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_timeouts: Option<CustomTimeouts>,
    /// Delete before creating a replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_before_replace: Option<bool>,
    /// Explicit dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_list")]
    pub depends_on: Option<Vec<serde_json::Value>>,
    /// Properties whose changes are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_changes: Option<Vec<String>>,
    /// ID of an existing resource to import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<String>,
    /// Parent resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub parent: Option<serde_json::Value>,
    /// Refuse to delete the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect: Option<bool>,
    /// Provider resource to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub provider: Option<serde_json::Value>,
    /// Providers to use, by package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub providers: Option<BTreeMap<String, serde_json::Value>>,
    /// Provider plugin version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn any_json_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    json_schema!({ "type": "array", "items": { "x-kubernetes-preserve-unknown-fields": true } })
}

/// Operation timeouts, e.g. `5m`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CustomTimeouts {
    /// Create timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// Delete timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// Update timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
}

/// Where a Program is served.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStatus {
    /// The generation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The program as a Flux-compatible artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

/// A Flux-compatible artifact (same fields as `status.artifact` of Flux sources).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Path of the artifact on the server, `programs/<ns>/<name>/<generation>.tar.gz`.
    pub path: String,
    /// URL the artifact is served at.
    pub url: String,
    /// Revision: the Program's generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub revision: Option<String>,
    /// Digest of the tar.gz, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"))]
    pub digest: Option<String>,
    /// When the artifact was last written.
    #[schemars(schema_with = "schema::date_time")]
    pub last_update_time: String,
    /// Size of the artifact in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Extra metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}
