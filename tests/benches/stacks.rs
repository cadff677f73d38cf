//! Many Stacks on one Flux source, on the local control plane, without running the pods: the
//! operator's peak memory, how long until every Workspace and StatefulSet exists, and how long
//! a new artifact revision takes to reach each StatefulSet's pod template.
//!
//! `bash tests/bench/stacks.sh` (it builds the release binaries first); `STACKS=N` changes the
//! count (500 by default). The GitRepository's status is written by this program, not by
//! source-controller, so the moment a revision appears is known to the millisecond and the
//! figures measure the operator alone (watch → Stack → Workspace → StatefulSet).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::ControlPlane;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use support::operator::{self, BACKEND, WORKSPACE_SA};
use support::{resource, wait_for, workspaces};

/// The targets of issue 7.
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_P50_MS: f64 = 1000.0;

fn git_repositories() -> kube::discovery::ApiResource {
    resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
    )
}

/// The digest of the bench's `n`th artifact.
fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn artifact(n: u32) -> serde_json::Value {
    let sha = format!("{n:040x}");
    json!({"status": {
        "artifact": {
            "path": format!("gitrepository/default/bench/{sha}.tar.gz"),
            "url": format!("http://source-controller.flux-system.svc.cluster.local./gitrepository/default/bench/{sha}.tar.gz"),
            "revision": format!("main@sha1:{sha}"),
            "digest": digest(n),
            "lastUpdateTime": jiff::Timestamp::now().to_string(),
        },
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Succeeded", "message": "stored artifact",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }],
    }})
}

fn digest_of(sts: &StatefulSet) -> Option<String> {
    let spec = sts.spec.as_ref()?.template.spec.as_ref()?;
    let fetch = spec
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == "fetch")?;
    fetch
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == "FLUX_DIGEST")?
        .value
        .clone()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Requests the API server has served so far, `(reads, writes)`, from its own metrics (all
/// clients: the operator, the controller-manager's StatefulSet controller, this program),
/// leases excluded.
async fn served(client: &kube::Client) -> (f64, f64) {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = client.request_text(req).await.expect("API server metrics");
    let (mut reads, mut writes) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        if rest.contains("resource=\"leases\"") {
            continue;
        }
        let n: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let verb = rest
            .split("verb=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("");
        match verb {
            "GET" | "LIST" | "WATCH" => reads += n,
            _ => writes += n,
        }
    }
    (reads, writes)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("STACKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let cp = ControlPlane::start().await.expect("control plane starts");
    cp.install_flux_crds().await.expect("flux CRDs");
    let kubeconfig = operator::install(&cp).await;

    let repos: Api<DynamicObject> =
        Api::namespaced_with(cp.client(), "default", &git_repositories());
    cp.apply_yaml(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: bench}\n\
         spec: {url: 'http://git.invalid/bench.git', interval: 1h, ref: {branch: main}}\n",
        "gitrepository",
        "default",
    )
    .await
    .expect("GitRepository");
    repos
        .patch_status(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(&artifact(1)),
        )
        .await
        .expect("first artifact");

    let op = operator::start(&cp, &kubeconfig, &[]).await;
    let pid = op.process.pid();
    let idle_rss = peak_rss_mib(pid);

    // Create the Stacks, 16 requests in flight.
    let stacks: Api<DynamicObject> =
        Api::namespaced_with(cp.client(), "default", &support::stacks());
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let stacks = stacks.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "pulumi.com/v1", "kind": "Stack",
                    "metadata": {"name": format!("s{i:04}")},
                    "spec": {
                        "stack": format!("s{i:04}"), "backend": BACKEND,
                        "serviceAccountName": WORKSPACE_SA,
                        "fluxSource": {
                            "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "bench"},
                            "dir": "app",
                        },
                    },
                }))
                .expect("stack");
                stacks.create(&PostParams::default(), &obj).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create Stacks");
    let created = started.elapsed();

    let ws_api: Api<DynamicObject> = Api::namespaced_with(cp.client(), "default", &workspaces());
    let sts_api: Api<StatefulSet> = Api::namespaced(cp.client(), "default");
    let first = digest(1);
    wait_for(
        Duration::from_secs(900),
        "every Workspace and StatefulSet",
        || {
            let (ws_api, sts_api, first) = (ws_api.clone(), sts_api.clone(), first.clone());
            async move {
                let ws = ws_api
                    .list_metadata(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .len();
                let sts = sts_api.list(&ListParams::default()).await.ok()?.items;
                let ready = sts
                    .iter()
                    .filter(|s| digest_of(s).as_deref() == Some(&first))
                    .count();
                (ws >= n && ready >= n).then_some(())
            }
        },
    )
    .await;
    let all_exist = started.elapsed();
    // Let the first wave settle (status writes, the Stacks' requeues) before the measurement.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // A new revision; watch each StatefulSet take it.
    let second = digest(2);
    let mut seen: HashMap<String, Duration> = HashMap::new();
    let watch = watcher(sts_api.clone(), watcher::Config::default()).applied_objects();
    futures::pin_mut!(watch);
    // The watch has to be established before the change: drain its initial list first.
    let mut initial = 0;
    while initial < n {
        match watch.try_next().await {
            Ok(Some(_)) => initial += 1,
            other => panic!("watch: {other:?}"),
        }
    }
    let before = served(&cp.client()).await;
    let revised = Instant::now();
    repos
        .patch_status(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(&artifact(2)),
        )
        .await
        .expect("second artifact");
    let deadline = revised + Duration::from_secs(900);
    while seen.len() < n {
        let next = tokio::time::timeout_at(deadline.into(), watch.try_next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {n} StatefulSets took the new revision",
                    seen.len()
                )
            });
        let Ok(Some(sts)) = next else {
            panic!("watch ended: {next:?}")
        };
        if digest_of(&sts).as_deref() == Some(&second) {
            let name = sts.metadata.name.clone().unwrap_or_default();
            seen.entry(name).or_insert_with(|| revised.elapsed());
        }
    }
    let after = served(&cp.client()).await;
    let mut lat: Vec<Duration> = seen.into_values().collect();
    lat.sort();
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    let rss = peak_rss_mib(pid);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("stacks                              {n}");
    println!(
        "create requests                     {:.1} s",
        created.as_secs_f64()
    );
    println!(
        "all Workspaces + StatefulSets exist {:.1} s after the first create",
        all_exist.as_secs_f64()
    );
    println!(
        "new revision -> StatefulSet  p50    {:.0} ms   (target {TARGET_P50_MS:.0} ms, ratio {:.2})",
        ms(p50),
        ms(p50) / TARGET_P50_MS
    );
    println!("new revision -> StatefulSet  p99    {:.0} ms", ms(p99));
    println!(
        "API requests per Stack for it       {:.1} writes, {:.1} reads (all clients, until the last StatefulSet)",
        (after.1 - before.1) / n as f64,
        (after.0 - before.0) / n as f64
    );
    println!(
        "new revision -> StatefulSet  last   {:.0} ms",
        ms(lat[lat.len() - 1])
    );
    println!(
        "operator peak RSS                   {rss:.1} MiB (target {TARGET_RSS_MIB:.0} MiB, ratio {:.2}; {idle_rss:.1} MiB before the Stacks)",
        rss / TARGET_RSS_MIB
    );
    drop(op);
}
