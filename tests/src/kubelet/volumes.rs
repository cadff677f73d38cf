//! Pod volumes on the host: `emptyDir` (mode 0777, as the kubelet makes it), `secret`,
//! `configMap`, `downwardAPI` and `projected` (service-account tokens from TokenRequest bound
//! to the pod, ConfigMaps, Secrets, downward API) written as files. Other kinds are refused.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::env::NodeFacts;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0}: {1} volumes are not supported by the test kubelet")]
    Unsupported(String, String),
    /// Retryable: the kubelet keeps the pod in ContainerCreating until it appears.
    #[error("MountVolume.SetUp failed for volume \"{volume}\": {what} not found")]
    Missing { volume: String, what: String },
    #[error("volume {volume}: {source}")]
    Api {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("volume {0}: cannot write {1}")]
    Write(String, PathBuf, #[source] std::io::Error),
    #[error("volume {0}: unsupported downward API field {1}")]
    Field(String, String),
}

impl VolumeError {
    pub fn retryable(&self) -> bool {
        matches!(self, VolumeError::Missing { .. } | VolumeError::Api { .. })
    }
}

/// Host directories of the pod's volumes, by volume name.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    dir: &Path,
    node: &NodeFacts,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = dir.join(&v.name);
        let w = Writer {
            volume: v.name.clone(),
            root: path.clone(),
        };
        w.mkdir(&path, 0o777)?;
        if v.empty_dir.is_some() {
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            match secret(client, &ns, &name, &v.name).await? {
                Some(data) => w.write_keys(&data, s.items.as_deref(), s.default_mode)?,
                None if s.optional == Some(true) => {}
                None => {
                    return Err(VolumeError::Missing {
                        volume: v.name.clone(),
                        what: format!("secret \"{name}\""),
                    });
                }
            }
        } else if let Some(c) = &v.config_map {
            match config_map(client, &ns, &c.name, &v.name).await? {
                Some(data) => w.write_keys(&data, c.items.as_deref(), c.default_mode)?,
                None if c.optional == Some(true) => {}
                None => {
                    return Err(VolumeError::Missing {
                        volume: v.name.clone(),
                        what: format!("configmap \"{}\"", c.name),
                    });
                }
            }
        } else if let Some(d) = &v.downward_api {
            for item in d.items.iter().flatten() {
                let value = downward(
                    pod,
                    item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                    node,
                )
                .ok_or_else(|| VolumeError::Field(v.name.clone(), item.path.clone()))?;
                w.file(&item.path, value.as_bytes(), item.mode.or(d.default_mode))?;
            }
        } else if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let token = token(
                        client,
                        pod,
                        t.audience.clone(),
                        t.expiration_seconds,
                        &v.name,
                    )
                    .await?;
                    w.file(&t.path, token.as_bytes(), p.default_mode)?;
                }
                if let Some(c) = &src.config_map {
                    match config_map(client, &ns, &c.name, &v.name).await? {
                        Some(data) => w.write_keys(&data, c.items.as_deref(), p.default_mode)?,
                        None if c.optional == Some(true) => {}
                        None => {
                            return Err(VolumeError::Missing {
                                volume: v.name.clone(),
                                what: format!("configmap \"{}\"", c.name),
                            });
                        }
                    }
                }
                if let Some(s) = &src.secret {
                    match secret(client, &ns, &s.name, &v.name).await? {
                        Some(data) => w.write_keys(&data, s.items.as_deref(), p.default_mode)?,
                        None if s.optional == Some(true) => {}
                        None => {
                            return Err(VolumeError::Missing {
                                volume: v.name.clone(),
                                what: format!("secret \"{}\"", s.name),
                            });
                        }
                    }
                }
                if let Some(d) = &src.downward_api {
                    for item in d.items.iter().flatten() {
                        let value = downward(
                            pod,
                            item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                            node,
                        )
                        .ok_or_else(|| VolumeError::Field(v.name.clone(), item.path.clone()))?;
                        w.file(&item.path, value.as_bytes(), item.mode.or(p.default_mode))?;
                    }
                }
            }
        } else {
            let kind = serde_json::to_value(v)
                .ok()
                .and_then(|j| {
                    j.as_object()
                        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                })
                .unwrap_or_else(|| "unknown".into());
            return Err(VolumeError::Unsupported(v.name.clone(), kind));
        }
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

