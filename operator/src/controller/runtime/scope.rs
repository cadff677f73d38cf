//! Which objects this operator reconciles (Flux's tenancy and sharding flags): those of every
//! namespace or of the namespaces named (`--watch-namespace`), and of those, the ones a label
//! selector picks (`--watch-label-selector`, e.g. `sharding.fluxcd.io/key=shard1`).
//!
//! With namespaces named, every watch is one watch per namespace (a Role in each grants it;
//! no cluster-wide list is ever asked for), merged into one stream a reflector can keep: the
//! first listing of every namespace is handed on as one listing, and a namespace listed again
//! later (its watch expired) as the changes it brings, deletions included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::api::names::is_dns_label;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("--watch-namespace {0:?} is not a namespace name (lower-case letters, digits and '-')")]
    Namespace(String),
    #[error(
        "--watch-label-selector {0:?} is not a label selector; write it as kubectl's -l takes it, \
         e.g. sharding.fluxcd.io/key=shard1 or '!sharding.fluxcd.io/key'"
    )]
    Selector(String),
}

/// A kind the controllers watch through a [`Scope`]: namespaced, typed.
pub trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The objects the controllers see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// None: every namespace.
    namespaces: Option<Vec<String>>,
    /// A label selector as the API takes it.
    selector: Option<String>,
}

impl Scope {
    /// `namespaces` empty: every namespace. Each is checked as a namespace name; the selector
    /// is checked for its shape here and by the API server on the first list.
    pub fn new(namespaces: &[String], selector: Option<&str>) -> Result<Scope, ScopeError> {
        let mut names: Vec<String> = Vec::new();
        for ns in namespaces
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            if !is_dns_label(ns) {
                return Err(ScopeError::Namespace(ns.into()));
            }
            if !names.iter().any(|n| n == ns) {
                names.push(ns.to_string());
            }
        }
        let selector = selector.map(str::trim).filter(|s| !s.is_empty());
        if let Some(s) = selector
            && selector_keys(s).is_none()
        {
            return Err(ScopeError::Selector(s.into()));
        }
        Ok(Scope {
            namespaces: (!names.is_empty()).then_some(names),
            selector: selector.map(String::from),
        })
    }

    /// The namespaces watched; None for all.
    pub fn namespaces(&self) -> Option<&[String]> {
        self.namespaces.as_deref()
    }

    pub fn selector(&self) -> Option<&str> {
        self.selector.as_deref()
    }

    /// `config` restricted to the objects of this shard: for the watch of a controller's own
    /// kind.
    pub fn own(&self, config: watcher::Config) -> watcher::Config {
        match (&self.selector, &config.label_selector) {
            (None, _) => config,
            (Some(s), None) => config.labels(s),
            (Some(s), Some(l)) => {
                let both = format!("{l},{s}");
                config.labels(&both)
            }
        }
    }

    /// The labels of `owner` (a Stack) that the objects made for it carry so that the same
    /// shard reconciles them: those the selector names.
    pub fn shard_labels(&self, owner: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let keys = self
            .selector
            .as_deref()
            .and_then(selector_keys)
            .unwrap_or_default();
        owner
            .iter()
            .filter(|(k, _)| keys.iter().any(|key| key == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A short, stable tag of the scope for names that must differ between shards and
    /// tenants of one namespace (the leader-election lease): empty for the whole cluster.
    pub fn tag(&self) -> String {
        if self.namespaces.is_none() && self.selector.is_none() {
            return String::new();
        }
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u32 = 0x811c_9dc5;
        let text = format!(
            "{}|{}",
            self.namespaces.as_deref().unwrap_or_default().join(","),
            self.selector.as_deref().unwrap_or_default()
        );
        for b in text.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    /// One `Api` per watched namespace, or one for all: (namespace, api).
    pub fn apis<K>(&self, client: &Client) -> Vec<(Option<String>, Api<K>)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        self.apis_with(|ns| match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        })
    }

    /// As [`Scope::apis`], the `Api` made by `make` (for dynamic types).
    pub fn apis_with<K>(
        &self,
        make: impl Fn(Option<&str>) -> Api<K>,
    ) -> Vec<(Option<String>, Api<K>)> {
        match &self.namespaces {
            None => vec![(None, make(None))],
            Some(list) => list
                .iter()
                .map(|ns| (Some(ns.clone()), make(Some(ns))))
                .collect(),
        }
    }

    /// The watch events of `K` in scope, as one stream (see the module's comment); `store`,
    /// the reader of the reflector these events feed if any, tells which objects a namespace
    /// listed again no longer holds.
    pub fn watch<K>(
        &self,
        apis: Vec<(Option<String>, Api<K>)>,
        config: watcher::Config,
        store: Option<Store<K>>,
    ) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Clone + Eq + std::hash::Hash,
    {
        if apis.len() == 1 {
            let (_, api) = apis.into_iter().next().expect("one");
            return watcher(api, config).default_backoff().boxed();
        }
        let namespaces: Vec<String> = apis
            .iter()
            .map(|(ns, _)| ns.clone().unwrap_or_default())
            .collect();
        let streams = apis.into_iter().enumerate().map(|(i, (_, api))| {
            watcher(api, config.clone())
                .default_backoff()
                .map(move |ev| (i, ev))
                .boxed()
        });
        merge(stream::select_all(streams), namespaces, store).boxed()
    }
}

/// Merges the watches of several namespaces (`(index, event)`) into the events of one.
fn merge<K, S>(
    events: S,
    namespaces: Vec<String>,
    store: Option<Store<K>>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    S: Stream<Item = (usize, Result<watcher::Event<K>, watcher::Error>)> + Send,
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let mut merger = Merger::new(namespaces, store);
    events.flat_map(move |(i, ev)| stream::iter(merger.step(i, ev)))
}

/// The state of [`merge`].
struct Merger<K: Resource + Clone + 'static>
where
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    namespaces: Vec<String>,
    store: Option<Store<K>>,
    /// Until every namespace is listed: what each holds (by name), and whether its listing is
    /// complete. None once the first listing is handed on.
    first: Option<Vec<(HashMap<String, K>, bool)>>,
    /// A namespace listed again: the names its new listing holds so far.
    relisting: Vec<Option<HashSet<String>>>,
}

