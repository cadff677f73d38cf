//! Every Flux source kind a Stack's `fluxSource` may name, end to end on a real node: the real
//! source-controller (in the cluster) makes each artifact from a real peer on the node
//! network's gateway, and a Stack of each kind reaches Ready with the program's outputs, its
//! workspace pod having fetched that artifact. The peers, as users have them:
//! - `OCIRepository`: an artifact pushed, as `flux push artifact` pushes it (Flux's media
//!   types), to the cluster's registry (`docker-registry`) through its HTTP API;
//! - `Bucket`: an S3-compatible server (gofakes3, tool `gofakes3`) serving a directory;
//! - `HelmChart`: a chart that source-controller packages from a GitRepository;
//! - `ExternalArtifact`: what another controller publishes; here its status names the
//!   GitRepository's artifact, as a producer's would name its own.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use support::operator::{shared_state, stack_yaml_with};
use support::real_node::{self, RealCluster};
use support::{FluxFixture, condition, resource};

const GROUP: &str = "source.toolkit.fluxcd.io";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A gzipped tar of `files`.
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, body.as_bytes())
                .expect("tar entry");
        }
        tar.into_inner().expect("tar").finish().expect("gzip");
    }
    out
}

/// Pushes `files` to `registry` as `name:tag`, the way `flux push artifact` does: one layer
/// (`application/vnd.cncf.flux.content.v1.tar+gzip`) and Flux's config media type, through the
/// registry's HTTP API. The manifest's digest.
async fn push_flux_artifact(
    registry: &str,
    name: &str,
    tag: &str,
    files: &[(&str, &str)],
) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{name}");
    let upload = |blob: Vec<u8>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let digest = sha256(&blob);
            let start = http
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .expect("start an upload");
            assert_eq!(start.status().as_u16(), 202, "{:?}", start.text().await);
            let location = start.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
            let location = if location.starts_with("http") {
                location
            } else {
                format!("http://{registry}{location}")
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let put = http
                .put(format!("{location}{sep}digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(blob.clone())
                .send()
                .await
                .expect("upload");
            assert_eq!(put.status().as_u16(), 201, "{:?}", put.text().await);
            (digest, blob.len())
        }
    };
    let (layer, layer_size) = upload(tar_gz(files)).await;
    let (config, config_size) = upload(b"{}".to_vec()).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.flux.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                    "digest": layer, "size": layer_size}],
        "annotations": {"org.opencontainers.image.source": "https://example.com/programs.git",
                        "org.opencontainers.image.revision": "main@sha1:0123456789abcdef"},
    });
    let body = serde_json::to_vec(&manifest).expect("manifest");
    let put = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .expect("push the manifest");
    assert_eq!(put.status().as_u16(), 201, "{:?}", put.text().await);
    sha256(&body)
}

