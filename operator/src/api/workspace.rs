//! `workspaces.auto.pulumi.com/v1alpha1`: a Pulumi workspace, run as a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, PodSpec, ResourceRequirements, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// A Pulumi workspace: a pod holding a program, where the agent runs Pulumi operations.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "auto.pulumi.com",
    version = "v1alpha1",
    kind = "Workspace",
    doc = "A Pulumi workspace: a pod holding a program, in which the agent runs Pulumi operations for the operator.",
    plural = "workspaces",
    namespaced,
    status = "WorkspaceStatus",
    category = "pulumi",
    crates(
        kube_core = "kube::core",
        k8s_openapi = "k8s_openapi",
        schemars = "schemars",
        serde = "serde",
        serde_json = "serde_json"
    ),
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.address"}"#
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct WorkspaceSpec {
    /// Service account of the workspace pod. It needs `system:auth-delegator` so the agent can
    /// check the operator's token.
    #[serde(
        default = "default_service_account",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_name: Option<String>,
    /// Pod security profile: `restricted` (default; non-root image) or `baseline`.
    #[serde(
        default = "default_security_profile",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_profile: Option<SecurityProfile>,
    /// Image of the `pulumi` container: Pulumi CLI plus the program's language runtime.
    /// Default `pulumi/pulumi:latest-nonroot` (restricted) or `pulumi/pulumi:latest`
    /// (baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull policy of the `pulumi` container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Fetch the program from a Git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Fetch the program from a Flux artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxSource>,
    /// Use a program already present in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSource>,
    /// No program: write a minimal Pulumi.yaml with this name and runtime (used to destroy a
    /// stack whose source is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_info: Option<ProjectInfo>,
    /// Sources of environment variables for the `pulumi` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "env_from_atomic")]
    pub env_from: Option<Vec<EnvFromSource>>,
    /// Environment variables for the `pulumi` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "env_by_name")]
    pub env: Option<Vec<EnvVar>>,
    /// Compute resources of the `pulumi` container (default requests: 64Mi memory, 100m CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod template merged over the generated pod (strategic merge): extra containers,
    /// volumes, node selection, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<EmbeddedPodTemplateSpec>,
    /// Labels and annotations for the workspace Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_template: Option<EmbeddedServiceTemplate>,
    /// Verbosity of Pulumi's engine log (`-v=N`), written to the `pulumi` container log; 0 is
    /// off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulumi_log_level: Option<i32>,
    /// Stacks to select and configure in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "stacks_by_name")]
    pub stacks: Option<Vec<WorkspaceStack>>,
}

spec_or_default!(WorkspaceSpec);

fn default_service_account() -> Option<String> {
    Some("default".into())
}

fn default_security_profile() -> Option<SecurityProfile> {
    Some(SecurityProfile::Restricted)
}

fn env_from_atomic(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = g.subschema_for::<Vec<EnvFromSource>>();
    s.ensure_object()
        .insert("x-kubernetes-list-type".into(), "atomic".into());
    s
}

fn env_by_name(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = g.subschema_for::<Vec<EnvVar>>();
    let o = s.ensure_object();
    o.insert("x-kubernetes-list-type".into(), "map".into());
    o.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    s
}

fn stacks_by_name(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = g.subschema_for::<Vec<WorkspaceStack>>();
    let o = s.ensure_object();
    o.insert("x-kubernetes-list-type".into(), "map".into());
    o.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    s
}

fn config_by_key(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = g.subschema_for::<Vec<ConfigItem>>();
    let o = s.ensure_object();
    o.insert("x-kubernetes-list-type".into(), "map".into());
    o.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["key"]),
    );
    s
}

/// Pod security profile of the workspace: `restricted` or `baseline` (a string, as PKO's
/// schema has it; like PKO, only `restricted` restricts, any other value is `baseline`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(schema_with = "schema::string")]
pub enum SecurityProfile {
    /// Pod Security Standards "restricted": non-root, no privilege escalation, seccomp.
    #[default]
    Restricted,
    /// Pod Security Standards "baseline": the image may run as root.
    #[serde(other)]
    Baseline,
}

/// A program in a Git repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// URL of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Tag, branch or commit to check out (the Stack controller always passes a commit).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub git_ref: Option<String>,
    /// Directory of the program in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GitAuth>,
    /// Fetch only the needed commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shallow: Option<bool>,
}

/// Git credentials, each from a Secret key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitAuth {
    /// SSH private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<SecretKeySelector>,
    /// User name for basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<SecretKeySelector>,
    /// Password for basic auth, or the SSH key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeySelector>,
    /// Access token (basic auth with user `git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeySelector>,
    /// The SSH server's host keys (OpenSSH `known_hosts` lines); any other key is refused.
    /// An addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<SecretKeySelector>,
    /// GitHub App credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_app: Option<GitHubAppAuth>,
}

/// GitHub App credentials, each from a Secret key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAppAuth {
    /// The App's ID.
    #[serde(skip_serializing_if = "Option::is_none", rename = "appID")]
    #[schemars(required)]
    pub app_id: Option<SecretKeySelector>,
    /// The installation's ID.
    #[serde(skip_serializing_if = "Option::is_none", rename = "installationID")]
    #[schemars(required)]
    pub installation_id: Option<SecretKeySelector>,
    /// The App's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub private_key: Option<SecretKeySelector>,
}

/// A program in a Flux artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluxSource {
    /// Artifact URL (`status.artifact.url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Artifact digest (`status.artifact.digest`), checked before the program is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Directory of the program inside the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A program inside the workspace image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LocalSource {
    /// Directory of the program in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A Pulumi project's name and runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ProjectInfo {
    /// Project name.
    pub name: String,
    /// Project runtime, e.g. `yaml`.
    pub runtime: String,
}

/// Pod template fields merged over the workspace pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EmbeddedPodTemplateSpec {
    /// Labels and annotations for the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<EmbeddedObjectMeta>,
    /// Pod spec merged over the generated one; containers are merged by name (`pulumi` is
    /// the main container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
}

/// Labels and annotations for the workspace Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EmbeddedServiceTemplate {
    /// Labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<EmbeddedObjectMeta>,
}

/// Labels and annotations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EmbeddedObjectMeta {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A stack in the workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStack {
    /// Fully qualified stack name.
    pub name: String,
    /// Create the stack if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
    /// Secrets provider for a new stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_provider: Option<String>,
    /// Configuration values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "config_by_key")]
    pub config: Option<Vec<ConfigItem>>,
    /// Pulumi ESC environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::atomic_strings")]
    pub environment: Option<Vec<String>>,
}

/// One configuration value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct ConfigItem {
    /// Config key (`project:key` or `key`).
    pub key: String,
    /// Treat the key as a path (`a.b[0]`) into a structured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<bool>,
    /// The value: a string or structured JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub value: Option<serde_json::Value>,
    /// Read the value from the pod's environment or a file in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ConfigValueFrom>,
    /// Store the value encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
}

/// Where a config value is read from in the workspace pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigValueFrom {
    /// Environment variable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Parse the content as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
}

/// The observed state of a Workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The generation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// The agent's gRPC address, e.g. `<ws>-workspace.<ns>:50051`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The Pulumi CLI version in the workspace, e.g. `v3.202.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulumi_version: Option<String>,
    /// Ready and Stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Option<Vec<Condition>>,
}
