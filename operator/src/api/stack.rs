//! `stacks.pulumi.com`: `v1` (storage) and `v1alpha1` (served, deprecated, same spec).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;
use super::stack_spec::StackSpec;
pub use super::workspace::ProjectInfo;

/// The desired state of a Stack (see StackSpec).
#[derive(CustomResource, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pulumi.com",
    version = "v1",
    kind = "Stack",
    doc = "A Pulumi stack deployed by the operator: its program source, configuration and update policy (spec), and the outcome of its updates (status).",
    plural = "stacks",
    namespaced,
    status = "StackStatus",
    category = "pulumi",
    crates(kube_core = "kube::core", k8s_openapi = "k8s_openapi", schemars = "schemars", serde = "serde", serde_json = "serde_json"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 42").message("Stack name must be no more than 42 characters in length."),
    printcolumn = r#"{"name":"Stack","type":"string","jsonPath":".spec.stack","priority":10}"#,
    printcolumn = r#"{"name":"Last Update","type":"string","jsonPath":".status.lastUpdate.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".status.lastUpdate.lastResyncTime"}"#,
    printcolumn = r#"{"name":"Last Commit","type":"string","jsonPath":".status.lastUpdate.lastAttemptedCommit","priority":10}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reconciling","type":"string","jsonPath":".status.conditions[?(@.type==\"Reconciling\")].reason"}"#,
    printcolumn = r#"{"name":"Stalled","type":"string","jsonPath":".status.conditions[?(@.type==\"Stalled\")].reason"}"#,
    printcolumn = r#"{"name":"Drifted","type":"string","jsonPath":".status.conditions[?(@.type==\"Drifted\")].status"}"#,
    printcolumn = r#"{"name":"Awaiting Approval","type":"string","jsonPath":".status.pendingPlan.id"}"#,
    printcolumn = r#"{"name":"Permalink","type":"string","jsonPath":".status.lastUpdate.permalink"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend","priority":10}"#
)]
#[serde(transparent)]
pub struct StackSpecV1(pub StackSpec);

impl<'de> Deserialize<'de> for StackSpecV1 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::lenient::or_default(d).map(StackSpecV1)
    }
}

/// The observed state of a Stack.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackStatus {
    /// Outputs of the last successful update; secret outputs read `[secret]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::json_map")]
    pub outputs: Option<BTreeMap<String, serde_json::Value>>,
    /// The last completed update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<StackUpdateState>,
    /// The generation of the spec last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `pulumi.com/reconciliation-request` annotation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_reconcile_request: Option<String>,
    /// Ready, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Option<Vec<Condition>>,
    /// The update in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_update: Option<CurrentStackUpdate>,
    /// The project's name and runtime, kept so the stack can be destroyed after its source is
    /// gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_info: Option<ProjectInfo>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled: the update it asked for has
    /// finished (Flux's field, so `flux reconcile`-style tooling can wait on it). Addition
    /// over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The last drift check (`spec.driftDetection`). Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// The update plan awaiting approval (`spec.approval`). Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_plan: Option<PendingPlan>,
    /// The id of the last plan applied on approval. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_plan: Option<String>,
}

/// An update plan awaiting approval: what applying it would do.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPlan {
    /// What to approve: `kubectl annotate stack NAME pulumi.com/approve=<id>`. The first 16
    /// hex digits of the plan's SHA-256.
    pub id: String,
    /// The Secret holding the plan (owned by the preview that made it).
    pub secret_name: String,
    /// The preview Update that made it.
    pub update: String,
    /// The source revision it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Stack generation it was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The `pulumi.com/reconciliation-request` it was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_request: Option<String>,
    /// When it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub time: Option<String>,
    /// How many resources it creates.
    #[serde(default)]
    pub creates: i64,
    /// How many resources it updates in place.
    #[serde(default)]
    pub updates: i64,
    /// How many resources it deletes.
    #[serde(default)]
    pub deletes: i64,
    /// How many resources it replaces.
    #[serde(default)]
    pub replaces: i64,
    /// The resources it changes (at most 100) and the property paths (never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<crate::api::update::ResourceChange>>,
    /// How many changed resources `resources` leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_omitted: Option<i64>,
    /// An approval naming another plan, already answered with an `ApprovalRefused` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_approval: Option<String>,
}

/// What the last drift check found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// When the last check ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_check_time: Option<String>,
    /// The source revision deployed when it ran (the last successful update's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Update that ran it (a preview-only refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// The resources that differ from the stack's state, and their paths (never values);
    /// what `ignore` rules cover is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<crate::api::update::ResourceChange>>,
    /// How many differing resources the check found beyond those listed (ignored ones not
    /// counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<i64>,
    /// How many differences (resources or paths) `ignore` rules left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<i64>,
    /// Why the check failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// (remediate) The `up` started to put the resources back, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    /// The `pulumi.com/drift-check-request` value last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
}

/// The outcome of the last completed update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackUpdateState {
    /// Stack generation the update was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Reconciliation request the update was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_request: Option<String>,
    /// Name of the Update object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Type of update: up, preview, destroy or refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "type")]
    pub update_type: Option<String>,
    /// `succeeded` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the update failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Source revision of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_commit: Option<String>,
    /// Source revision of the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_commit: Option<String>,
    /// Link to the update in Pulumi Cloud, when the backend has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permalink: Option<String>,
    /// When the update's result was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_resync_time: Option<String>,
    /// Consecutive failures for this generation and request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
}

