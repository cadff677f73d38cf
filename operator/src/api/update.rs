//! `updates.auto.pulumi.com/v1alpha1`: one Pulumi operation in a workspace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;
use super::workspace::ProjectInfo;

/// A Pulumi operation (up, preview, refresh, destroy) to run in a Workspace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "auto.pulumi.com",
    version = "v1alpha1",
    kind = "Update",
    doc = "One Pulumi operation (up, preview, refresh, destroy) run in a Workspace, and its result.",
    plural = "updates",
    namespaced,
    status = "UpdateStatus",
    category = "pulumi",
    crates(
        kube_core = "kube::core",
        k8s_openapi = "k8s_openapi",
        schemars = "schemars",
        serde = "serde",
        serde_json = "serde_json"
    ),
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".spec.workspaceName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type","priority":10}"#,
    printcolumn = r#"{"name":"Start Time","type":"date","jsonPath":".status.startTime","priority":10}"#,
    printcolumn = r#"{"name":"End Time","type":"date","jsonPath":".status.endTime","priority":10}"#,
    printcolumn = r#"{"name":"Progressing","type":"string","jsonPath":".status.conditions[?(@.type==\"Progressing\")].status"}"#,
    printcolumn = r#"{"name":"Failed","type":"string","jsonPath":".status.conditions[?(@.type==\"Failed\")].status"}"#,
    printcolumn = r#"{"name":"Complete","type":"string","jsonPath":".status.conditions[?(@.type==\"Complete\")].status"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.permalink"}"#
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct UpdateSpec {
    /// The Workspace to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_name: Option<String>,
    /// The stack to operate on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_name: Option<String>,
    /// The operation: `preview`, `up`, `destroy` or `refresh`. Addition over PKO: validated as
    /// an enum, so a typo is refused when applied instead of failing later.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub update_type: Option<UpdateType>,
    /// How long to keep the Update (and its outputs Secret) after it completes, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub ttl_after_completed: Option<String>,
    /// Number of resource operations to run in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<i32>,
    /// Message recorded with the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Fail if the update would change anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_no_changes: Option<bool>,
    /// URNs of resources to replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Vec<String>>,
    /// URNs of resources to limit the operation to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<String>>,
    /// With `target`, include the resources that depend on the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dependents: Option<bool>,
    /// Refresh state before the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
    /// Keep going when a resource fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// (destroy) Also remove the stack and its configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<bool>,
    /// (destroy, refresh) Run the program to compute resource state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_program: Option<bool>,
    /// (up, destroy) What to do first about an update that was cut off earlier (its pod
    /// killed or evicted mid-operation): `Refresh` or `Fail`, as the Stack's field of that
    /// name. Unset: as the CLI does (it warns about pending operations and goes on). Addition
    /// over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operations: Option<PendingOperations>,
    /// (refresh) Only find what a refresh would change (`pulumi refresh --preview-only`):
    /// the differences between the stack's state and its resources as they are, in
    /// `status.changes`, with no state written. What a Stack's drift check runs. Addition
    /// over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_only: Option<bool>,
    /// (preview) Save the operations the preview proposes as an update plan (`pulumi preview
    /// --save-plan`), in a Secret the Update owns, named in `status.plan`. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_plan: Option<bool>,
    /// (up) Do exactly what this saved plan proposed (`pulumi up --plan`): a resource that
    /// would deviate from it fails the update, with the CLI's reason. Refused without running
    /// when the Secret is gone or holds another plan than `id`. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
}

/// An update plan saved by a preview.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanRef {
    /// The plan's identity: the first 16 hex digits of the SHA-256 of its file.
    pub id: String,
    /// The Secret holding it (key `plan.json`), in the Update's namespace.
    pub secret_name: String,
}

// What an `up` does about an update that was cut off earlier: the operations it left pending
// in the stack's state, and the lock it left on a self-managed backend. (Not a doc comment:
// the fields' own descriptions go into the CRDs.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PendingOperations {
    /// Resolve pending operations with `pulumi refresh --clear-pending-creates` before the
    /// `up`; an event says what was done.
    #[default]
    Refresh,
    /// Run nothing while the state lists pending operations: the update fails, naming them and
    /// the commands that resolve them.
    Fail,
}

impl PendingOperations {
    pub fn to_proto(self) -> crate::proto::PendingOperationsPolicy {
        match self {
            PendingOperations::Refresh => crate::proto::PendingOperationsPolicy::Refresh,
            PendingOperations::Fail => crate::proto::PendingOperationsPolicy::Fail,
        }
    }
}

spec_or_default!(UpdateSpec);

/// A Pulumi operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateType {
    Preview,
    Up,
    Destroy,
    Refresh,
    /// Any other value (PKO's CRD takes any string): the Update fails, saying so.
    #[serde(other)]
    #[schemars(skip)]
    Unsupported,
}

impl UpdateType {
    /// As the API spells it (`spec.type`, `status.lastUpdate.type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateType::Preview => "preview",
            UpdateType::Up => "up",
            UpdateType::Destroy => "destroy",
            UpdateType::Refresh => "refresh",
            UpdateType::Unsupported => "unsupported",
        }
    }

    pub fn parse(s: &str) -> Option<UpdateType> {
        [
            UpdateType::Preview,
            UpdateType::Up,
            UpdateType::Destroy,
            UpdateType::Refresh,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// The observed state of an Update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// The generation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub start_time: Option<String>,
    /// When the operation ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub end_time: Option<String>,
    /// Link to the update in Pulumi Cloud, when the backend has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permalink: Option<String>,
    /// The result message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Name of the Secret holding the stack outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
    /// Progressing, Failed and Complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Option<Vec<Condition>>,
    /// The project the operation ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_info: Option<ProjectInfo>,
    /// What the operation changed, or (preview, preview-only refresh) would change, per
    /// resource: URN, type, operation and the property paths that differ, never their values.
    /// At most 100 resources; `changesOmitted` counts the rest. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<ResourceChange>>,
    /// How many changed resources `changes` leaves out. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_omitted: Option<i64>,
    /// (preview with `savePlan`) The plan saved. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
}

/// One resource an operation changed or would change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    /// The resource's URN.
    pub urn: String,
    /// The resource's type token, e.g. `kubernetes:core/v1:ConfigMap`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// As the engine names it: `create`, `update`, `delete`, `replace`, `import`, ... For a
    /// refresh: `update` (the resource differs from the state) or `delete` (it is gone).
    pub operation: String,
    /// The property paths that differ, as Pulumi prints them (`data.color`,
    /// `spec.template.spec.containers[0].image`); at most 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}
