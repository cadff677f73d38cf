//! `StackSpec` and the types it uses, shared by `pulumi.com/v1` and `v1alpha1` (PKO's
//! `api/pulumi/shared`). Field names, types and required-ness match PKO v2 exactly.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;
use super::update::{UpdateSpec, UpdateStatus};
use super::workspace::WorkspaceStatus;

/// The desired state of a Pulumi stack: where its program comes from, how it is configured, and
/// how and when it is updated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    /// (Deprecated: use envRefs.) Name of a Secret whose `accessToken` key becomes
    /// `PULUMI_ACCESS_TOKEN` in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_secret: Option<String>,
    /// (Deprecated: use envRefs.) Names of ConfigMaps whose keys become environment variables
    /// in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envs: Option<Vec<String>>,
    /// (Deprecated: use envRefs.) Names of Secrets whose keys become environment variables in
    /// the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_secrets: Option<Vec<String>>,
    /// Environment variables for the workspace, by name. Only `Literal` and `Secret`
    /// references are supported; `Env` and `FS` stall the Stack with SpecInvalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_refs: Option<BTreeMap<String, ResourceRef>>,
    /// (Deprecated: use secretsRef.) Secret configuration values, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    /// Secret configuration values, by config key, from Secrets (or literals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_ref: Option<BTreeMap<String, ResourceRef>>,
    /// The secrets provider used when the stack is created (`pulumi stack init
    /// --secrets-provider`), e.g. `passphrase` or `awskms://...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_provider: Option<String>,
    /// Git URL of the repository holding the program (with `branch` or `commit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_repo: Option<String>,
    /// (Deprecated: use gitAuth.) Name of a Secret with git credentials: `sshPrivateKey`
    /// (and optional `password`), `accessToken`, or `username` and `password`; an optional
    /// `knownHosts` key pins the SSH server's host keys (an addition over PKO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_auth_secret: Option<String>,
    /// Credentials for `projectRepo`: one of SSH, access token, basic auth or a GitHub App.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_auth: Option<GitAuthConfig>,
    /// Directory inside the source that holds `Pulumi.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_dir: Option<String>,
    /// Commit to deploy from `projectRepo`. Exclusive with `branch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Branch to follow in `projectRepo` (short name or full ref); polled every
    /// `resyncFrequencySeconds`. Exclusive with `commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Fetch only the needed commit (depth 1) instead of the whole history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shallow: Option<bool>,
    /// A Flux source (GitRepository, OCIRepository, Bucket, ExternalArtifact, HelmChart) whose
    /// artifact holds the program. The Stack is updated when the artifact revision changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux_source: Option<FluxSource>,
    /// A Program object (programs.pulumi.com) in the same namespace holding the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_ref: Option<ProgramReference>,
    /// Fully qualified name of the stack to deploy (`org/project/stack` or `stack`).
    pub stack: String,
    /// Pulumi backend URL (`PULUMI_BACKEND_URL`), e.g. `s3://bucket` or `file:///state`.
    /// Defaults to Pulumi Cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Inline configuration values: a map of config keys to values, which may be strings or
    /// structured JSON (objects, arrays, numbers, booleans). Any JSON is stored, as PKO's
    /// schema takes it; what is not such a map stalls the Stack with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub config: Option<serde_json::Value>,
    /// Configuration values read from ConfigMaps, by config key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<BTreeMap<String, ConfigMapRef>>,
    /// Pulumi ESC environments to import into the stack configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::atomic_strings")]
    pub environment: Option<Vec<String>>,
    /// Limit updates to these resource URNs (`pulumi up --target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// With `targets`, also update the resources that depend on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dependents: Option<bool>,
    /// Stacks that must have succeeded before this one is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prerequisites: Option<Vec<PrerequisiteRef>>,
    /// Keep updating every `resyncFrequencySeconds` even when the source revision is
    /// unchanged (to correct drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_resync_on_commit_match: Option<bool>,
    /// Refresh the stack's state before each update (`pulumi up --refresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
    /// Accepted for compatibility; has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_no_refresh_changes: Option<bool>,
    /// Destroy the stack's resources (`pulumi destroy`) before the Stack object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_on_finalize: Option<bool>,
    /// Run the program during destroy and refresh (`--run-program`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_program: Option<bool>,
    /// Accepted for compatibility; has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_update_conflict: Option<bool>,
    /// Do not create the stack if it does not exist in the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_local_stack_only: Option<bool>,
    /// How often to resync (drift correction with continueResyncOnCommitMatch, branch
    /// polling). Values below 60 are treated as 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_frequency_seconds: Option<i64>,
    /// Longest wait between retries after failed updates, in seconds (default 86400). Retries
    /// back off 10s × 3ⁿ up to this cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_backoff_duration_seconds: Option<i64>,
    /// Only run previews (`pulumi preview`); never update or destroy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<bool>,
    /// What an update (or the destroy of a deleted Stack) does first when an earlier one was
    /// cut off (its workspace pod killed or evicted mid-operation): `Refresh` (the default) resolves the operations it left pending
    /// with `pulumi refresh --clear-pending-creates`; `Fail` runs nothing while operations are
    /// pending, and says which and what to run. Either way a stack lock left by this Stack's
    /// own workspace pod is released, and an `InterruptedUpdateRecovered` event says what was
    /// done. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operations: Option<crate::api::update::PendingOperations>,
    /// Service account of the workspace pod. It needs the `system:auth-delegator` role so the
    /// agent can authenticate the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// A Workspace (auto.pulumi.com/v1alpha1) merged over the one generated for this Stack
    /// (strategic merge): image, resources, pod template, extra env, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_template: Option<WorkspaceApplyConfiguration>,
    /// What to do with the Workspace (and its pod) after a successful update: `Retain` keeps
    /// it (default), `Delete` deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_reclaim_policy: Option<WorkspaceReclaimPolicy>,
    /// An Update (auto.pulumi.com/v1alpha1) merged over each one generated for this Stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_template: Option<UpdateApplyConfiguration>,
    /// Verbosity of Pulumi's engine log (`-v=N`), shown in the workspace pod's `pulumi`
    /// container log; 0 is off, 10 is very verbose. Addition over PKO, whose troubleshooting
    /// guide documents this field although its schema lacks it; it overrides
    /// `workspaceTemplate.spec.pulumiLogLevel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulumi_log_level: Option<i32>,
    /// Flux's suspend: while true, the operator starts no update (no new revision, resync,
    /// retry or reconcile request is acted on) and does not poll the source; an update already
    /// running finishes, and deleting the Stack still runs its destroy. Ready keeps its status
    /// with reason `Suspended`. Setting it back to false is a spec change, so an update runs
    /// then, with whatever changed meanwhile. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Writes the stack's outputs, after each successful update, to a Secret in the Stack's
    /// namespace that workloads can mount or read (secret outputs included: it is a Secret).
    /// Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_secret_ref: Option<OutputsSecretRef>,
    /// Checks, on an interval or a cron schedule, whether the stack's resources still match
    /// its state (a preview-only refresh, run as an Update: nothing is written), and reports,
    /// warns about or remediates what differs. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_detection: Option<DriftDetection>,
    /// Changes wait for approval: each new revision or spec change is first previewed into an
    /// update plan (`status.pendingPlan`), and only the plan approved by its id
    /// (`kubectl annotate stack NAME pulumi.com/approve=<id>`) is applied, exactly
    /// (`pulumi up --plan`). Not for `preview: true` Stacks, nor for the destroy of a deleted
    /// Stack. Addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// Whether a Stack's changes wait for approval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Every update waits for its plan to be approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// When and how a Stack checks for drift: changes made to its resources outside Pulumi.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftDetection {
    /// Time between checks, e.g. `30m` or `6h` (at least `5m`). Exactly one of `interval` and
    /// `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,
    /// When to check, as a CronJob's schedule (five fields, UTC), e.g. `0 */6 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `detect` (the default): record drift in `status.drift` and the `Drifted` condition,
    /// with a Normal `DriftDetected` event; `warn`: the same with a Warning event;
    /// `remediate`: the same, then an `up` with refresh puts the resources back as the program
    /// declares them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DriftMode>,
    /// Differences not to report (nor remediate for): fields other controllers own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<DriftIgnore>>,
}