struct Writer {
    volume: String,
    root: PathBuf,
}

impl Writer {
    fn err(&self, p: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
        let p = p.to_path_buf();
        move |e| VolumeError::Write(self.volume.clone(), p, e)
    }

    fn mkdir(&self, p: &Path, mode: u32) -> Result<(), VolumeError> {
        std::fs::create_dir_all(p).map_err(self.err(p))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(self.err(p))
    }

    fn file(&self, rel: &str, body: &[u8], mode: Option<i32>) -> Result<(), VolumeError> {
        // Paths come from the pod spec, which the apiserver validated (relative, no `..`).
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(self.err(parent))?;
        }
        std::fs::write(&p, body).map_err(self.err(&p))?;
        let mode = mode.unwrap_or(0o644) as u32;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(self.err(&p))
    }

    fn write_keys(
        &self,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&[KeyToPath]>,
        mode: Option<i32>,
    ) -> Result<(), VolumeError> {
        match items {
            Some(items) => {
                for i in items {
                    if let Some(v) = data.get(&i.key) {
                        self.file(&i.path, v, i.mode.or(mode))?;
                    }
                }
            }
            None => {
                for (k, v) in data {
                    self.file(k, v, mode)?;
                }
            }
        }
        Ok(())
    }
}

async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
    volume: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.into(),
            source,
        })?;
    Ok(s.map(|s| {
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        out
    }))
}

async fn config_map(
    client: &Client,
    ns: &str,
    name: &str,
    volume: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let c = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.into(),
            source,
        })?;
    Ok(c.map(|c| {
        let mut out: BTreeMap<String, Vec<u8>> = c
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in c.binary_data.unwrap_or_default() {
            out.insert(k, v.0);
        }
        out
    }))
}

/// A token for the pod's service account, bound to the pod (as the kubelet requests it).
async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
    volume: &str,
) -> Result<String, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let audiences: Vec<String> = audience.into_iter().filter(|a| !a.is_empty()).collect();
    let req: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": expiration.unwrap_or(3607),
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                    "name": pod.metadata.name, "uid": pod.metadata.uid}},
    }))
    .map_err(|e| VolumeError::Api {
        volume: volume.into(),
        source: kube::Error::SerdeError(e),
    })?;
    let out = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|source| VolumeError::Api {
            volume: volume.into(),
            source,
        })?;
    Ok(out.status.map(|s| s.token).unwrap_or_default())
}

fn downward(pod: &Pod, field: Option<&str>, node: &NodeFacts) -> Option<String> {
    let meta = &pod.metadata;
    let map_text = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{v}\"\n"))
            .collect::<String>()
    };
    Some(match field? {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&meta.labels),
        "metadata.annotations" => map_text(&meta.annotations),
        "status.podIP" => node.pod_ip.clone(),
        "status.hostIP" => node.host_ip.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone()?,
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone()?,
        _ => return None,
    })
}

/// Decoded form used by env resolution: Secrets and ConfigMaps the pod's containers name.
pub async fn env_sources(client: &Client, pod: &Pod) -> super::env::Sources {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut sources = super::env::Sources::default();
    let containers = pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    });
    let mut secrets = Vec::new();
    let mut maps = Vec::new();
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.secret_key_ref {
                    secrets.push(r.name.clone());
                }
                if let Some(r) = &v.config_map_key_ref {
                    maps.push(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                secrets.push(r.name.clone());
            }
            if let Some(r) = &f.config_map_ref {
                maps.push(r.name.clone());
            }
        }
    }
    let text = |m: BTreeMap<String, Vec<u8>>| {
        m.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    for name in secrets {
        if let Ok(Some(d)) = secret(client, &ns, &name, "env").await {
            sources.secrets.insert(name, text(d));
        }
    }
    for name in maps {
        if let Ok(Some(d)) = config_map(client, &ns, &name, "env").await {
            sources.config_maps.insert(name, text(d));
        }
    }
    sources
}
