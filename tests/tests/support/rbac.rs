//! RBAC as sets of single grants, to compare what manifests grant with what the operator
//! calls (`operator::rbac::API_CALLS`).

use std::collections::BTreeSet;

use operator::rbac::{API_CALLS, Scope};
use serde_json::Value;

/// (scope, group, resource, verb, resourceName): one thing a role allows; resourceName empty
/// for any.
pub type Grant = (String, String, String, String, String);

/// What the `rules` of a Role or ClusterRole grant, as `scope`.
pub fn grants(role: &Value, scope: Scope) -> BTreeSet<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let mut names = strings(&rule["resourceNames"]);
        if names.is_empty() {
            names.push(String::new());
        }
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    for n in &names {
                        out.insert((
                            format!("{scope:?}"),
                            g.clone(),
                            r.clone(),
                            v.clone(),
                            n.clone(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// What the operator's calls need, its own service account being `service_account` (the
/// only resource name `API_CALLS` restricts a grant to).
pub fn needed(service_account: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for c in API_CALLS {
        let names: Vec<String> = if c.resource_names.is_empty() {
            vec![String::new()]
        } else {
            c.resource_names
                .iter()
                .map(|n| {
                    if *n == operator::api::names::operator::SERVICE_ACCOUNT {
                        service_account.to_string()
                    } else {
                        n.to_string()
                    }
                })
                .collect()
        };
        for v in c.verbs {
            for n in &names {
                out.insert((
                    format!("{:?}", c.scope),
                    c.group.to_string(),
                    c.resource.to_string(),
                    v.to_string(),
                    n.clone(),
                ));
            }
        }
    }
    out
}

/// Resources the operator calls that are not namespaced: a Role cannot grant them.
const CLUSTER_SCOPED: &[&str] = &["tokenreviews", "subjectaccessreviews"];

/// Of `needed`, what a Role in a watched namespace grants (the calls on namespaced objects
/// that are not in the operator's own namespace only), as scope `Cluster`.
pub fn in_a_namespace(needed: &BTreeSet<Grant>) -> BTreeSet<Grant> {
    let cluster = format!("{:?}", Scope::Cluster);
    needed
        .iter()
        .filter(|g| g.0 == cluster && !CLUSTER_SCOPED.contains(&g.2.as_str()))
        .cloned()
        .collect()
}

/// Fails naming what `granted` lacks and what it grants beyond `needed`.
pub fn assert_exact(granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>, whose: &str) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let extra: Vec<_> = granted.difference(needed).collect();
    assert!(
        missing.is_empty(),
        "{whose}: calls the roles do not grant: {missing:#?}"
    );
    assert!(
        extra.is_empty(),
        "{whose}: grants no call needs (least privilege): {extra:#?}"
    );
}