// What a Stack does about drift it finds. (Not a doc comment: the field's own description goes
// into the CRD.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    #[default]
    Detect,
    Warn,
    Remediate,
}

impl DriftMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            DriftMode::Detect => "detect",
            DriftMode::Warn => "warn",
            DriftMode::Remediate => "remediate",
        }
    }
}

/// Differences a drift check does not report: those of the resources that match `urn` and
/// `type`, at `paths` (or all of theirs).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftIgnore {
    /// Resource URNs this rule covers, as a glob (`*` any run of characters, `?` one), e.g.
    /// `*::kubernetes:apps/v1:Deployment::web`. Unset: every resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
    /// Resource types this rule covers, as a glob, e.g. `kubernetes:apps/v1:*`. Unset: every
    /// type.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub resource_type: Option<String>,
    /// Property paths to ignore, as Pulumi prints them (`spec.replicas`,
    /// `metadata.annotations`); a path covers everything under it. Unset: the whole resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

/// Where a Stack's outputs are written, and which.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputsSecretRef {
    /// Name of the Secret. The Stack creates it and owns it (it goes with the Stack); a Secret
    /// of that name that is not the Stack's is left alone, and the Stack stalls saying so.
    pub name: String,
    /// The outputs to write, each one the stack has and each a valid Secret key (letters,
    /// digits, `-`, `_`, `.`); all of them when unset. A string output is written as is, any
    /// other as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
}

/// A reference to a value: a literal, a key of a Secret, (deprecated) an environment variable
/// or a file of the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// Where the value comes from: `Literal`, `Secret`, or the deprecated `Env` and `FS`.
    #[serde(rename = "type")]
    pub selector_type: ResourceSelectorType,
    /// (Deprecated) An environment variable of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSelector>,
    /// (Deprecated) A file of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FSSelector>,
    /// A key of a Secret in the Stack's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSelector>,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralRef>,
}