/// Waits until the `kind` source `name` is Ready with an artifact; returns its status.
async fn wait_artifact(rc: &RealCluster, kind: &str, plural: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(
        rc.cp.client(),
        "default",
        &resource(GROUP, "v1", kind, plural),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|o| o.data["status"].clone())
            .unwrap_or(Value::Null);
        let ready = condition(&json!({"status": status.clone()}), "Ready")
            .is_some_and(|c| c["status"] == "True");
        if ready && status["artifact"]["url"].is_string() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name} has no artifact: {status:#}\nsource-controller:\n{}",
            rc.kubectl(&[
                "logs",
                "-n",
                "flux-system",
                "deploy/source-controller",
                "--tail=30"
            ])
            .unwrap_or_else(|e| e)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies a Stack of the source `kind`/`name` (program in `dir`) and waits until it is Ready
/// with `greeting` as its output.
async fn stack_of(rc: &RealCluster, kind: &str, name: &str, dir: &str, greeting: &str) {
    let state = shared_state();
    let stack = format!("from-{}", kind.to_lowercase());
    let source = json!({"fluxSource": {
        "sourceRef": {"apiVersion": format!("{GROUP}/v1"), "kind": kind, "name": name},
        "dir": dir,
    }});
    rc.cp
        .apply_yaml(
            &stack_yaml_with(&stack, (&rc.images.pulumi, state.path()), source),
            "stack",
            "default",
        )
        .await
        .unwrap_or_else(|e| panic!("{stack}: {e}"));
    let s = real_node::wait_ready_after_success(rc, &stack).await;
    assert_eq!(
        s["status"]["outputs"],
        json!({"greeting": greeting}),
        "{kind}: {s:#}"
    );
    let fetch = real_node::workspace_log(rc, &stack, "fetch");
    assert!(
        fetch.contains("artifact verified and unpacked"),
        "{kind}: fetch's log: {fetch}"
    );
}

fn program(greeting: &str) -> String {
    format!("name: sources\nruntime: yaml\noutputs:\n  greeting: {greeting}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flux_source_kind_takes_a_stack_to_ready() {
    let rc = real_node::start_installed().await;
    let gateway = rc.network.gateway();

    // OCIRepository: an artifact in the cluster's registry.
    let oci_program = program("from-oci");
    push_flux_artifact(
        rc.registry.addr(),
        "programs/app",
        "v1",
        &[("Pulumi.yaml", &oci_program)],
    )
    .await;
    rc.cp
        .apply_yaml(
            &json!({"apiVersion": format!("{GROUP}/v1"), "kind": "OCIRepository",
                    "metadata": {"name": "oci-app"},
                    "spec": {"interval": "10m", "insecure": true,
                             "url": format!("oci://{}/programs/app", rc.registry.addr()),
                             "ref": {"tag": "v1"}}})
            .to_string(),
            "OCIRepository",
            "default",
        )
        .await
        .expect("OCIRepository");
    wait_artifact(&rc, "OCIRepository", "ocirepositories", "oci-app").await;
    stack_of(&rc, "OCIRepository", "oci-app", "", "from-oci").await;

    // Bucket: an S3-compatible server with bucket `programs`, the program put into it as an
    // object (an S3 PUT; this server checks no signature).
    let port = e2e::process::free_port();
    let bin = e2e::tools::find(
        &e2e::tools::dirs(&["gofakes3"]).expect("gofakes3"),
        "gofakes3",
    )
    .expect("gofakes3");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["-backend", "memory", "-initialbucket", "programs", "-host"])
        .arg(format!("{gateway}:{port}"));
    let _s3 = e2e::process::Process::spawn("gofakes3", cmd, rc.cp.dir()).expect("gofakes3 runs");
    let object = format!("http://{gateway}:{port}/programs/app/Pulumi.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = reqwest::Client::new()
            .put(&object)
            .body(program("from-bucket"))
            .send()
            .await;
        match put {
            Ok(r) if r.status().is_success() => break,
            other => assert!(
                Instant::now() < deadline,
                "PUT {object}: {:?}",
                other.map(|r| r.status())
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rc.cp
        .apply_yaml(
            &json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Bucket",
                    "metadata": {"name": "bucket-app"},
                    "spec": {"interval": "10m", "provider": "generic", "insecure": true,
                             "bucketName": "programs", "endpoint": format!("{gateway}:{port}")}})
            .to_string(),
            "Bucket",
            "default",
        )
        .await
        .expect("Bucket");
    wait_artifact(&rc, "Bucket", "buckets", "bucket-app").await;
    stack_of(&rc, "Bucket", "bucket-app", "app", "from-bucket").await;

    // HelmChart: source-controller packages a chart (with the program in it) from git.
    let fx = FluxFixture::in_cluster(&rc.cp, "charts", gateway).await;
    let sha = fx
        .repo
        .commit(
            &[
                (
                    "charts/app/Chart.yaml",
                    "apiVersion: v2\nname: app\nversion: 0.1.0\n",
                ),
                ("charts/app/Pulumi.yaml", &program("from-chart")),
            ],
            "a chart",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    let git_artifact = fx.wait_revision(&rc.cp, &sha).await;
    rc.cp
        .apply_yaml(
            &json!({"apiVersion": format!("{GROUP}/v1"), "kind": "HelmChart",
                    "metadata": {"name": "chart-app"},
                    "spec": {"interval": "10m", "chart": "./charts/app",
                             "sourceRef": {"kind": "GitRepository", "name": "charts"}}})
            .to_string(),
            "HelmChart",
            "default",
        )
        .await
        .expect("HelmChart");
    wait_artifact(&rc, "HelmChart", "helmcharts", "chart-app").await;
    // A packaged chart holds its files under the chart's name.
    stack_of(&rc, "HelmChart", "chart-app", "app", "from-chart").await;

    // ExternalArtifact: a producer publishes an artifact in its status.
    let externals: Api<DynamicObject> = Api::namespaced_with(
        rc.cp.client(),
        "default",
        &resource(GROUP, "v1", "ExternalArtifact", "externalartifacts"),
    );
    rc.cp
        .apply_yaml(
            &json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ExternalArtifact",
                    "metadata": {"name": "external-app"}, "spec": {}})
            .to_string(),
            "ExternalArtifact",
            "default",
        )
        .await
        .expect("ExternalArtifact");
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "artifact": git_artifact,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                        "message": "published", "lastTransitionTime": now}],
    }});
    externals
        .patch_status(
            "external-app",
            &PatchParams::apply("a-producer").force(),
            &Patch::Apply(&json!({"apiVersion": format!("{GROUP}/v1"),
                                  "kind": "ExternalArtifact", "status": status["status"]})),
        )
        .await
        .expect("publish the artifact");
    stack_of(
        &rc,
        "ExternalArtifact",
        "external-app",
        "charts/app",
        "from-chart",
    )
    .await;
}