impl<K: Resource + Clone + 'static> Merger<K>
where
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    fn new(namespaces: Vec<String>, store: Option<Store<K>>) -> Self {
        let n = namespaces.len();
        Merger {
            namespaces,
            store,
            first: Some((0..n).map(|_| (HashMap::new(), false)).collect()),
            relisting: vec![None; n],
        }
    }

    fn step(
        &mut self,
        i: usize,
        ev: Result<watcher::Event<K>, watcher::Error>,
    ) -> Vec<Result<watcher::Event<K>, watcher::Error>> {
        use watcher::Event::*;
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => return vec![Err(e)],
        };
        if let Some(first) = self.first.as_mut() {
            let (held, listed) = &mut first[i];
            match ev {
                Init => {
                    held.clear();
                    *listed = false;
                }
                InitApply(o) | Apply(o) => {
                    held.insert(o.name_any(), o);
                }
                Delete(o) => {
                    held.remove(&o.name_any());
                }
                InitDone => *listed = true,
            }
            if !first.iter().all(|(_, listed)| *listed) {
                return Vec::new();
            }
            let first = self.first.take().unwrap_or_default();
            let mut out = vec![Ok(Init)];
            out.extend(
                first
                    .into_iter()
                    .flat_map(|(held, _)| held.into_values())
                    .map(|o| Ok(InitApply(o))),
            );
            out.push(Ok(InitDone));
            return out;
        }
        match ev {
            Init => {
                self.relisting[i] = Some(HashSet::new());
                Vec::new()
            }
            InitApply(o) => {
                if let Some(seen) = self.relisting[i].as_mut() {
                    seen.insert(o.name_any());
                }
                vec![Ok(Apply(o))]
            }
            InitDone => {
                let (Some(seen), Some(store)) = (self.relisting[i].take(), self.store.as_ref())
                else {
                    return Vec::new();
                };
                let ns = &self.namespaces[i];
                store
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                    .filter(|o| !seen.contains(&o.name_any()))
                    .map(|o| Ok(Delete(o.as_ref().clone())))
                    .collect()
            }
            ev @ (Apply(_) | Delete(_)) => vec![Ok(ev)],
        }
    }
}

/// The label keys a selector's requirements name (`a=b`, `a!=b`, `a in (x,y)`, `a notin
/// (x)`, `a`, `!a`); None when it is not a selector.
fn selector_keys(selector: &str) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    let mut depth = 0i32;
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    if depth != 0 {
        return None;
    }
    parts.push(&selector[start..]);
    for part in parts {
        let part = part.trim();
        let part = part.strip_prefix('!').unwrap_or(part).trim_start();
        let end = part
            .find(|c: char| c == '=' || c == '!' || c.is_whitespace())
            .unwrap_or(part.len());
        let key = &part[..end];
        let rest = part[end..].trim();
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let rest_ok = rest.is_empty()
            || rest.starts_with('=')
            || rest.starts_with("!=")
            || rest.starts_with("in ")
            || rest.starts_with("in(")
            || rest.starts_with("notin ")
            || rest.starts_with("notin(");
        if !key_ok || !rest_ok {
            return None;
        }
        keys.push(key.to_string());
    }
    Some(keys)
}

#[cfg(test)]
mod tests;
