//! The controllers: Workspace (a pod running the agent), Update (one Pulumi operation in it),
//! Stack (what users write: source, config, when to update) and Program (a program served as
//! an artifact). Each reconciler reads, calls pure functions that decide, and applies.

pub mod cron;
pub mod duration;
pub mod program;
pub mod runtime;
pub mod settings;
pub mod stack;
pub mod update;
pub mod workspace;

use std::sync::Arc;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use runtime::connect::Tokens;
use runtime::events::Recorder;
use runtime::metrics::Metrics;
use settings::Settings;

/// Each controller's context, made once by the manager. A controller sees only what it uses;
/// what two share (the agent tokens, the Workspace event recorder) is shared by `Arc`.
pub struct Contexts {
    pub workspace: Arc<workspace::Context>,
    pub update: Arc<update::Context>,
    pub stack: Arc<stack::Context>,
    pub program: Arc<program::Context>,
}

impl Contexts {
    /// `program_base_url`: where Program artifacts are served (`http://host:port`).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        program_base_url: String,
        scope: runtime::Scope,
    ) -> Contexts {
        let tokens = Arc::new(Tokens::new(
            client.clone(),
            settings.namespace.clone(),
            settings.service_account.clone(),
        ));
        let workspace_events = Arc::new(Recorder::new(client.clone(), "workspace-controller"));
        Contexts {
            update: Arc::new(update::Context {
                client: client.clone(),
                metrics: Arc::clone(&metrics),
                tokens: Arc::clone(&tokens),
                events: Recorder::new(client.clone(), "update-controller"),
                workspace_events: Arc::clone(&workspace_events),
                workspace_localhost: settings.workspace_localhost.clone(),
            }),
            stack: Arc::new(stack::Context::new(
                client.clone(),
                Arc::clone(&metrics),
                settings.github_api_url.clone(),
                scope,
                settings.default_service_account.clone(),
            )),
            program: Arc::new(program::Context {
                client: client.clone(),
                metrics: Arc::clone(&metrics),
                base_url: program_base_url,
            }),
            workspace: Arc::new(workspace::Context::new(
                client,
                settings,
                metrics,
                tokens,
                workspace_events,
            )),
        }
    }
}

/// Errors that end a reconcile early; the runtime retries with back-off (`runtime`). What
/// the user must fix is not an error but a typed stop with a condition (see each controller).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
    /// A call to a workspace's agent failed (the agent's reason, or the gRPC code's name).
    #[error("agent call {call} failed: {reason}: {message}")]
    Agent {
        call: &'static str,
        reason: String,
        message: String,
    },
    #[error("packing the Program's artifact")]
    Artifact(#[from] program::ArtifactError),
}

impl Error {
    /// Label for metrics (`reconcile_failures_total{error=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Agent { .. } => "agent",
            Error::Artifact(_) => "artifact",
        }
    }
}

/// Server-side apply of a status (merge of the fields we own, with the named manager).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    body: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut body = body;
    prune_nulls(&mut body);
    let params = PatchParams::apply(manager).force();
    api.patch_status(name, &params, &Patch::Apply(&body)).await
}

/// Drops `null` fields: in an apply, leaving a field out is how an owner clears it (a `null`
/// is refused by the schema).
pub fn prune_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(prune_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Server-side apply of a whole object.
pub async fn apply<K>(api: &Api<K>, name: &str, manager: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let params = PatchParams::apply(manager).force();
    api.patch(name, &params, &Patch::Apply(obj)).await
}

/// The first 16 bytes of `text`'s SHA-256, in hex: short enough for an annotation or a field
/// manager's name, long enough that two inputs never meet.
pub fn short_digest(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 3339 time of now, as status fields carry it.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn nulls_are_pruned_at_every_depth() {
        let mut v = serde_json::json!({"a": null, "b": {"c": null, "d": [ {"e": null, "f": 1} ]}});
        super::prune_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"b": {"d": [{"f": 1}]}}));
    }
}
