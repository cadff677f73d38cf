//! While an operation runs, its workspace pod is marked as not to be evicted by the node
//! autoscalers (the cluster-autoscaler's and Karpenter's annotations): an eviction mid-`up`
//! interrupts Pulumi and can leave pending operations behind (PKO#1308). The marks are taken
//! off when the operation ends, and by the next operator when it finds the run cut off.
//!
//! Each Update marks the pod under a field manager of its own (server-side apply): two
//! Updates on one pod share the annotations, and the first to end does not unmark the pod
//! under the other. An annotation the pod already carries from its template (a user who never
//! wants it evicted) is owned by its creator too, so unmarking never removes it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::names::field_manager;

/// The annotations that keep a pod in place, and their values.
pub const ANNOTATIONS: [(&str, &str); 2] = [
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    ("karpenter.sh/do-not-disrupt", "true"),
];

/// The field manager that marks a pod for `update`. Managers are at most 128 characters; a
/// longer Update name is shortened to a digest.
pub fn manager(update: &str) -> String {
    let name = format!("{}/{update}", field_manager::UPDATE_GUARD);
    if name.len() <= 128 {
        return name;
    }
    format!(
        "{}/{}",
        field_manager::UPDATE_GUARD,
        crate::controller::short_digest(update.as_bytes())
    )
}

/// The apply body: the annotations when `on`; when not, nothing at all, so that this manager
/// owns no field and the API server drops it from the pod's managed fields (an empty
/// `annotations` would stay owned).
pub fn body(pod: &str, on: bool) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod},
    });
    if on {
        let annotations: serde_json::Map<String, serde_json::Value> = ANNOTATIONS
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        body["metadata"]["annotations"] = annotations.into();
    }
    body
}

/// Marks (`on`) or unmarks the pod for `update`. A pod that is gone needs neither: the API
/// server takes an apply to a missing pod for a create, which it refuses as invalid (422), or
/// answers 404; both are taken as done.
pub async fn set(api: &Api<Pod>, pod: &str, update: &str, on: bool) -> Result<(), kube::Error> {
    let params = PatchParams::apply(&manager(update)).force();
    match api.patch(pod, &params, &Patch::Apply(body(pod, on))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The Update (as its manager names it) that holds `pod` marked, if one does: the pod's
/// managed fields, as read from the API server (the controllers' caches drop them).
pub fn holder(pod: &Pod) -> Option<String> {
    let prefix = format!("{}/", field_manager::UPDATE_GUARD);
    pod.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .find_map(|m| m.strip_prefix(&prefix).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_update_marks_under_its_own_manager_of_at_most_128_characters() {
        assert_eq!(
            manager("app-5f7c9"),
            "pulumi-kubernetes-operator/update-guard/app-5f7c9"
        );
        assert_ne!(manager("a"), manager("b"));
        let long = "u".repeat(200);
        let m = manager(&long);
        assert!(m.len() <= 128, "{m}");
        assert_ne!(m, manager(&"v".repeat(200)));
    }

    #[test]
    fn marking_sets_both_autoscalers_annotations_and_unmarking_owns_none() {
        let on = body("ws-0", true);
        assert_eq!(
            on["metadata"]["annotations"],
            json!({
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                "karpenter.sh/do-not-disrupt": "true",
            })
        );
        assert_eq!(on["metadata"]["name"], "ws-0");
        assert_eq!(
            body("ws-0", false),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ws-0"}})
        );
        // Only metadata: an apply that names no spec field owns none.
        assert!(on.get("spec").is_none());
    }

    #[test]
    fn the_update_holding_a_pod_is_read_from_its_managers() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "ws-0", "managedFields": [
            {"manager": "kubelet", "operation": "Update"},
            {"manager": "pulumi-kubernetes-operator/update-guard/app-1a2b", "operation": "Apply"},
        ]}}))
        .expect("pod");
        assert_eq!(holder(&pod).as_deref(), Some("app-1a2b"));
        let free: Pod = serde_json::from_value(json!({"metadata": {"name": "ws-0"}})).expect("pod");
        assert_eq!(holder(&free), None);
    }
}
