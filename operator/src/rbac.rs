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
const OWN: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const STATUS: &[&str] = &["get", "patch", "update"];
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
        &["get", "list", "watch", "update", "patch"],
        "reconcile Stacks; add and remove the finalizer",
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
        "set ownerReferences with blockOwnerDeletion to Stacks",
    ),
    cluster(
        "pulumi.com",
        "programs",
        WATCH,
        "serve Programs as artifacts",
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
        OWN,
        "the Stack controller applies Workspaces; reclaim policy deletes them",
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
        "own Workspaces' children with blockOwnerDeletion",
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
        OWN,
        "create Updates, manage their finalizer, delete expired ones",
    ),
    cluster(
        "auto.pulumi.com",
        "updates/status",
        STATUS,
        "write Update status",
    ),
    cluster(
        "auto.pulumi.com",
        "updates/finalizers",
        FINALIZERS,
        "own outputs Secrets with blockOwnerDeletion",
    ),
    cluster("apps", "statefulsets", OWN, "the workspace StatefulSet"),
    cluster("", "services", OWN, "the workspace Service"),
    cluster(
        "",
        "pods",
        &["get", "list", "watch", "patch"],
        "read the workspace pod's IP and fetch status; mark it initialized",
    ),
    cluster(
        "",
        "secrets",
        &["get", "list", "watch", "create"],
        "read git credentials and outputs; create the outputs Secret",
    ),
    cluster(
        "",
        "events",
        &["create", "patch"],
        "record events (core API, for kubectl describe)",
    ),
    cluster(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "record events (events.k8s.io API)",
    ),
    cluster(
        "authentication.k8s.io",
        "tokenreviews",
        &["create"],
        "authenticate scrapers of the metrics endpoint",
    ),
    cluster(
        "authorization.k8s.io",
        "subjectaccessreviews",
        &["create"],
        "authorize scrapers of the metrics endpoint",
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
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
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
