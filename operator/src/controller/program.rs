//! Programs as Flux-style artifacts: each Program is packed as a tar.gz holding one generated
//! `Pulumi.yaml`, published in `status.artifact` (url, `sha256:` digest, revision = the
//! generation) and served by the operator's HTTP server, so the workspace pod's `fetch flux`
//! runs it like any Flux source. The archive is deterministic: the bytes served later always
//! match the digest published now.
//!
//! The server answers from a watch-fed cache of Programs (a request never reaches the API
//! server), and only to whoever knows the Program's uid, which is in the artifact URL: the
//! URL is published in the Program's status, so exactly those who may read the Program may
//! fetch it. Path segments are validated (DNS-1123 names, a UUID, a generation) before any
//! lookup.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::runtime::metrics::Metrics;
use super::{Error, apply_status, runtime};
use crate::api::names::{field_manager, is_dns_label};
use crate::api::program::Program;

pub const CONTROLLER: &str = "program";

/// What the Program controller needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Where the artifacts are served (`http://host:port`).
    pub base_url: String,
}

impl runtime::Measured for Context {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

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

pub fn artifact_path(ns: &str, name: &str, uid: &str, generation: i64) -> String {
    format!("programs/{ns}/{name}/{uid}/{generation}.tar.gz")
}

pub fn artifact_url(base: &str, ns: &str, name: &str, uid: &str, generation: i64) -> String {
    let base = base.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    format!("{base}/{}", artifact_path(ns, name, uid, generation))
}

pub async fn reconcile(p: Arc<Program>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let generation = p.meta().generation.unwrap_or(0);
    let uid = p.uid().unwrap_or_default();
    let bytes = pack(&p)?;
    let body = serde_json::json!({
        "apiVersion": "pulumi.com/v1",
        "kind": "Program",
        "status": {
            "observedGeneration": generation,
            "artifact": {
                "path": artifact_path(&ns, &name, &uid, generation),
                "url": artifact_url(&ctx.base_url, &ns, &name, &uid, generation),
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

pub async fn run(
    ctx: Arc<Context>,
    scope: &runtime::Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, programs, _) = runtime::primary(
        ctx.client.clone(),
        scope,
        CONTROLLER,
        Arc::clone(&ctx.metrics),
        predicates::generation,
        |_| {},
    );
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
    let reconciler: runtime::Reconcile<Program, Context> = |p, ctx| Box::pin(reconcile(p, ctx));
    let controller = Controller::for_stream(programs, reader);
    // Unbounded, as kube's default: Programs are few and their reconciles short.
    runtime::run(controller, CONTROLLER, reconciler, ctx, 0, shutdown).await;
}

/// The Programs the server answers from: a watch of its own in `scope`, started before leader
/// election (every replica serves), trimmed of what packing does not read.
pub fn served(client: Client, scope: &runtime::Scope) -> Store<Program> {
    let (reader, writer) = reflector::store();
    let stream = scope
        .watch(
            scope.apis::<Program>(&client),
            scope.own(watcher::Config::default()),
            Some(reader.clone()),
        )
        .modify(crate::controller::runtime::cache::slim)
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(stream);
    reader
}

/// `GET /programs/<ns>/<name>/<uid>/<generation>.tar.gz`: the Program's artifact, packed
/// again; 404 when the Program is gone, is another object of that name, or has moved to
/// another generation (like a Flux artifact that was replaced).
pub fn router(programs: Store<Program>) -> axum::Router {
    axum::Router::new()
        .route(
            "/programs/{ns}/{name}/{uid}/{generation}",
            axum::routing::get(serve),
        )
        .with_state(programs)
}

/// A request's path, checked before it is used for anything.
#[derive(Debug, PartialEq, Eq)]
pub struct ArtifactRequest {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

pub fn parse_request(
    ns: &str,
    name: &str,
    uid: &str,
    file: &str,
) -> Result<ArtifactRequest, &'static str> {
    if !is_dns_label(ns) {
        return Err("the namespace is not a DNS-1123 label");
    }
    if !is_dns_subdomain(name) {
        return Err("the name is not a DNS-1123 subdomain");
    }
    if !is_uuid(uid) {
        return Err("the uid is not a UUID");
    }
    let generation = file
        .strip_suffix(".tar.gz")
        .unwrap_or(file)
        .parse::<i64>()
        .ok()
        .filter(|g| *g > 0)
        .ok_or("the generation must be a positive number")?;
    Ok(ArtifactRequest {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        generation,
    })
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// How long a request for a generation the cache has not seen yet waits for it: the status
/// that published the URL can reach a workspace pod before the watch event reaches us.
const CACHE_CATCH_UP: Duration = Duration::from_secs(5);

async fn serve(
    State(programs): State<Store<Program>>,
    Path((ns, name, uid, file)): Path<(String, String, String, String)>,
) -> Response {
    let req = match parse_request(&ns, &name, &uid, &file) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let key = reflector::ObjectRef::new(&req.name).within(&req.namespace);
    let deadline = tokio::time::Instant::now() + CACHE_CATCH_UP;
    let program = loop {
        let found = programs
            .get(&key)
            .filter(|p| p.uid().as_deref() == Some(req.uid.as_str()));
        match found {
            Some(p) if p.meta().generation == Some(req.generation) => break p,
            Some(p)
                if p.meta().generation.unwrap_or(0) < req.generation
                    && tokio::time::Instant::now() < deadline => {}
            _ => {
                return (StatusCode::NOT_FOUND, "no such program generation\n").into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    const UID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn urls_get_a_scheme_and_paths_name_the_uid_and_generation() {
        assert_eq!(
            artifact_url("pko.ns:80", "a", "b", UID, 3),
            format!("http://pko.ns:80/programs/a/b/{UID}/3.tar.gz")
        );
        assert_eq!(
            artifact_url("https://x/", "a", "b", UID, 1),
            format!("https://x/programs/a/b/{UID}/1.tar.gz")
        );
        assert_eq!(
            artifact_path("a", "b", UID, 3),
            format!("programs/a/b/{UID}/3.tar.gz")
        );
        let url = artifact_url("h:1", "team-a", "web.app", UID, 7);
        let path: Vec<&str> = url.rsplit('/').take(4).collect();
        assert_eq!(
            parse_request(path[3], path[2], path[1], path[0]),
            Ok(ArtifactRequest {
                namespace: "team-a".into(),
                name: "web.app".into(),
                uid: UID.into(),
                generation: 7
            })
        );
    }

    #[tokio::test]
    async fn only_the_program_with_that_uid_and_generation_is_served() {
        let (reader, mut writer) = reflector::store::<Program>();
        let mut p = program();
        p.metadata.uid = Some(UID.into());
        writer.apply_watcher_event(&watcher::Event::Apply(p.clone()));
        let get = |ns: &str, uid: &str, file: &str| {
            serve(
                State(reader.clone()),
                Path((ns.into(), "hello".into(), uid.into(), file.into())),
            )
        };
        let ok = get("ns", UID, "3.tar.gz").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let other_uid = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            get("ns", other_uid, "3.tar.gz").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("other", UID, "3.tar.gz").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("ns", UID, "2.tar.gz").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get("ns", UID, "x").await.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn request_paths_are_validated_before_any_lookup() {
        let ok = |ns: &str, name: &str, uid: &str, file: &str| {
            parse_request(ns, name, uid, file).is_ok()
        };
        assert!(ok("ns", "p", UID, "3.tar.gz"));
        assert!(ok("ns", "p", UID, "3"));
        assert!(!ok("..", "p", UID, "3"), "not a label");
        assert!(!ok("ns/x", "p", UID, "3"));
        assert!(!ok("NS", "p", UID, "3"));
        assert!(!ok("ns", "p%2F..", UID, "3"));
        assert!(!ok("ns", "-p", UID, "3"));
        assert!(!ok("ns", &"a".repeat(254), UID, "3"));
        assert!(!ok("ns", "p", "not-a-uid", "3"));
        assert!(!ok("ns", "p", UID, "0"));
        assert!(!ok("ns", "p", UID, "x.tar.gz"));
    }
}