/// What a ResourceRef of an unknown type is told.
pub const UNSUPPORTED_TYPE: &str =
    "type must be Secret or Literal (Env and FS were PKO v1's); use a secret reference";

/// Kind of a ResourceRef: `Env`, `FS`, `Secret` or `Literal` (a string, as PKO's schema has
/// it: any other value is read as `Unsupported`, and the Stack stalls saying so).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(schema_with = "schema::string")]
pub enum ResourceSelectorType {
    Env,
    #[serde(rename = "FS")]
    Fs,
    #[default]
    Secret,
    Literal,
    #[serde(other)]
    Unsupported,
}

/// An environment variable by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EnvSelector {
    /// Name of the environment variable.
    pub name: String,
}

/// A file by path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct FSSelector {
    /// Path of the file.
    pub path: String,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretSelector {
    /// Namespace of the Secret; must be empty or the Stack's own (cross-namespace references
    /// are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// A literal value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LiteralRef {
    /// The value.
    pub value: String,
}

/// A key of a ConfigMap used as a config value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigMapRef {
    /// Name of the ConfigMap in the Stack's namespace.
    pub name: String,
    /// Key within the ConfigMap.
    pub key: String,
    /// Parse the value as JSON (structured config) instead of a plain string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
}

/// Git credentials for `projectRepo`; set exactly one of the modes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitAuthConfig {
    /// SSH private key (and optional passphrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_auth: Option<SshAuth>,
    /// An access token, sent as basic auth with user `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<ResourceRef>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// A GitHub App installation, exchanged for an installation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_app: Option<GitHubAppAuth>,
}

/// SSH credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshAuth {
    /// The private key (PEM or OpenSSH format).
    pub ssh_private_key: ResourceRef,
    /// Passphrase of the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<ResourceRef>,
    /// The server's host keys, as OpenSSH `known_hosts` lines (hashed names and `[host]:port`
    /// included), from a Secret. When set, both the operator's branch lookup and the
    /// workspace pod's fetch refuse a server with any other key; when unset, any key is
    /// accepted, as PKO does. An addition over PKO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<ResourceRef>,
}

/// Basic-auth credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// User name.
    pub user_name: ResourceRef,
    /// Password.
    pub password: ResourceRef,
}

/// GitHub App credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAppAuth {
    /// The App's ID.
    #[serde(rename = "appID")]
    pub app_id: ResourceRef,
    /// The installation's ID.
    #[serde(rename = "installationID")]
    pub installation_id: ResourceRef,
    /// The App's private key (PEM).
    pub private_key: ResourceRef,
}

/// A Flux source and the directory of the program inside its artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluxSource {
    /// The source object, in the Stack's namespace.
    pub source_ref: FluxSourceReference,
    /// Directory of the program inside the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A reference to a Flux source object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluxSourceReference {
    /// API version, e.g. `source.toolkit.fluxcd.io/v1`.
    pub api_version: String,
    /// Kind, e.g. `GitRepository`, `OCIRepository`, `Bucket`, `ExternalArtifact`.
    pub kind: String,
    /// Name of the source.
    pub name: String,
}

/// A reference to a Program object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ProgramReference {
    /// Name of the Program in the Stack's namespace.
    pub name: String,
}

/// A Stack that must succeed first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PrerequisiteRef {
    /// Name of the prerequisite Stack in the same namespace.
    pub name: String,
    /// How recent its success must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<RequirementSpec>,
}

/// What a prerequisite must satisfy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequirementSpec {
    /// The prerequisite must have succeeded within this duration (e.g. `1h`); otherwise it is
    /// asked to run again first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub succeeded_within_duration: Option<String>,
}

/// What happens to a Stack's Workspace after a successful update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkspaceReclaimPolicy {
    /// Keep the Workspace and its pod (faster next update).
    #[default]
    Retain,
    /// Delete the Workspace and its pod.
    Delete,
}

/// A partial Workspace, merged over the generated one; every field is optional.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceApplyConfiguration {
    /// Ignored; present so a full Workspace manifest can be pasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Ignored; present so a full Workspace manifest can be pasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Metadata for the Workspace (labels, annotations, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::template_metadata")]
    pub metadata: Option<serde_json::Value>,
    /// Workspace spec fields to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::workspace_template_spec")]
    pub spec: Option<serde_json::Value>,
    /// Ignored; present so a full Workspace manifest can be pasted (as in PKO's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::template_status::<WorkspaceStatus>")]
    pub status: Option<serde_json::Value>,
}

/// A partial Update, merged over each generated one; every field is optional.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateApplyConfiguration {
    /// Ignored; present so a full Update manifest can be pasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Ignored; present so a full Update manifest can be pasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Metadata for the Update (labels, annotations, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::template_metadata")]
    pub metadata: Option<serde_json::Value>,
    /// Update spec fields to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::all_optional::<UpdateSpec>")]
    pub spec: Option<serde_json::Value>,
    /// Ignored; present so a full Update manifest can be pasted (as in PKO's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::template_status::<UpdateStatus>")]
    pub status: Option<serde_json::Value>,
}
