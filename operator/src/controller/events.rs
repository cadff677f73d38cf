//! Kubernetes events, as `kubectl describe` shows them. A repeat of the same event (same
//! object, type, reason and message) within a few minutes is counted on the first one instead
//! of creating another; a different message is a new event (kube-runtime's recorder folds
//! those into the first, losing the new message).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Mutex;
use tracing::{debug, warn};

const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// The API's limit on an event's note.
const NOTE_LIMIT: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Hash, PartialEq, Eq)]
struct Key {
    uid: String,
    type_: EventType,
    reason: String,
    note: String,
}

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Recorder {
    /// `controller` is the reporting component (e.g. `stack-controller`).
    pub fn new(client: Client, controller: &str) -> Recorder {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| controller.to_string());
        Recorder {
            client,
            controller: format!("pulumi-kubernetes-operator/{controller}"),
            instance,
            seen: Mutex::new(HashMap::new()),
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
        let note = truncate(note, NOTE_LIMIT);
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
        let now = jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let mut seen = self.seen.lock().await;
        seen.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        if let Some(s) = seen.get_mut(&key) {
            s.count += 1;
            s.last = Instant::now();
            let patch = serde_json::json!({
                "series": EventSeries { count: s.count, last_observed_time: MicroTime(now) },
            });
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => debug!(error = %e, "event series update failed; recording a new event"),
            }
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
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                seen.insert(
                    key,
                    Seen {
                        name: created.name_any(),
                        namespace,
                        count: 1,
                        last: Instant::now(),
                    },
                );
            }
            Err(e) => warn!(reason, error = %e, "cannot record an event"),
        }
    }

    /// Forgets the series of a deleted object's events.
    pub async fn forget(&self, uid: &str) {
        self.seen.lock().await.retain(|k, s| {
            let _ = &s.namespace;
            k.uid != uid
        });
    }
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
