//! What the controllers remember between reconciles so that a reconcile which changes nothing
//! sends nothing. The API server is the scarce resource of an operator with hundreds of
//! Stacks: a server-side apply costs it a full structured merge even when the result is
//! unchanged, and every Stack reconcile used to send half a dozen of them. Here:
//!
//! - `watched`: watch-fed stores of the objects the controllers own, read instead of GETs
//!   (each controller's context holds its own).
//! - `Applied`: the last body each object was applied with, and the generation and uid the
//!   server answered. An apply is skipped only while the cached object still has that uid and
//!   generation, so a spec edited by someone else (a new generation), a deleted object (a new
//!   uid) or a restart of the operator (an empty memo) all lead to a real apply.
//! - `Statuses`: the last status each object was given, so an identical status is not sent
//!   again; a cache that trails our own write never hides a needed one (see `unchanged`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::workspace::Workspace;

/// Watches `K` in `scope`, keeps what `trim` leaves of each object in a store published as `slot`, and
/// returns the touched objects (deletions included) for a controller to be triggered by.
/// Objects reach the store before the stream, so a reconcile it triggers reads them fresh.
pub fn watched<K>(
    client: &kube::Client,
    scope: &super::Scope,
    config: watcher::Config,
    trim: fn(&mut K),
    slot: &OnceLock<Store<K>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: super::scope::Watched,
{
    let (reader, writer) = reflector::store();
    let _ = slot.set(reader.clone());
    scope
        .watch(scope.apis::<K>(client), config, Some(reader))
        .modify(trim)
        .reflect(writer)
        .touched_objects()
}

/// Passes a watch's events through, calling `gone` with each object the watch reports
/// deleted: memos keyed by an object must not outlive it, however it went (a reconcile may
/// never see an object the garbage collector removed).
pub fn on_delete<K, S>(
    events: S,
    gone: impl Fn(&K) + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Send,
{
    events.inspect(move |ev| {
        if let Ok(watcher::Event::Delete(obj)) = ev {
            gone(obj);
        }
    })
}

/// The cached copy of `name` in `ns`, if the store runs.
pub fn cached<K>(store: &OnceLock<Store<K>>, ns: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get()?.get(&ObjectRef::new(name).within(ns))
}

/// What no reconcile reads, dropped before an object enters a store: the managed fields are
/// often the larger part of an object, and kubectl's last-applied annotation a second copy
/// of it.
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A pod as the Workspace controller reads it: metadata and status (its spec is the
/// StatefulSet's template, which the controller wrote itself).
pub fn slim_pod(pod: &mut Pod) {
    slim(pod);
    pod.spec = None;
}

/// A StatefulSet as the Workspace controller reads it: identity, generation and rollout
/// status; its pod template is what the last apply sent.
pub fn slim_statefulset(sts: &mut StatefulSet) {
    slim(sts);
    if let Some(spec) = sts.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
}

/// A Workspace as the Stack controller reads it: identity, generation and status (the spec
/// is what the Stack controller applied).
pub fn slim_workspace(ws: &mut Workspace) {
    slim(ws);
    ws.spec = Default::default();
}

fn digest<T: Serialize>(v: &T) -> Option<u64> {
    let bytes = serde_json::to_vec(v).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Clone)]
struct Seen {
    body: u64,
    uid: String,
    generation: Option<i64>,
}

impl Seen {
    /// Whether `current` is still the object this body was applied to, unchanged in spec.
    fn still_applied<K: Resource>(&self, body: u64, current: &K) -> bool {
        self.body == body
            && current.uid().as_deref() == Some(self.uid.as_str())
            && current.meta().generation == self.generation
            && current.meta().deletion_timestamp.is_none()
    }
}

#[derive(Default)]
pub struct Applied {
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Applied {
    /// Server-side apply of `obj`, unless the same body was applied before and `current` (the
    /// cached object) shows nobody changed its spec since; then `current` is the result.
    pub async fn apply<K>(
        &self,
        api: &Api<K>,
        namespace: &str,
        name: &str,
        manager: &str,
        obj: &K,
        current: Option<&K>,
    ) -> Result<K, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let key = Key {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let body = digest(obj);
        if let (Some(body), Some(current)) = (body, current) {
            let seen = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
            if seen.is_some_and(|seen| seen.still_applied(body, current)) {
                return Ok(current.clone());
            }
        }
        let result = crate::controller::apply(api, name, manager, obj).await?;
        if let (Some(body), Ok(mut m)) = (body, self.seen.lock()) {
            m.insert(
                key,
                Seen {
                    body,
                    uid: result.uid().unwrap_or_default(),
                    generation: result.meta().generation,
                },
            );
        }
        Ok(result)
    }

    /// Forgets a deleted object.
    pub fn forget<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.remove(&Key {
                kind: K::kind(&()).into_owned(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
    }
}

/// The last status body written per object uid.
#[derive(Default)]
pub struct Statuses {
    written: Mutex<HashMap<String, u64>>,
}

impl Statuses {
    /// Whether writing `new` would change nothing: the last status this process wrote for the
    /// object was the same or, before any write, the object we reconcile carries it. The cache
    /// can trail our own writes, so once we have written, it is not what decides.
    pub fn unchanged<T: Serialize>(&self, uid: &str, cached: &T, new: &T) -> bool {
        let (Some(c), Some(n)) = (normalized(cached), normalized(new)) else {
            return false;
        };
        let last = self.written.lock().ok().and_then(|m| m.get(uid).copied());
        match last {
            // This process is the status's only writer: what it wrote last is on the server,
            // whatever a trailing cache still shows.
            Some(h) => Some(h) == digest(&n),
            None => c == n,
        }
    }

    pub fn record<T: Serialize>(&self, uid: &str, new: &T) {
        if let (Some(n), Ok(mut m)) = (normalized(new), self.written.lock())
            && let Some(h) = digest(&n)
        {
            m.insert(uid.to_string(), h);
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.written.lock() {
            m.remove(uid);
        }
    }
}

/// JSON without nulls: how the server stores what an apply sent.
fn normalized<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    let mut j = serde_json::to_value(v).ok()?;
    crate::controller::prune_nulls(&mut j);
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    #[test]
    fn an_apply_is_skipped_only_for_the_same_body_on_the_same_unchanged_object() {
        let mut sts = StatefulSet::default();
        sts.metadata.uid = Some("u1".into());
        sts.metadata.generation = Some(3);
        let seen = Seen {
            body: 7,
            uid: "u1".into(),
            generation: Some(3),
        };
        assert!(seen.still_applied(7, &sts));
        // Our body changed (a new source).
        assert!(!seen.still_applied(8, &sts));
        // Someone edited the spec.
        sts.metadata.generation = Some(4);
        assert!(!seen.still_applied(7, &sts));
        // Deleted and created again under the same name.
        sts.metadata.generation = Some(3);
        sts.metadata.uid = Some("u2".into());
        assert!(!seen.still_applied(7, &sts));
        // Being deleted: apply, so the error (or the new object) is seen.
        sts.metadata.uid = Some("u1".into());
        sts.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!seen.still_applied(7, &sts));
    }

    #[tokio::test]
    async fn deleted_objects_are_reported_so_their_memos_can_go() {
        let mut gone_sts = StatefulSet::default();
        gone_sts.metadata.name = Some("gone".into());
        let mut kept = StatefulSet::default();
        kept.metadata.name = Some("kept".into());
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Apply(kept.clone())),
            Ok(watcher::Event::Delete(gone_sts)),
            Ok(watcher::Event::Apply(kept)),
        ]);
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        let passed: Vec<_> = on_delete(events, move |s: &StatefulSet| {
            log.lock().unwrap().push(s.name_any());
        })
        .collect()
        .await;
        assert_eq!(passed.len(), 3, "every event passes through");
        assert_eq!(*seen.lock().unwrap(), vec!["gone".to_string()]);
    }

    #[test]
    fn slim_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut sts = StatefulSet::default();
        sts.metadata.managed_fields = Some(vec![Default::default()]);
        sts.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
                ("keep".to_string(), "me".to_string()),
            ]
            .into(),
        );
        slim(&mut sts);
        assert!(sts.metadata.managed_fields.is_none());
        assert_eq!(
            sts.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            vec!["keep"]
        );
    }

    #[test]
    fn a_status_is_unchanged_only_when_the_cache_and_the_last_write_agree() {
        let s = Statuses::default();
        let a = json!({"phase": "a", "x": null});
        let a2 = json!({"phase": "a"});
        let b = json!({"phase": "b"});
        // Nothing written yet: the cached object decides.
        assert!(s.unchanged("u", &a, &a2));
        assert!(!s.unchanged("u", &a, &b));
        // We wrote b; a cache still showing a must not hide a write of a, nor cause a second
        // write of b.
        s.record("u", &b);
        assert!(!s.unchanged("u", &a, &a));
        assert!(s.unchanged("u", &b, &b));
        assert!(s.unchanged("u", &a, &b));
        s.forget("u");
        assert!(s.unchanged("u", &a, &a));
    }
}
