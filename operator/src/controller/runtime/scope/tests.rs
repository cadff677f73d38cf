use super::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::runtime::reflector;
use watcher::Event::{self, *};

fn cm(ns: &str, name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn names(events: &[Result<Event<ConfigMap>, watcher::Error>]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Ok(Init) => "Init".into(),
            Ok(InitApply(o)) => format!(
                "InitApply {}/{}",
                o.namespace().unwrap_or_default(),
                o.name_any()
            ),
            Ok(InitDone) => "InitDone".into(),
            Ok(Apply(o)) => format!(
                "Apply {}/{}",
                o.namespace().unwrap_or_default(),
                o.name_any()
            ),
            Ok(Delete(o)) => format!(
                "Delete {}/{}",
                o.namespace().unwrap_or_default(),
                o.name_any()
            ),
            Err(e) => format!("Err {e}"),
        })
        .collect()
}

/// A merger feeding a reflector, as the controllers' watches do; what came out, by name.
struct Harness {
    merger: Merger<ConfigMap>,
    writer: reflector::store::Writer<ConfigMap>,
    store: Store<ConfigMap>,
    out: Vec<String>,
}

impl Harness {
    fn new(namespaces: &[&str]) -> Harness {
        let (store, writer) = reflector::store::<ConfigMap>();
        let namespaces = namespaces.iter().map(|n| n.to_string()).collect();
        Harness {
            merger: Merger::new(namespaces, Some(store.clone())),
            writer,
            store,
            out: Vec::new(),
        }
    }

    fn feed(&mut self, i: usize, ev: Event<ConfigMap>) {
        let evs = self.merger.step(i, Ok(ev));
        for e in evs.iter().flatten() {
            self.writer.apply_watcher_event(e);
        }
        self.out.extend(names(&evs));
    }

    fn held(&self) -> Vec<String> {
        let mut held: Vec<String> = self
            .store
            .state()
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect();
        held.sort();
        held
    }
}

#[test]
fn the_first_listing_waits_for_every_namespace_and_is_handed_on_as_one() {
    let mut h = Harness::new(&["a", "b"]);
    h.feed(0, Init);
    h.feed(0, InitApply(cm("a", "one")));
    h.feed(0, InitApply(cm("a", "gone")));
    h.feed(0, InitDone);
    // Changes in a listed namespace while another is still listing are kept, not lost in
    // the store's swap.
    h.feed(0, Apply(cm("a", "two")));
    h.feed(0, Delete(cm("a", "gone")));
    h.feed(1, Init);
    assert!(
        h.out.is_empty(),
        "nothing before every namespace is listed: {:?}",
        h.out
    );
    h.feed(1, InitApply(cm("b", "three")));
    h.feed(1, InitDone);
    assert_eq!(h.out.first().map(String::as_str), Some("Init"));
    assert_eq!(h.out.last().map(String::as_str), Some("InitDone"));
    assert_eq!(h.held(), ["a/one", "a/two", "b/three"]);

    // Afterwards, changes pass; a namespace listed again brings what changed, deletions
    // included, and leaves the other namespace alone.
    h.out.clear();
    h.feed(1, Apply(cm("b", "four")));
    h.feed(0, Init);
    h.feed(0, InitApply(cm("a", "one")));
    h.feed(0, InitApply(cm("a", "five")));
    h.feed(0, InitDone);
    assert_eq!(
        h.out,
        [
            "Apply b/four",
            "Apply a/one",
            "Apply a/five",
            "Delete a/two"
        ]
    );
    assert_eq!(h.held(), ["a/five", "a/one", "b/four", "b/three"]);
}

#[test]
fn a_namespace_listed_again_during_the_first_listing_starts_over() {
    let mut m = Merger::<ConfigMap>::new(vec!["a".into(), "b".into()], None);
    assert!(m.step(0, Ok(InitApply(cm("a", "old")))).is_empty());
    assert!(m.step(0, Ok(InitDone)).is_empty());
    assert!(m.step(0, Ok(Init)).is_empty());
    assert!(m.step(1, Ok(InitDone)).is_empty(), "a is listing again");
    assert!(m.step(0, Ok(InitApply(cm("a", "new")))).is_empty());
    let out = names(&m.step(0, Ok(InitDone)));
    assert_eq!(out, ["Init", "InitApply a/new", "InitDone"]);
}

#[test]
fn namespaces_and_selectors_are_checked() {
    let s = Scope::new(&["team-a,team-b".into(), "team-a".into()], None).expect("valid");
    assert_eq!(
        s.namespaces(),
        Some(&["team-a".to_string(), "team-b".to_string()][..])
    );
    assert_eq!(
        Scope::new(&["Team_A".into()], None),
        Err(ScopeError::Namespace("Team_A".into()))
    );
    for ok in [
        "sharding.fluxcd.io/key=shard1",
        "!sharding.fluxcd.io/key",
        "sharding.fluxcd.io/key in (shard1, shard2),tier!=db",
        "app",
    ] {
        assert!(Scope::new(&[], Some(ok)).is_ok(), "{ok}");
    }
    for bad in ["=x", "a in (x", "a >< b", "a b"] {
        assert_eq!(
            Scope::new(&[], Some(bad)),
            Err(ScopeError::Selector(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(Scope::new(&[" ".into()], Some(" ")), Ok(Scope::default()));
}

#[test]
fn objects_made_for_a_stack_carry_the_labels_the_selector_names() {
    let s = Scope::new(&[], Some("sharding.fluxcd.io/key in (shard1),!canary")).expect("valid");
    let owner: BTreeMap<String, String> = [("sharding.fluxcd.io/key", "shard1"), ("app", "web")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        s.shard_labels(&owner),
        [("sharding.fluxcd.io/key".to_string(), "shard1".to_string())].into()
    );
    assert!(Scope::default().shard_labels(&owner).is_empty());
}

#[test]
fn the_own_watch_adds_the_selector_and_tags_differ_by_scope() {
    let s = Scope::new(&[], Some("shard=a")).expect("valid");
    assert_eq!(
        s.own(watcher::Config::default()).label_selector.as_deref(),
        Some("shard=a")
    );
    assert_eq!(
        s.own(watcher::Config::default().labels("x=y"))
            .label_selector
            .as_deref(),
        Some("x=y,shard=a")
    );
    assert_eq!(
        Scope::default()
            .own(watcher::Config::default())
            .label_selector,
        None
    );
    assert_eq!(Scope::default().tag(), "");
    let b = Scope::new(&[], Some("shard=b")).expect("valid");
    assert_ne!(s.tag(), b.tag());
    assert_eq!(
        s.tag(),
        Scope::new(&[], Some("shard=a")).expect("valid").tag()
    );
    assert_eq!(s.tag().len(), 8);
}
