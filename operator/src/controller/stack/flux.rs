//! Flux sources: any kind with `status.artifact` (GitRepository, OCIRepository, Bucket,
//! ExternalArtifact, HelmChart, ...), read as dynamic objects. A watch per kind starts the
//! first time a Stack names that kind; it wakes the Stacks that use a source when the
//! source's artifact revision changes, and only then. The watch keeps a store of the
//! sources, so that a reconcile reads the artifact without a request (hundreds of Stacks on
//! one source would otherwise GET it hundreds of times per revision).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::stack::Stack;
use crate::api::stack_spec::FluxSourceReference;
use crate::controller::runtime::Scope;

/// An artifact, as the fetch container needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub url: String,
    pub digest: String,
    pub revision: String,
}

/// `status.artifact` of a source; a legacy `checksum` (bare sha256 hex) stands in for a
/// missing digest.
pub fn artifact(status: &serde_json::Value) -> Option<Artifact> {
    let a = status.get("artifact")?;
    let url = a.get("url")?.as_str()?.to_string();
    let digest = a
        .get("digest")
        .and_then(|d| d.as_str())
        .or_else(|| a.get("checksum").and_then(|d| d.as_str()))?
        .to_string();
    let revision = a
        .get("revision")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .to_string();
    if url.is_empty() || digest.is_empty() {
        return None;
    }
    Some(Artifact {
        url,
        digest,
        revision,
    })
}

