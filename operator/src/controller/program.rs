//! Programs as Flux-style artifacts: each Program is packed as a tar.gz holding one generated
//! `Pulumi.yaml`, published in `status.artifact` (url, `sha256:` digest, revision = the
//! generation) and served by the operator's HTTP server, so the workspace pod's `fetch flux`
//! runs it like any Flux source. The archive is deterministic: the bytes served later always
//! match the digest published now.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{Context, Error, apply_status};
use crate::api::names::field_manager;
use crate::api::program::Program;

pub const CONTROLLER: &str = "program";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the program cannot be written as YAML: {0}")]
    Yaml(String),
    #[error("cannot pack the program: {0}")]
    Pack(#[from] std::io::Error),
}

/// The project file: name and runtime, then the program's sections.
pub fn project_yaml(p: &Program) -> Result<String, ArtifactError> {
    let mut doc = serde_json::Map::new();
    doc.insert("name".into(), p.name_any().into());
    doc.insert("runtime".into(), "yaml".into());
    if let Some(spec) = &p.program {
        let v = serde_json::to_value(spec).map_err(|e| ArtifactError::Yaml(e.to_string()))?;
        if let serde_json::Value::Object(fields) = v {
            doc.extend(fields);
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| ArtifactError::Yaml(e.to_string()))
}

/// The tar.gz: one `Pulumi.yaml`, fixed times and owners, so the same Program always packs to
/// the same bytes.
pub fn pack(p: &Program) -> Result<Vec<u8>, ArtifactError> {
    let yaml = project_yaml(p)?;
    let mut header = tar::Header::new_ustar();
    header.set_path("Pulumi.yaml")?;
    header.set_size(yaml.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.append(&header, yaml.as_bytes())?;
    let mut gz = builder.into_inner()?;
    gz.flush()?;
    Ok(gz.finish()?)
}

pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub fn artifact_path(ns: &str, name: &str, generation: i64) -> String {
    format!("programs/{ns}/{name}/{generation}.tar.gz")
}

pub fn artifact_url(base: &str, ns: &str, name: &str, generation: i64) -> String {
    let base = base.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    format!("{base}/programs/{ns}/{name}/{generation}")
}

pub async fn reconcile(p: Arc<Program>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let generation = p.meta().generation.unwrap_or(0);
    let bytes = pack(&p).map_err(|e| Error::Other(e.to_string()))?;
    let body = serde_json::json!({
        "apiVersion": "pulumi.com/v1",
        "kind": "Program",
        "status": {
            "observedGeneration": generation,
            "artifact": {
                "path": artifact_path(&ns, &name, generation),
                "url": artifact_url(&ctx.program_base_url, &ns, &name, generation),
                "revision": generation.to_string(),
                "digest": digest(&bytes),
                "lastUpdateTime": super::now_rfc3339(),
                "size": bytes.len(),
            },
        },
    });
    let api: Api<Program> = Api::namespaced(ctx.client.clone(), &ns);
    apply_status(&api, &name, field_manager::PROGRAM_STATUS, body).await?;
    Ok(Action::await_change())
}

fn error_policy(_p: Arc<Program>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %err, "program reconcile failed");
    ctx.metrics.failure(CONTROLLER, err.kind());
    Action::requeue(Duration::from_secs(5))
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store();
    let programs = watcher(Api::<Program>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(crate::controller::cache::slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let store = reader.clone();
    let gauge_ctx = Arc::clone(&ctx);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            gauge_ctx
                .metrics
                .programs_active
                .set(store.state().len() as i64);
        }
    });
    Controller::for_stream(programs, reader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// `GET /programs/<ns>/<name>/<generation>`: the Program's artifact, regenerated; 404 when the
/// Program is gone or has moved to another generation (like a Flux artifact that was
/// replaced).
pub fn router(client: Client) -> axum::Router {
    axum::Router::new()
        .route(
            "/programs/{ns}/{name}/{generation}",
            axum::routing::get(serve),
        )
        .with_state(client)
}

async fn serve(
    State(client): State<Client>,
    Path((ns, name, generation)): Path<(String, String, String)>,
) -> Response {
    let Ok(generation) = generation.trim_end_matches(".tar.gz").parse::<i64>() else {
        return (StatusCode::BAD_REQUEST, "the generation must be a number\n").into_response();
    };
    let api: Api<Program> = Api::namespaced(client, &ns);
    let program = match api.get_opt(&name).await {
        Ok(Some(p)) if p.meta().generation == Some(generation) => p,
        Ok(_) => return (StatusCode::NOT_FOUND, "no such program generation\n").into_response(),
        Err(e) => {
            warn!(error = %e, "cannot read the Program to serve");
            return (StatusCode::SERVICE_UNAVAILABLE, "cannot read the Program\n").into_response();
        }
    };
    match pack(&program) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/gzip"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=project.tar.gz",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::program::ProgramSpec;
    use std::collections::BTreeMap;
    use std::io::Read;

    fn program() -> Program {
        let mut p = Program {
            program: Some(ProgramSpec {
                outputs: Some(BTreeMap::from([(
                    "greeting".into(),
                    serde_json::json!("hello"),
                )])),
                packages: Some(BTreeMap::from([("random".into(), "4.16.0".into())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata.name = Some("hello".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.generation = Some(3);
        p
    }

    #[test]
    fn the_archive_is_deterministic_and_holds_the_project_file() {
        let p = program();
        let a = pack(&p).expect("pack");
        assert_eq!(a, pack(&p).expect("pack again"), "same program, same bytes");
        assert_eq!(digest(&a), digest(&pack(&p).expect("pack")));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let mut entries = archive.entries().expect("entries");
        let mut entry = entries.next().expect("one entry").expect("entry");
        assert_eq!(entry.path().expect("path").to_str(), Some("Pulumi.yaml"));
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(doc["name"], "hello");
        assert_eq!(doc["runtime"], "yaml");
        assert_eq!(doc["outputs"]["greeting"], "hello");
        assert_eq!(doc["packages"]["random"], "4.16.0");
        assert!(entries.next().is_none());
    }

    #[test]
    fn urls_get_a_scheme_and_paths_name_the_generation() {
        assert_eq!(
            artifact_url("pko.ns:80", "a", "b", 3),
            "http://pko.ns:80/programs/a/b/3"
        );
        assert_eq!(
            artifact_url("https://x/", "a", "b", 1),
            "https://x/programs/a/b/1"
        );
        assert_eq!(artifact_path("a", "b", 3), "programs/a/b/3.tar.gz");
    }
}
