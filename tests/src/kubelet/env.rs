//! Container environment as the kubelet computes it: `envFrom` sources first, then `env` in
//! order, each value `$(VAR)`-expanded against what is defined so far; `fieldRef`,
//! `resourceFieldRef`, `secretKeyRef` and `configMapKeyRef` resolved. Also the `$(VAR)` expansion
//! of `command` and `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a container's configuration cannot be made (the kubelet's CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {0}")]
    FieldPath(String),
    #[error("unsupported resourceFieldRef {0}")]
    Resource(String),
    #[error("invalid quantity {0}")]
    Quantity(String),
}

/// The Secrets and ConfigMaps a pod's env may read (key → value, decoded).
#[derive(Default, Debug, Clone)]
pub struct Sources {
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Node facts that env resolution needs.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub host_ip: String,
    pub pod_ip: String,
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory: i64,
}

/// Expands `$(NAME)` references; `$$` is a literal `$`; undefined references stay as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in definition order (later entries override earlier ones).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    node: &NodeFacts,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = base.to_vec();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(name, _)| *name != k);
        vars.push((k, v));
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => data
                    .iter()
                    .for_each(|(k, v)| set(&mut vars, format!("{prefix}{k}"), v.clone())),
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => data
                    .iter()
                    .for_each(|(k, v)| set(&mut vars, format!("{prefix}{k}"), v.clone())),
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        }
    }

    for e in container.env.iter().flatten() {
        let value = if let Some(source) = &e.value_from {
            if let Some(f) = &source.field_ref {
                Some(field_value(pod, &f.field_path, node)?)
            } else if let Some(r) = &source.resource_field_ref {
                let target = match &r.container_name {
                    Some(n) if !n.is_empty() => all_containers(pod)
                        .find(|c| &c.name == n)
                        .ok_or_else(|| ConfigError::Resource(format!("container {n}")))?,
                    _ => container,
                };
                Some(resource_value(
                    target,
                    &r.resource,
                    r.divisor.as_ref(),
                    node,
                )?)
            } else if let Some(r) = &source.secret_key_ref {
                match sources.secrets.get(&r.name).map(|d| d.get(&r.key)) {
                    Some(Some(v)) => Some(v.clone()),
                    _ if r.optional == Some(true) => None,
                    None => return Err(ConfigError::SecretNotFound(r.name.clone())),
                    Some(None) => {
                        return Err(ConfigError::SecretKey {
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        });
                    }
                }
            } else if let Some(r) = &source.config_map_key_ref {
                match sources.config_maps.get(&r.name).map(|d| d.get(&r.key)) {
                    Some(Some(v)) => Some(v.clone()),
                    _ if r.optional == Some(true) => None,
                    None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
                    Some(None) => {
                        return Err(ConfigError::ConfigMapKey {
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        });
                    }
                }
            } else {
                Some(String::new())
            }
        } else {
            let snapshot = vars.clone();
            let lookup = move |n: &str| {
                snapshot
                    .iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            };
            Some(expand(e.value.as_deref().unwrap_or(""), &lookup))
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

fn field_value(pod: &Pod, path: &str, node: &NodeFacts) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone(),
        "status.podIP" | "status.podIPs" => node.pod_ip.clone(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(ConfigError::FieldPath(path.to_string()));
            }
        }
    })
}

fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeFacts,
) -> Result<String, ConfigError> {
    let res = container.resources.as_ref();
    let get = |which: &str, name: &str| -> Option<&Quantity> {
        let map = match which {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|m| m.get(name))
    };
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError::Resource(resource.to_string()))?;
    let value = match get(which, name) {
        Some(q) => parse_quantity(&q.0)?,
        // An unset limit is the node's allocatable; an unset request is 0.
        None if which == "limits" => match name {
            "cpu" => node.allocatable_cpu_millis as f64 / 1000.0,
            "memory" => node.allocatable_memory as f64,
            _ => 0.0,
        },
        None if which == "requests" && matches!(name, "cpu" | "memory" | "ephemeral-storage") => {
            0.0
        }
        None => return Err(ConfigError::Resource(resource.to_string())),
    };
    let divisor = match divisor {
        Some(d) => parse_quantity(&d.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(ConfigError::Quantity(format!("divisor {divisor}")));
    }
    // The kubelet rounds up: 250m of CPU with divisor 1 is "1".
    Ok(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as i64
    ))
}

/// Parses a Kubernetes quantity ("100m", "64Mi", "1G", "1.5", "2e3") to a float.
pub fn parse_quantity(s: &str) -> Result<f64, ConfigError> {
    let s = s.trim();
    let bad = || ConfigError::Quantity(s.to_string());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    Ok(base * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("x$(A)y", &lookup), "xalphay");
        assert_eq!(expand("$(MISSING)", &lookup), "$(MISSING)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("$$$(A)", &lookup), "$alpha");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("a$b", &lookup), "a$b");
        assert_eq!(expand("$(EMPTY)-", &lookup), "-");
        assert_eq!(expand("$", &lookup), "$");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m").ok(), Some(0.1));
        assert_eq!(parse_quantity("64Mi").ok(), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G").ok(), Some(1e9));
        assert_eq!(parse_quantity("2e3").ok(), Some(2000.0));
        assert!(parse_quantity("12x").is_err());
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{
                "name": "c",
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                            {"secretRef": {"name": "absent", "optional": true}}],
                "env": [
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                    {"name": "GREETING", "value": "hi $(NAME) in $(CM_zone) $(UNKNOWN)"},
                    {"name": "NAME", "value": "override"}
                ]
            }]}
        }))
        .expect("valid pod")
    }

    #[test]
    fn env_resolves_every_source_kind() {
        let pod = pod();
        let mut sources = Sources::default();
        sources
            .config_maps
            .insert("cm".into(), [("zone".to_string(), "eu".to_string())].into());
        sources.secrets.insert(
            "s".into(),
            [("token".to_string(), "t0k".to_string())].into(),
        );
        let node = NodeFacts {
            host_ip: "10.1.1.1".into(),
            pod_ip: "10.1.1.7".into(),
            allocatable_cpu_millis: 4000,
            allocatable_memory: 1 << 30,
        };
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let env: BTreeMap<_, _> = container_env(&pod, c, &sources, &node, &[])
            .expect("resolves")
            .into_iter()
            .collect();
        assert_eq!(env["NAME"], "override");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.1.1.7");
        assert_eq!(env["CPU"], "1");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["TOKEN"], "t0k");
        assert_eq!(env["CM_zone"], "eu");
        assert_eq!(env["GREETING"], "hi p in eu $(UNKNOWN)");

        sources.secrets.clear();
        assert_eq!(
            container_env(&pod, c, &sources, &node, &[]),
            Err(ConfigError::SecretNotFound("s".into()))
        );
    }
}
