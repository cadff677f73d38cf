//! Kubernetes events, as `kubectl describe` shows them, written through the core `v1` API as
//! PKO's (controller-runtime's) recorder writes them: `source.component` the controller's name,
//! a repeat counted in `count` and `lastTimestamp`, and the RBAC PKO's manifests grant (core
//! `events`) is all it needs. `eventTime` and the reporting fields are set too, so readers of
//! `events.k8s.io/v1` see a time and a controller. A repeat of the same event (same
//! object, type, reason and message) within a few minutes is counted on the first one instead
//! of creating another, and the count is sent at most every 30 s; a different message is a
//! new event (kube-runtime's recorder folds those into the first, losing the new message).
//!
//! Publishing does not wait for the API server: events are queued and written by a few
//! workers per recorder, each object's events by the same worker, in order, stamped with the
//! time they were published. A reconcile's slot is not held by an event write, and when a
//! new source reaches many Stacks at once the events follow the work instead of delaying it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// A series' count is sent at most this often: a reconcile loop that repeats an event many
/// times a second costs the API server one write per interval, not one per repeat. The last
/// count of a burst is sent when the interval ends.
const SERIES_FLUSH: Duration = Duration::from_secs(30);
/// The API's limit on an event's note.
const NOTE_LIMIT: usize = 1024;
/// Event writers per recorder.
const WORKERS: usize = 4;
/// Events waiting per worker; beyond this (the API server unreachable for long) new events
/// are dropped with a warning rather than held without bound.
const QUEUE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    uid: String,
    type_: EventType,
    reason: String,
    note: String,
}

struct Seen {
    name: String,
    count: i32,
    /// The count the API server has.
    sent: i32,
    last: Instant,
    last_sent: Instant,
    flush_scheduled: bool,
}

type SeenMap = Arc<Mutex<HashMap<Key, Seen>>>;

pub struct Recorder {
    shared: Arc<Shared>,
    /// One queue per worker; the workers start with the first event (inside the runtime).
    queues: OnceLock<Vec<tokio::sync::mpsc::Sender<Pending>>>,
}

struct Shared {
    client: Client,
    /// `stack-controller`, ...: PKO's recorder names, shown as "From" by `kubectl describe`.
    component: String,
    /// `pulumi-kubernetes-operator/<component>`.
    controller: String,
    instance: String,
    /// Never held across a request.
    seen: SeenMap,
}

/// An event published and not yet written.
struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    note: String,
    at: jiff::Timestamp,
}

/// What a publish does, decided under the lock and done after it.
enum Step {
    Done,
    Patch { name: String, count: i32 },
    Create,
}

impl Recorder {
    /// `controller` is the reporting component (e.g. `stack-controller`).
    pub fn new(client: Client, controller: &str) -> Recorder {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| controller.to_string());
        Recorder {
            shared: Arc::new(Shared {
                client,
                component: controller.to_string(),
                controller: format!("pulumi-kubernetes-operator/{controller}"),
                instance,
                seen: Arc::new(Mutex::new(HashMap::new())),
            }),
            queues: OnceLock::new(),
        }
    }

    /// Records an event on `obj`; failures are logged, never returned (an event is not worth
    /// failing a reconcile for).
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let regarding = obj.object_ref(&());
        self.publish_ref(regarding, type_, reason, note).await;
    }

    pub async fn publish_ref(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let queues = self.queues.get_or_init(|| {
            (0..WORKERS)
                .map(|_| {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(QUEUE);
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        while let Some(p) = rx.recv().await {
                            shared.write(p).await;
                        }
                    });
                    tx
                })
                .collect()
        });
        // The same object always goes to the same worker: its events stay in order.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        regarding.uid.hash(&mut h);
        let queue = &queues[(h.finish() % WORKERS as u64) as usize];
        let pending = Pending {
            regarding,
            type_,
            reason: reason.to_string(),
            note: note.to_string(),
            at: jiff::Timestamp::now(),
        };
        if queue.try_send(pending).is_err() {
            warn!(
                reason,
                "event dropped: too many events waiting for the API server"
            );
        }
    }

    /// Forgets the series of a deleted object's events.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut seen) = self.shared.seen.lock() {
            seen.retain(|k, _| k.uid != uid);
        }
    }
}

impl Shared {
    async fn write(&self, p: Pending) {
        let Pending {
            regarding,
            type_,
            reason,
            note,
            at: now,
        } = p;
        let reason = reason.as_str();
        let note = truncate(&note, NOTE_LIMIT);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            note: note.clone(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let step = self.repeat(&key, &api);
        match step {
            Step::Done => return,
            Step::Patch { name, count } => {
                if patch_series(&api, &name, count).await.is_ok() {
                    return;
                }
                debug!("event series update failed; recording a new event");
            }
            Step::Create => {}
        }
        let event = Event {
            metadata: ObjectMeta {
                // `<object>.<hex nanos>`, as kubectl and client-go name events.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.clone().unwrap_or_else(|| "object".into()),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(note.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            reporting_component: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.insert(
                        key,
                        Seen {
                            name: created.name_any(),
                            count: 1,
                            sent: 1,
                            last: Instant::now(),
                            last_sent: Instant::now(),
                            flush_scheduled: false,
                        },
                    );
                }
            }
            Err(e) => warn!(reason, error = %e, "cannot record an event"),
        }
    }

    /// Counts a repeat of a recent event; says whether to send the count now, or to create
    /// a new event. A count held back is sent by a timer when the flush interval ends.
    fn repeat(&self, key: &Key, api: &Api<Event>) -> Step {
        let Ok(mut seen) = self.seen.lock() else {
            return Step::Create;
        };
        seen.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        let Some(s) = seen.get_mut(key) else {
            return Step::Create;
        };
        s.count += 1;
        s.last = Instant::now();
        let since = s.last_sent.elapsed();
        if since >= SERIES_FLUSH {
            s.sent = s.count;
            s.last_sent = Instant::now();
            return Step::Patch {
                name: s.name.clone(),
                count: s.count,
            };
        }
        if !s.flush_scheduled {
            s.flush_scheduled = true;
            let (seen, key, api) = (Arc::clone(&self.seen), key.clone(), api.clone());
            tokio::spawn(async move {
                tokio::time::sleep(SERIES_FLUSH - since).await;
                flush(&seen, &key, &api).await;
            });
        }
        Step::Done
    }
}

/// Sends a series' held-back count.
async fn flush(seen: &SeenMap, key: &Key, api: &Api<Event>) {
    let pending = {
        let Ok(mut seen) = seen.lock() else { return };
        let Some(s) = seen.get_mut(key) else { return };
        s.flush_scheduled = false;
        if s.count <= s.sent {
            return;
        }
        s.sent = s.count;
        s.last_sent = Instant::now();
        (s.name.clone(), s.count)
    };
    if let Err(e) = patch_series(api, &pending.0, pending.1).await {
        debug!(error = %e, "event series update failed");
    }
}

/// The repeat count, as client-go's recorder sends it.
async fn patch_series(api: &Api<Event>, name: &str, count: i32) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "count": count,
        "lastTimestamp": Time(jiff::Timestamp::now()),
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let long = "é".repeat(600);
        let t = truncate(&long, NOTE_LIMIT);
        assert!(t.len() <= NOTE_LIMIT);
        assert!(t.ends_with("..."));
        assert_eq!(truncate("short", NOTE_LIMIT), "short");
    }
}
