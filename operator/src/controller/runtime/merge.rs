//! Strategic merge of JSON documents, the way `kubectl patch --type strategic` merges: objects
//! recursively, lists of named things element by element (by their merge key), other lists
//! replaced whole, `null` deleting a field, and `$patch: delete` deleting a list element.
//!
//! Used for the user's templates: a Workspace's `podTemplate` over the generated pod, a Stack's
//! `workspaceTemplate` over the generated Workspace, its `updateTemplate` over each Update.

use serde_json::{Map, Value};

/// Merge keys of a document's lists, by path: `a.b[].c` is the list `c` inside the elements of
/// list `b` inside object `a`.
pub type MergeKeys = &'static [(&'static str, &'static str)];

/// A pod spec's named lists (Kubernetes' `patchMergeKey` tags).
const POD_SPEC: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("containers[].env", "name"),
    ("initContainers[].env", "name"),
    ("containers[].ports", "containerPort"),
    ("initContainers[].ports", "containerPort"),
    ("containers[].volumeMounts", "mountPath"),
    ("initContainers[].volumeMounts", "mountPath"),
    ("containers[].volumeDevices", "devicePath"),
    ("initContainers[].volumeDevices", "devicePath"),
    ("volumes", "name"),
    ("imagePullSecrets", "name"),
    ("hostAliases", "ip"),
    ("topologySpreadConstraints", "topologyKey"),
    ("resourceClaims", "name"),
    ("schedulingGates", "name"),
];

/// Merge keys for a pod template (`metadata` + `spec`).
pub fn pod_template_key(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("spec.")?;
    POD_SPEC.iter().find(|(p, _)| *p == rest).map(|(_, k)| *k)
}

/// Merge keys for a Workspace (`metadata` + `spec`), its pod template included.
pub fn workspace_key(path: &str) -> Option<&'static str> {
    match path {
        "spec.env" => Some("name"),
        "spec.stacks" => Some("name"),
        "spec.stacks[].config" => Some("key"),
        _ => pod_template_key(path.strip_prefix("spec.podTemplate.")?),
    }
}

/// Updates have no named lists.
pub fn update_key(_path: &str) -> Option<&'static str> {
    None
}

/// Merges `patch` into `base`.
pub fn merge(base: &mut Value, patch: &Value, keys: fn(&str) -> Option<&'static str>) {
    merge_at(base, patch, "", keys);
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn merge_at(base: &mut Value, patch: &Value, path: &str, keys: fn(&str) -> Option<&'static str>) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (field, pv) in p {
                if field.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    b.remove(field);
                    continue;
                }
                let child = join(path, field);
                match b.get_mut(field) {
                    Some(bv) => merge_at(bv, pv, &child, keys),
                    None => {
                        let mut fresh = empty_like(pv);
                        merge_at(&mut fresh, pv, &child, keys);
                        b.insert(field.clone(), fresh);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => match keys(path) {
            Some(key) => merge_list(b, p, path, key, keys),
            None => *b = p.iter().map(strip_directives).collect(),
        },
        (b, p) => *b = strip_directives(p),
    }
}

fn empty_like(v: &Value) -> Value {
    match v {
        Value::Object(_) => Value::Object(Map::new()),
        Value::Array(_) => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

fn merge_list(
    base: &mut Vec<Value>,
    patch: &[Value],
    path: &str,
    key: &str,
    keys: fn(&str) -> Option<&'static str>,
) {
    let element_path = format!("{path}[]");
    for item in patch {
        let id = item.get(key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let found = id.and_then(|id| base.iter().position(|b| b.get(key) == Some(id)));
        match (found, delete) {
            (Some(i), true) => {
                base.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_at(&mut base[i], item, &element_path, keys),
            (None, false) => {
                let mut fresh = empty_like(item);
                merge_at(&mut fresh, item, &element_path, keys);
                base.push(fresh);
            }
        }
    }
}

/// A value with its patch directives removed (a new element may carry none into the result).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_keep_the_generated_ones_first() {
        let mut base = json!({
            "metadata": {"labels": {"a": "1"}},
            "spec": {
                "initContainers": [{"name": "bootstrap", "image": "op"}, {"name": "fetch", "image": "f"}],
                "containers": [{
                    "name": "pulumi", "image": "pulumi/pulumi",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "share", "mountPath": "/share"}],
                }],
                "volumes": [{"name": "share", "emptyDir": {}}],
                "tolerations": [{"key": "x"}],
            }
        });
        let patch = json!({
            "metadata": {"labels": {"b": "2"}},
            "spec": {
                "initContainers": [{"name": "extra", "image": "busybox"}, {"name": "fetch", "resources": {"limits": {"cpu": "1"}}}],
                "containers": [
                    {"name": "pulumi", "image": "custom", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                     "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                    {"name": "sidecar", "image": "s"}
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "tolerations": [{"key": "y"}],
                "nodeSelector": {"disk": "ssd"},
            }
        });
        merge(&mut base, &patch, pod_template_key);
        let names: Vec<&str> = base["spec"]["initContainers"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["bootstrap", "fetch", "extra"]);
        assert_eq!(base["spec"]["initContainers"][1]["image"], "f");
        assert_eq!(
            base["spec"]["initContainers"][1]["resources"]["limits"]["cpu"],
            "1"
        );
        let pulumi = &base["spec"]["containers"][0];
        assert_eq!(pulumi["image"], "custom");
        assert_eq!(
            pulumi["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(pulumi["volumeMounts"].as_array().map(Vec::len), Some(2));
        assert_eq!(base["spec"]["containers"][1]["name"], "sidecar");
        assert_eq!(base["spec"]["volumes"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            base["spec"]["tolerations"],
            json!([{"key": "y"}]),
            "no merge key: replaced"
        );
        assert_eq!(base["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn null_deletes_a_field_and_patch_delete_removes_an_element() {
        let mut base = json!({"spec": {"env": [{"name": "A"}, {"name": "B"}], "image": "x", "stacks": [
            {"name": "dev", "config": [{"key": "a", "value": "1"}]}
        ]}});
        let patch = json!({"spec": {"env": [{"name": "A", "$patch": "delete"}], "image": null, "stacks": [
            {"name": "dev", "config": [{"key": "b", "value": "2"}]}
        ]}});
        merge(&mut base, &patch, workspace_key);
        assert_eq!(base["spec"]["env"], json!([{"name": "B"}]));
        assert!(base["spec"].get("image").is_none());
        assert_eq!(
            base["spec"]["stacks"][0]["config"],
            json!([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        );
    }

    #[test]
    fn a_workspace_template_reaches_into_the_pod_template() {
        let mut base = json!({"spec": {"podTemplate": {"spec": {"containers": [{"name": "pulumi", "image": "a"}]}}}});
        let patch = json!({"spec": {"podTemplate": {"spec": {"containers": [{"name": "pulumi", "workingDir": "/w"}]}}}});
        merge(&mut base, &patch, workspace_key);
        assert_eq!(
            base["spec"]["podTemplate"]["spec"]["containers"],
            json!([{"name": "pulumi", "image": "a", "workingDir": "/w"}])
        );
    }
}
