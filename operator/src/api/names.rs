//! Every name other parts (code, manifests, docs, tests) must agree on, in one place: API
//! groups, labels, annotations, condition types and reasons, event reasons, field managers,
//! container names and the pod layout. Values are PKO v2's, so existing manifests, dashboards
//! and runbooks keep working.

/// API groups and versions.
pub mod group {
    pub const PULUMI: &str = "pulumi.com";
    pub const AUTO: &str = "auto.pulumi.com";
    pub const FLUX_SOURCE: &str = "source.toolkit.fluxcd.io";
}

/// Labels and annotations.
pub mod label {
    /// Annotation on a Stack; a new value forces a new attempt at once.
    pub const RECONCILE_REQUEST: &str = "pulumi.com/reconciliation-request";
    /// Flux's request annotation (`flux reconcile` sets it): a new value forces a new attempt
    /// at once, as [`RECONCILE_REQUEST`] does; `status.lastHandledReconcileAt` says when it has
    /// been handled.
    pub const FLUX_RECONCILE_REQUEST: &str = "reconcile.fluxcd.io/requestedAt";
    /// Ours: annotation on a Stack; a new value runs a drift check at once
    /// (`status.drift.lastHandledRequest` says when it has been handled).
    pub const DRIFT_CHECK_REQUEST: &str = "pulumi.com/drift-check-request";
    /// Ours: annotation on a Stack with `spec.approval`: the id of the plan to apply.
    pub const APPROVE: &str = "pulumi.com/approve";
    /// On Workspaces and Updates made by the Stack controller.
    pub const PULUMI_COMPONENT: &str = "pulumi.com/component";
    pub const STACK_NAME: &str = "pulumi.com/stack-name";
    pub const COMPONENT_STACK: &str = "stack";
    /// On the workspace StatefulSet, its pods and its Service.
    pub const AUTO_COMPONENT: &str = "auto.pulumi.com/component";
    pub const WORKSPACE_NAME: &str = "auto.pulumi.com/workspace-name";
    pub const COMPONENT_WORKSPACE: &str = "workspace";
    /// On the outputs Secret of an Update.
    pub const UPDATE_NAME: &str = "auto.pulumi.com/update-name";
    pub const COMPONENT_UPDATE: &str = "update";
    /// Pod template annotation: hash of the source spec; a change rolls the pod.
    pub const REVISION_HASH: &str = "auto.pulumi.com/revision-hash";
    /// Live pod annotation set once the pod's stack is installed and selected.
    pub const INITIALIZED: &str = "auto.pulumi.com/initialized";
    /// Live pod annotation beside [`INITIALIZED`]: what the pod was initialized with (a
    /// digest of the Workspace's stacks, and their names, settings and config keys).
    pub const INITIALIZED_STACKS: &str = "auto.pulumi.com/initialized-stacks";
    /// Outputs Secret annotation: JSON array of the keys that are secret.
    pub const SECRET_OUTPUTS: &str = "pulumi.com/secrets";
    /// Outputs Secret annotation: JSON object from each key that is not its output's own name
    /// (the name is not a valid Secret key) to that name.
    pub const OUTPUT_NAMES: &str = "pulumi.com/output-names";
    /// Set by the StatefulSet controller on its pods.
    pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
}

/// Finalizers.
pub mod finalizer {
    pub const STACK: &str = "finalizer.stack.pulumi.com";
}

/// Server-side apply field managers.
pub mod field_manager {
    pub const OPERATOR: &str = "pulumi-kubernetes-operator";
    pub const STACK_STATUS: &str = "pulumi-kubernetes-operator/stack-status";
    pub const STACK_FINALIZER: &str = "pulumi-kubernetes-operator/stack-finalizer";
    pub const PREREQUISITE_REQUEST: &str = "pulumi-kubernetes-operator/prerequisite-request";
    pub const WORKSPACE_STATUS: &str = "pulumi-kubernetes-operator/workspace-status";
    pub const UPDATE_STATUS: &str = "pulumi-kubernetes-operator/update-status";
    pub const PROGRAM_STATUS: &str = "pulumi-kubernetes-operator/program-status";
    /// Followed by `/<update>`: marks a workspace pod as not to be evicted while the Update
    /// runs (`controller::update::guard`).
    pub const UPDATE_GUARD: &str = "pulumi-kubernetes-operator/update-guard";
}

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const PROGRESSING: &str = "Progressing";
    pub const FAILED: &str = "Failed";
    pub const COMPLETE: &str = "Complete";
    /// Ours, on Stacks with `spec.driftDetection`: what the last drift check found.
    pub const DRIFTED: &str = "Drifted";
    /// Ours, on Stacks with `spec.approval`: a plan waits for approval.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
}