/// The group and version of an `apiVersion` (`source.toolkit.fluxcd.io/v1`).
pub fn group_version(api_version: &str) -> Result<(String, String), String> {
    match api_version.split_once('/') {
        Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => {
            Ok((g.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "apiVersion {api_version:?} is not group/version (e.g. source.toolkit.fluxcd.io/v1)"
        )),
    }
}

/// Whether `stack` uses the source `(group, kind, namespace, name)`.
pub fn references(
    stack: &Stack,
    group: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> bool {
    let Some(src) = stack.spec.0.flux_source.as_ref() else {
        return false;
    };
    let r = &src.source_ref;
    r.kind == kind
        && r.name == name
        && stack.namespace().as_deref() == namespace
        && group_version(&r.api_version).is_ok_and(|(g, _)| g == group)
}

/// The per-kind watches, and where they send the Stacks to wake.
#[derive(Default)]
pub struct Watches {
    started: Mutex<HashSet<(String, String)>>,
    wiring: OnceLock<(mpsc::Sender<ObjectRef<Stack>>, Store<Stack>, Scope)>,
    /// Discovery answers per group/version/kind: a kind's resource does not change while
    /// it is served, and asking on every reconcile costs a request each time.
    resources: Mutex<HashMap<(String, String, String), ApiResource>>,
    /// The sources of each watched kind, keyed by (group, kind).
    stores: Mutex<HashMap<(String, String), Store<DynamicObject>>>,
}

impl Watches {
    /// Called once by the Stack controller before it runs; sources are watched in `scope`'s
    /// namespaces (whatever its label selector: a shard's Stacks may name any source).
    pub fn wire(
        &self,
        trigger: mpsc::Sender<ObjectRef<Stack>>,
        stacks: Store<Stack>,
        scope: Scope,
    ) {
        let _ = self.wiring.set((trigger, stacks, scope));
    }

    /// Makes sure the source's kind is watched; returns its API resource for reading it.
    pub async fn ensure(
        &self,
        client: &Client,
        r: &FluxSourceReference,
    ) -> Result<ApiResource, String> {
        let (group, version) = group_version(&r.api_version)?;
        let rkey = (group.clone(), version.clone(), r.kind.clone());
        let known = self
            .resources
            .lock()
            .ok()
            .and_then(|m| m.get(&rkey).cloned());
        let ar = match known {
            Some(ar) => ar,
            None => {
                let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
                let (ar, _caps) =
                    kube::discovery::pinned_kind(client, &gvk)
                        .await
                        .map_err(|e| {
                            format!(
                                "{}/{} is not served by the cluster: {e}",
                                r.api_version, r.kind
                            )
                        })?;
                if let Ok(mut m) = self.resources.lock() {
                    m.insert(rkey, ar.clone());
                }
                ar
            }
        };
        let key = (group.clone(), r.kind.clone());
        let fresh = self
            .started
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(false);
        if fresh {
            match self.wiring.get() {
                Some((trigger, stacks, scope)) => {
                    info!(group = %group, kind = %r.kind, "watching a new Flux source kind");
                    let writer = reflector::store::Writer::new(ar.clone());
                    if let Ok(mut m) = self.stores.lock() {
                        m.insert(key.clone(), writer.as_reader());
                    }
                    tokio::spawn(watch_kind(
                        client.clone(),
                        scope.clone(),
                        ar.clone(),
                        group,
                        trigger.clone(),
                        stacks.clone(),
                        writer,
                    ));
                }
                None => {
                    // Not wired (a unit test or a one-shot run): nothing to wake.
                    if let Ok(mut s) = self.started.lock() {
                        s.remove(&key);
                    }
                }
            }
        }
        Ok(ar)
    }

    /// The watched copy of a source; `None` when its kind is not watched yet or the watch has
    /// not seen it (the caller then reads it from the API).
    pub fn cached(
        &self,
        ar: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let store = self
            .stores
            .lock()
            .ok()?
            .get(&(ar.group.clone(), ar.kind.clone()))?
            .clone();
        store.get(&ObjectRef::new_with(name, ar.clone()).within(namespace))
    }
}

async fn watch_kind(
    client: Client,
    scope: Scope,
    ar: ApiResource,
    group: String,
    trigger: mpsc::Sender<ObjectRef<Stack>>,
    stacks: Store<Stack>,
    writer: reflector::store::Writer<DynamicObject>,
) {
    let apis = scope.apis_with(|ns| match ns {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    });
    let mut revisions: HashMap<(String, String), String> = HashMap::new();
    // The store is written before the object comes out of the stream, so the Stacks woken
    // below read the new revision from it.
    let mut events = scope
        .watch(apis, watcher::Config::default(), Some(writer.as_reader()))
        .modify(crate::controller::runtime::cache::slim)
        .reflect(writer)
        .applied_objects()
        .boxed();
    while let Some(ev) = events.next().await {
        let obj = match ev {
            Ok(o) => o,
            Err(e) => {
                warn!(kind = %ar.kind, error = %e, "Flux source watch error");
                continue;
            }
        };
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let Some(a) = artifact(&obj.data["status"]) else {
            continue;
        };
        // Only a new revision (or the first artifact) matters; status churn does not.
        let key = (ns.clone(), name.clone());
        if revisions.get(&key) == Some(&a.revision) {
            continue;
        }
        revisions.insert(key, a.revision.clone());
        for s in stacks.state() {
            if references(&s, &group, &ar.kind, Some(&ns), &name) {
                let _ = trigger.send(ObjectRef::from_obj(s.as_ref())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::StackSpecV1;
    use crate::api::stack_spec::{FluxSource, StackSpec};
    use serde_json::json;

    #[test]
    fn artifacts_are_read_from_status_with_legacy_checksums() {
        let st = json!({"artifact": {"url": "http://sc/x.tar.gz", "digest": "sha256:ab", "revision": "main@sha1:12"}});
        assert_eq!(
            artifact(&st),
            Some(Artifact {
                url: "http://sc/x.tar.gz".into(),
                digest: "sha256:ab".into(),
                revision: "main@sha1:12".into()
            })
        );
        let legacy =
            json!({"artifact": {"url": "http://sc/x.tar.gz", "checksum": "ab12", "revision": "r"}});
        assert_eq!(artifact(&legacy).map(|a| a.digest), Some("ab12".into()));
        assert_eq!(artifact(&json!({"conditions": []})), None);
        assert_eq!(artifact(&json!({"artifact": {"url": ""}})), None);
    }

    #[test]
    fn api_versions_split_into_group_and_version() {
        assert_eq!(
            group_version("source.toolkit.fluxcd.io/v1"),
            Ok(("source.toolkit.fluxcd.io".into(), "v1".into()))
        );
        assert!(group_version("v1").is_err());
        assert!(group_version("a/b/c").is_err());
    }

    #[test]
    fn stacks_match_sources_by_group_kind_namespace_and_name() {
        let mut s = Stack::new(
            "app",
            StackSpecV1(StackSpec {
                stack: "dev".into(),
                flux_source: Some(FluxSource {
                    source_ref: FluxSourceReference {
                        api_version: "source.toolkit.fluxcd.io/v1beta2".into(),
                        kind: "GitRepository".into(),
                        name: "repo".into(),
                    },
                    dir: None,
                }),
                ..Default::default()
            }),
        );
        s.metadata.namespace = Some("ns".into());
        assert!(references(
            &s,
            "source.toolkit.fluxcd.io",
            "GitRepository",
            Some("ns"),
            "repo"
        ));
        assert!(!references(
            &s,
            "source.toolkit.fluxcd.io",
            "GitRepository",
            Some("other"),
            "repo"
        ));
        assert!(!references(
            &s,
            "source.toolkit.fluxcd.io",
            "OCIRepository",
            Some("ns"),
            "repo"
        ));
    }
}