/// How an update ended, as `status.lastUpdate.state` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Succeeded,
    Failed,
}

impl UpdateOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Succeeded => "succeeded",
            UpdateOutcome::Failed => "failed",
        }
    }
}

impl StackUpdateState {
    /// How the update ended; None before any has (or for a state no operator writes).
    pub fn outcome(&self) -> Option<UpdateOutcome> {
        [UpdateOutcome::Succeeded, UpdateOutcome::Failed]
            .into_iter()
            .find(|o| self.state.as_deref() == Some(o.as_str()))
    }

    pub fn set_outcome(&mut self, outcome: UpdateOutcome) {
        self.state = Some(outcome.as_str().into());
    }

    pub fn failed(&self) -> bool {
        self.outcome() == Some(UpdateOutcome::Failed)
    }

    pub fn succeeded(&self) -> bool {
        self.outcome() == Some(UpdateOutcome::Succeeded)
    }

    /// The operation it ran; None when unset or unknown.
    pub fn kind(&self) -> Option<crate::api::update::UpdateType> {
        self.update_type
            .as_deref()
            .and_then(crate::api::update::UpdateType::parse)
    }
}

/// The update in progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentStackUpdate {
    /// Stack generation the update is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Reconciliation request the update is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_request: Option<String>,
    /// Name of the Update object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Source revision being deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The `reconcile.fluxcd.io/requestedAt` value when the update started. Addition over
    /// PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_requested_at: Option<String>,
    /// What the update is for, when it is not a plain update of the program: `driftCheck` (a
    /// preview-only refresh whose result goes to `status.drift`), `driftRemediation` (an `up`
    /// with refresh after drift was found), `plan` (a preview saving the plan that awaits
    /// approval) or `approvedPlan` (the `up` of the approved plan). Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<UpdatePurpose>,
}

// What an update of a Stack is for beside deploying its program. (Not a doc comment: the
// field's own description goes into the CRD.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpdatePurpose {
    DriftCheck,
    DriftRemediation,
    /// A preview saving the plan that awaits approval (`spec.approval`).
    Plan,
    /// The `up` of an approved plan.
    ApprovedPlan,
}

/// `pulumi.com/v1alpha1`: served for old manifests, deprecated; same spec, smaller status.
pub mod v1alpha1 {
    use super::*;

    /// A Pulumi stack (deprecated version; use pulumi.com/v1).
    #[derive(CustomResource, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[kube(
        group = "pulumi.com",
        version = "v1alpha1",
        kind = "Stack",
        doc = "A Pulumi stack (deprecated version pulumi.com/v1alpha1; use pulumi.com/v1).",
        plural = "stacks",
        namespaced,
        status = "StackStatus",
        category = "pulumi",
        deprecated = "pulumi.com/v1alpha1 Stack is deprecated; use pulumi.com/v1",
        crates(kube_core = "kube::core", k8s_openapi = "k8s_openapi", schemars = "schemars", serde = "serde", serde_json = "serde_json"),
        validation = kube::core::Rule::new("size(self.metadata.name) <= 42").message("Stack name must be no more than 42 characters in length.")
    )]
    #[serde(transparent)]
    pub struct StackSpecV1alpha1(pub StackSpec);

    impl<'de> Deserialize<'de> for StackSpecV1alpha1 {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::super::lenient::or_default(d).map(StackSpecV1alpha1)
        }
    }

    /// The observed state of a Stack (v1alpha1).
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct StackStatus {
        /// Outputs of the last successful update; secret outputs read `[secret]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "schema::json_map")]
        pub outputs: Option<BTreeMap<String, serde_json::Value>>,
        /// The last completed update.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub last_update: Option<StackUpdateState>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::update::UpdateType;

    #[test]
    fn states_and_types_read_as_written_and_nothing_else() {
        let mut last = StackUpdateState::default();
        assert_eq!((last.outcome(), last.kind()), (None, None));
        last.set_outcome(UpdateOutcome::Failed);
        assert_eq!(last.state.as_deref(), Some("failed"));
        assert!(last.failed() && !last.succeeded());
        last.set_outcome(UpdateOutcome::Succeeded);
        assert_eq!(last.state.as_deref(), Some("succeeded"));
        assert!(last.succeeded() && !last.failed());
        last.state = Some("Succeeded".into());
        assert_eq!(
            last.outcome(),
            None,
            "states are lowercase, as PKO writes them"
        );
        for t in [
            UpdateType::Preview,
            UpdateType::Up,
            UpdateType::Destroy,
            UpdateType::Refresh,
        ] {
            last.update_type = Some(t.as_str().into());
            assert_eq!(last.kind(), Some(t));
            assert_eq!(
                serde_json::to_value(t).expect("serializes"),
                serde_json::json!(t.as_str()),
                "as_str agrees with the API's spelling"
            );
        }
        last.update_type = Some("apply".into());
        assert_eq!(last.kind(), None);
    }
}