/// Reasons of the Stack's `Drifted` condition (ours).
pub mod drift_reason {
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const NO_DRIFT: &str = "NoDrift";
    pub const CHECK_FAILED: &str = "DriftCheckFailed";
    /// A remediation `up` succeeded; the next check confirms.
    pub const REMEDIATED: &str = "DriftRemediated";
}

/// Condition reasons on Stacks.
pub mod stack_reason {
    pub const PROCESSING_COMPLETED: &str = "ProcessingCompleted";
    pub const NOT_READY_IN_PROGRESS: &str = "NotReadyInProgress";
    pub const NOT_READY_STALLED: &str = "NotReadyStalled";
    pub const STACK_PROCESSING: &str = "StackProcessing";
    pub const RETRYING_AFTER_FAILURE: &str = "RetryingAfterFailure";
    pub const PREVIEW_FAILED: &str = "PreviewFailed";
    pub const PREREQUISITE_NOT_SATISFIED: &str = "PrerequisiteNotSatisfied";
    pub const SPEC_INVALID: &str = "SpecInvalid";
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const PULUMI_VERSION_TOO_LOW: &str = "PulumiVersionTooLow";
    pub const WORKSPACE_FAILED: &str = "WorkspaceFailed";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
    pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
    pub const UPDATE_CONFLICT: &str = "UpdateConflict";
    /// Ours: `spec.suspend` is true; Ready keeps its status.
    pub const SUSPENDED: &str = "Suspended";
    /// Ours: `spec.outputsSecretRef` cannot be written (an output that is not a valid Secret
    /// key or that the stack lacks, or a Secret of that name that is not the Stack's).
    pub const OUTPUTS_SECRET_INVALID: &str = "OutputsSecretInvalid";
    /// Ours: a plan waits for approval (`spec.approval`).
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Ours: the plan awaiting approval is being made.
    pub const PLANNING: &str = "Planning";
}

/// Condition reasons on Workspaces.
pub mod workspace_reason {
    pub const DELETING: &str = "Deleting";
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    pub const WAITING_FOR_REPLICAS: &str = "WaitingForReplicas";
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
    pub const INCOMPATIBLE_CONFIGURATION: &str = "IncompatibleConfiguration";
    pub const INSTALLING: &str = "Installing";
    pub const INSTALLATION_FAILED: &str = "InstallationFailed";
    pub const INITIALIZING: &str = "Initializing";
    pub const INITIALIZATION_FAILED: &str = "InitializationFailed";
    pub const SUCCEEDED: &str = "Succeeded";
    /// Ours, not PKO's: the `fetch` init container failed; the message is its termination
    /// message.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// Ours: the spec cannot be turned into a pod (an invalid podTemplate, no source).
    pub const SPEC_INVALID: &str = "SpecInvalid";
}

/// Condition reasons on Updates.
pub mod update_reason {
    pub const PROGRESSING: &str = "Progressing";
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    pub const WORKSPACE_NOT_FOUND: &str = "WorkspaceNotFound";
    pub const WORKSPACE_NOT_READY: &str = "WorkspaceNotReady";
    pub const TRANSIENT_FAILURE: &str = "TransientFailure";
    pub const UPDATE_SUCCEEDED: &str = "UpdateSucceeded";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
    pub const UNKNOWN: &str = "Unknown";
    pub const ABORTED: &str = "Aborted";
    pub const CANCELED: &str = "Canceled";
    pub const UPDATED: &str = "Updated";
    pub const UPDATE_CONFLICT: &str = "UpdateConflict";
    pub const INVALID_ACCESS_TOKEN: &str = "InvalidAccessToken";
    /// Ours: `spec.pendingOperations: Fail` and the state lists pending operations.
    pub const PENDING_OPERATIONS: &str = "PendingOperations";
    /// Ours: `spec.plan` names a plan that is not there, or not the plan it says.
    pub const PLAN_UNAVAILABLE: &str = "PlanUnavailable";
}

