//! Every Kubernetes API call the operator makes, with why. `config/rbac` must grant exactly
//! these (a test compares the two both ways), so the ClusterRole never drifts from the code the
//! way PKO's Helm and kustomize roles drifted from each other.
//!
//! A controller that starts calling a new verb adds a row here in the same change; the test
//! then fails until `config/rbac` grants it.

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// ClusterRole `pulumi-kubernetes-operator-controller-manager`: Stacks live in any
    /// namespace.
    Cluster,
    /// Role in the operator's own namespace (leader election, its own token).
    OperatorNamespace,
}

#[derive(Debug, Clone, Copy)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Restricts the grant to these object names (empty: any).
    pub resource_names: &'static [&'static str],
    pub why: &'static str,
}

const WATCH: &[&str] = &["get", "list", "watch"];
/// Server-side apply of a status subresource.
const STATUS: &[&str] = &["patch"];
/// Setting `blockOwnerDeletion` on an owner reference needs `update` on the owner's
/// finalizers subresource (OwnerReferencesPermissionEnforcement).
const FINALIZERS: &[&str] = &["update"];

const fn cluster(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    why: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verbs,
        scope: Scope::Cluster,
        resource_names: &[],
        why,
    }
}

pub const API_CALLS: &[ApiCall] = &[
    cluster(
        "pulumi.com",
        "stacks",
        &["get", "list", "watch", "patch"],
        "watch Stacks; add and remove the finalizer; ask a prerequisite Stack to run again",
    ),
    cluster(
        "pulumi.com",
        "stacks/status",
        STATUS,
        "write Stack status (server-side apply)",
    ),
    cluster(
        "pulumi.com",
        "stacks/finalizers",
        FINALIZERS,
        "Updates name their Stack as an owner with blockOwnerDeletion",
    ),
    cluster(
        "pulumi.com",
        "programs",
        WATCH,
        "serve Programs as artifacts; programRef sources",
    ),
    cluster(
        "pulumi.com",
        "programs/status",
        STATUS,
        "publish a Program's artifact",
    ),
    cluster(
        "auto.pulumi.com",
        "workspaces",
        &["get", "list", "watch", "create", "patch", "delete"],
        "the Stack controller applies Workspaces and deletes them per reclaim policy",
    ),
    cluster(
        "auto.pulumi.com",
        "workspaces/status",
        STATUS,
        "write Workspace status",
    ),
    cluster(
        "auto.pulumi.com",
        "workspaces/finalizers",
        FINALIZERS,
        "the StatefulSet, Service and Updates name their Workspace as controller",
    ),
    cluster(
        "auto.pulumi.com",
        "workspaces/rpc",
        &["use"],
        "call the agent in a workspace pod (the agent checks this with a SubjectAccessReview)",
    ),
    cluster(
        "auto.pulumi.com",
        "updates",
        &["get", "list", "watch", "create", "patch", "delete"],
        "create Updates, own their finalizer (apply), delete expired ones",
    ),
    cluster(
        "auto.pulumi.com",
        "updates/status",
        STATUS,
        "write Update status",
    ),
    cluster(
        "apps",
        "statefulsets",
        &["list", "watch", "create", "patch", "delete"],
        "apply the workspace StatefulSet and follow its rollout; delete it to change a field \
         an update cannot (PKO's Migrated)",
    ),
    cluster(
        "",
        "services",
        &["list", "watch", "create", "patch"],
        "apply the workspace Service (watched, so an unchanged one is not applied again)",
    ),
    cluster(
        "",
        "pods",
        &["get", "list", "watch", "patch", "delete"],
        "follow the workspace pod (IP, fetch failures); mark it initialized, and not to be \
         evicted while an update runs; delete it when its configuration cannot change in place; \
         read the operator's own pod for its image when AGENT_IMAGE is unset",
    ),
    cluster(
        "",
        "secrets",
        &["get", "create", "patch"],
        "read git credentials and outputs Secrets; create the outputs Secret; write \
         spec.outputsSecretRef's Secret (server-side apply)",
    ),
    cluster(
        "",
        "events",
        &["create", "patch"],
        "record events and count their repeats (core v1, as PKO's recorder: its RBAC suffices)",
    ),
    cluster(
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        WATCH,
        "fluxSource: read status.artifact",
    ),
    cluster(
        "source.toolkit.fluxcd.io",
        "ocirepositories",
        WATCH,
        "fluxSource: read status.artifact",
    ),
    cluster(
        "source.toolkit.fluxcd.io",
        "buckets",
        WATCH,
        "fluxSource: read status.artifact",
    ),
    cluster(
        "source.toolkit.fluxcd.io",
        "externalartifacts",
        WATCH,
        "fluxSource: read status.artifact",
    ),
    cluster(
        "source.toolkit.fluxcd.io",
        "helmcharts",
        WATCH,
        "fluxSource: read status.artifact",
    ),
    cluster(
        "authentication.k8s.io",
        "tokenreviews",
        &["create"],
        "--metrics-secure: who is scraping (the bearer token's identity)",
    ),
    cluster(
        "authorization.k8s.io",
        "subjectaccessreviews",
        &["create"],
        "--metrics-secure: may that identity get /metrics",
    ),
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::OperatorNamespace,
        resource_names: &[],
        why: "leader election",
    },
    ApiCall {
        group: "",
        resource: "serviceaccounts/token",
        verbs: &["create"],
        scope: Scope::OperatorNamespace,
        resource_names: &["controller-manager"],
        why: "mint its own audience-scoped token (TokenRequest) to present to workspace agents",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_says_why_and_names_real_verbs() {
        const VERBS: &[&str] = &[
            "get", "list", "watch", "create", "update", "patch", "delete", "use",
        ];
        for c in API_CALLS {
            assert!(!c.why.is_empty(), "{}", c.resource);
            for v in c.verbs {
                assert!(VERBS.contains(v), "{} {v}", c.resource);
            }
        }
    }
}