/// Event reasons, as the troubleshooting guide names them.
pub mod event {
    // On Stacks.
    pub const STACK_CONFIG_INVALID: &str = "StackConfigInvalid";
    pub const STACK_INITIALIZATION_FAILURE: &str = "StackInitializationFailure";
    pub const STACK_GIT_AUTHENTICATION_FAILURE: &str = "StackGitAuthenticationFailure";
    pub const STACK_UPDATE_FAILURE: &str = "StackUpdateFailure";
    pub const STACK_UPDATE_CONFLICT_DETECTED: &str = "StackUpdateConflictDetected";
    pub const STACK_OUTPUT_RETRIEVAL_FAILURE: &str = "StackOutputRetrievalFailure";
    pub const STACK_UPDATE_DETECTED: &str = "StackUpdateDetected";
    pub const STACK_NOT_FOUND: &str = "StackNotFound";
    /// Not in PKO: a deleting `destroyOnFinalize` Stack whose workspace cannot run the destroy.
    pub const STACK_DESTROY_BLOCKED: &str = "StackDestroyBlocked";
    /// Emitted after every successful update, whatever its type (PKO's name).
    pub const STACK_CREATED: &str = "StackCreated";
    pub const STACK_DESTROYED: &str = "StackDestroyed";
    /// Not in PKO: an update cut off earlier left a lock or pending operations, and this one
    /// dealt with them first (`spec.pendingOperations: Refresh`).
    pub const INTERRUPTED_UPDATE_RECOVERED: &str = "InterruptedUpdateRecovered";
    /// Not in PKO: an update refused to run over pending operations
    /// (`spec.pendingOperations: Fail`); the message says how to resolve them.
    pub const STACK_PENDING_OPERATIONS: &str = "StackPendingOperations";
    pub const WORKSPACE_DELETED: &str = "WorkspaceDeleted";
    /// Not in PKO: a drift check found resources that differ from the stack's state (Normal
    /// in `detect` mode, Warning in `warn` and `remediate`); only when what differs changed.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// Not in PKO: a check found no drift after one that did.
    pub const DRIFT_RESOLVED: &str = "DriftResolved";
    /// Not in PKO: a drift check could not run to its end.
    pub const DRIFT_CHECK_FAILED: &str = "DriftCheckFailed";
    /// Not in PKO: the `up` started in `remediate` mode succeeded.
    pub const DRIFT_REMEDIATED: &str = "DriftRemediated";
    /// Not in PKO: a plan awaits approval; the message is the command that approves it.
    pub const PLAN_READY: &str = "PlanReady";
    /// Not in PKO: an approval names a plan other than the one awaiting approval (a stale
    /// one, or a typo); nothing was applied.
    pub const APPROVAL_REFUSED: &str = "ApprovalRefused";
    // On Workspaces.
    pub const MIGRATED: &str = "Migrated";
    pub const CONNECTION_FAILURE: &str = "ConnectionFailure";
    pub const INSTALLATION_FAILURE: &str = "InstallationFailure";
    pub const INITIALIZED: &str = "Initialized";
    pub const RECONFIGURED: &str = "Reconfigured";
    pub const RESTARTING: &str = "Restarting";
    pub const UPDATE_EXPIRED: &str = "UpdateExpired";
    pub const UPDATE_SUCCEEDED: &str = "UpdateSucceeded";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
    /// Ours: the `fetch` init container failed.
    pub const FETCH_FAILED: &str = "FetchFailed";
}

/// The workspace pod's layout (DESIGN.md, "Pod layout").
pub mod pod {
    pub const SHARE_VOLUME: &str = "share";
    pub const SHARE_PATH: &str = "/share";
    pub const SOURCE_PATH: &str = "/share/source";
    pub const WORKSPACE_PATH: &str = "/share/workspace";
    pub const AGENT_PATH: &str = "/share/agent";
    pub const ENV_FILE: &str = "/share/.env";
    pub const BOOTSTRAP_CONTAINER: &str = "bootstrap";
    pub const FETCH_CONTAINER: &str = "fetch";
    pub const PULUMI_CONTAINER: &str = "pulumi";
    pub const GRPC_PORT_NAME: &str = "grpc";
    pub const GRPC_PORT: i32 = 50051;
    /// Suffix of the StatefulSet and Service made for a Workspace.
    pub const WORKSPACE_SUFFIX: &str = "-workspace";
}

/// The operator's own deployment.
pub mod operator {
    pub const NAMESPACE: &str = "pulumi-kubernetes-operator";
    pub const SERVICE_ACCOUNT: &str = "controller-manager";
    /// Pod label selecting the operator (the kustomize manifests' selector).
    pub const POD_LABEL: (&str, &str) = ("control-plane", "controller-manager");
    /// Port of the Program artifact server.
    pub const FILESERVER_PORT: i32 = 9090;
    pub const FILESERVER_PORT_NAME: &str = "http-fileserver";
}

/// Flux's source-controller, as its default manifests deploy it.
pub mod flux {
    pub const NAMESPACE: &str = "flux-system";
    pub const SOURCE_CONTROLLER_LABEL: (&str, &str) = ("app", "source-controller");
    pub const ARTIFACT_PORT_NAME: &str = "http";
    pub const ARTIFACT_PORT: i32 = 9090;
}

/// An RFC 1123 label, as namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
