//! Many Stacks on one Flux source, on the local control plane, without running the pods: the
//! operator's peak memory and CPU, its own API requests, how long until every Workspace and
//! StatefulSet exists, and how long a new artifact revision takes to reach each StatefulSet's
//! pod template.
//!
//! `bash tests/bench/stacks.sh` (it builds the release binaries first); `STACKS=N` changes the
//! count (500 by default). The GitRepository's status is written by this program, not by
//! source-controller, so the moment a revision appears is known to the millisecond and the
//! figures measure the operator alone (watch → Stack → Workspace → StatefulSet).
//!
//! The same change is then made without the operator, as a baseline from the same run: the
//! two writes a revision needs per Stack, sent by this program. On a small machine the API
//! server's CPU, not the operator, sets both figures; the output shows the cores each process
//! used and the writes per Stack by kind. `PPROF=file` saves an API server CPU profile of the
//! revision (`go tool pprof`), `DUMP=dir` one Workspace and StatefulSet as stored.
//!
//! `PKO_MANAGER=path` (`tests/bench/stacks.sh --vs pko` sets it) then does the same with PKO's
//! own manager on a fresh control plane of the same shape, installed from PKO's quickstart
//! manifest, and prints each figure's ratio ours/PKO against issue 22's targets. Each
//! operator's requests are counted from the API server's audit log, by its service account.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::ControlPlane;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use operator::api::names::field_manager::OPERATOR;
use operator::api::stack::Stack;
use operator::api::workspace::Workspace;
use operator::controller;
use operator::controller::settings::Settings;
use operator::controller::stack::workspace_spec::{Source, desired_workspace};
use operator::controller::workspace::desired;
use support::operator::{self as op_support, BACKEND, WORKSPACE_SA};
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

/// Requests the API server has served so far by verb and resource (all clients: the operator,
/// the controller-manager, the scheduler, this program), leases excluded.
async fn served(client: &kube::Client) -> Served {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = client.request_text(req).await.expect("API server metrics");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let label = |name: &str| {
            rest.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let (resource, sub) = (label("resource"), label("subresource"));
        if resource == "leases" {
            continue;
        }
        let n: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        *out.entry((label("verb"), resource)).or_insert(0.0) += n;
    }
    out
}

fn is_read(verb: &str) -> bool {
    matches!(verb, "GET" | "LIST" | "WATCH")
}

/// CPU seconds a process has used so far (user + system), from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// When each object first showed `wanted`, after `from`, over an established watch.
async fn first_seen<K, S, F>(watch: S, n: usize, from: Instant, has: F) -> Vec<Duration>
where
    S: futures::Stream<Item = Result<K, watcher::Error>>,
    K: kube::Resource,
    F: Fn(&K) -> bool,
{
    futures::pin_mut!(watch);
    let mut seen: HashMap<String, Duration> = HashMap::new();
    let deadline = from + Duration::from_secs(900);
    while seen.len() < n {
        let next = tokio::time::timeout_at(deadline.into(), watch.try_next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} took the new revision", seen.len()));
        let Ok(Some(obj)) = next else {
            panic!("watch ended: {:?}", next.err())
        };
        if has(&obj) {
            let name = obj.meta().name.clone().unwrap_or_default();
            seen.entry(name).or_insert_with(|| from.elapsed());
        }
    }
    let mut lat: Vec<Duration> = seen.into_values().collect();
    lat.sort();
    lat
}

/// Waits until the API server is quiet (fewer than two writes a second over 3 s, all
/// clients; at most 5 minutes) and says how long that took: the controller-manager is slow
/// to finish what the Stacks' creation started (endpoints for 500 Services), and a
/// measurement must not include that.
async fn quiet(client: &kube::Client, what: &str) {
    let writes = |m: &Served| {
        m.iter()
            .filter(|((verb, _), _)| !is_read(verb))
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    let started = Instant::now();
    let mut last = writes(&served(client).await);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = writes(&served(client).await);
        let rate = (now - last) / 3.0;
        if rate < 2.0 || started.elapsed() > Duration::from_secs(300) {
            eprintln!(
                "[bench] {what}: quiet after {:.0} s ({rate:.1} writes/s)",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        last = now;
    }
}

/// A watch whose initial list (`n` objects) has been read, so what it yields next is news.
async fn established<K, S>(
    watch: S,
    n: usize,
) -> impl futures::Stream<Item = Result<K, watcher::Error>>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    let mut watch = Box::pin(watch.applied_objects());
    let mut initial = 0;
    while initial < n {
        match watch.try_next().await {
            Ok(Some(_)) => initial += 1,
            other => panic!("watch: {:?}", other.err()),
        }
    }
    watch
}

type Served = BTreeMap<(String, String), f64>;

/// The API server's request counts and each process's CPU time at one moment.
struct Sample {
    served: Served,
    cpu: Vec<f64>,
    at: Instant,
}

async fn sample(client: &kube::Client, processes: &[(&str, u32)]) -> Sample {
    Sample {
        served: served(client).await,
        cpu: processes.iter().map(|(_, p)| cpu_seconds(*p)).collect(),
        at: Instant::now(),
    }
}

/// Prints the API requests per Stack between two samples, and the cores each process used.
fn breakdown(before: &Sample, after: &Sample, n: usize, processes: &[(&str, u32)]) {
    let (mut reads, mut writes) = (0.0, 0.0);
    let mut lines = Vec::new();
    for (key, total) in &after.served {
        let d = total - before.served.get(key).copied().unwrap_or(0.0);
        if d <= 0.0 {
            continue;
        }
        if is_read(&key.0) {
            reads += d;
        } else {
            writes += d;
            lines.push(format!("{} {} {:.2}", key.0, key.1, d / n as f64));
        }
    }
    println!(
        "  API requests per Stack  {:.1} writes, {:.1} reads",
        writes / n as f64,
        reads / n as f64
    );
    println!("  writes per Stack: {}", lines.join(", "));
    let secs = (after.at - before.at).as_secs_f64();
    let cpu: Vec<String> = processes
        .iter()
        .zip(before.cpu.iter().zip(&after.cpu))
        .map(|((name, _), (b, a))| format!("{name} {:.2}", (a - b) / secs))
        .collect();
    println!("  cores used: {}", cpu.join(", "));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The targets of issue 22, as ratios ours / PKO (at most).
const VS_RSS: f64 = 0.25;
const VS_CPU: f64 = 0.5;
const VS_REQUESTS: f64 = 0.5;
const VS_LATENCY: f64 = 0.7;

/// The user both operators authenticate as (`support::operator::operator_kubeconfig`).
const OPERATOR_USER: &str = "system:serviceaccount:pulumi-kubernetes-operator:controller-manager";

/// Which operator a run measures.
enum Contender {
    Ours,
    /// PKO's manager binary (tool `pko-manager`).
    Pko(std::path::PathBuf),
}

impl Contender {
    fn name(&self) -> &'static str {
        match self {
            Contender::Ours => "ours",
            Contender::Pko(_) => "PKO",
        }
    }
}

/// A running operator; stopped when dropped.
enum Running {
    Ours(op_support::Operator),
    Pko(e2e::process::Process),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Ours(op) => op.process.pid(),
            Running::Pko(p) => p.pid(),
        }
    }
}

/// The requests one user made between two moments, from the audit log (leases left out:
/// leader election renews them on a timer, whatever the Stacks do).
#[derive(Default)]
struct Own {
    reads: f64,
    writes: f64,
    by_kind: BTreeMap<(String, String), f64>,
}

impl Own {
    fn count(&mut self, verb: &str, resource: &str) {
        if is_read(verb) {
            self.reads += 1.0;
        } else {
            self.writes += 1.0;
        }
        *self
            .by_kind
            .entry((verb.to_string(), resource.to_string()))
            .or_insert(0.0) += 1.0;
    }

    fn total(&self) -> f64 {
        self.reads + self.writes
    }

    fn print(&self, what: &str, n: usize) {
        let n = n as f64;
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .filter(|((verb, _), _)| !is_read(verb))
            .map(|((verb, res), c)| format!("{verb} {res} {:.2}", c / n))
            .collect();
        println!(
            "  its requests per Stack, {what}: {:.2} ({:.2} writes, {:.2} reads); writes: {}",
            self.total() / n,
            self.writes / n,
            self.reads / n,
            kinds.join(", ")
        );
    }
}

/// Reads the audit log once: `user`'s requests received in `[from, to)`, and those of them
/// received from `revision` on. A watch is counted when it ends (the log records a request
/// once answered), so long watches still open are not.
fn own_requests(
    log: &std::path::Path,
    user: &str,
    from: jiff::Timestamp,
    revision: jiff::Timestamp,
    to: jiff::Timestamp,
) -> (Own, Own) {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("the audit log {}: {e}", log.display()));
    let (mut whole, mut after_revision) = (Own::default(), Own::default());
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if ev["user"]["username"] != user || ev["objectRef"]["resource"] == "leases" {
            continue;
        }
        let Some(at) = ev["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .filter(|at| *at >= from && *at < to)
        else {
            continue;
        };
        let verb = ev["verb"].as_str().unwrap_or("").to_uppercase();
        let resource = ev["objectRef"]["resource"].as_str().unwrap_or("-");
        let resource = match ev["objectRef"]["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        };
        if at >= revision {
            after_revision.count(&verb, &resource);
        }
        whole.count(&verb, &resource);
    }
    (whole, after_revision)
}

/// What one run measured.
struct Figures {
    name: &'static str,
    created: Duration,
    all_exist: Duration,
    /// New revision → StatefulSet, sorted.
    lat: Vec<Duration>,
    /// New revision → Workspace, sorted.
    ws_lat: Vec<Duration>,
    idle_rss: f64,
    rss: f64,
    /// The operator's CPU seconds from its start until every StatefulSet carried the second
    /// revision, and the part of it the revision took.
    cpu: f64,
    cpu_revision: f64,
    /// Its own requests: from its start until every StatefulSet carried the second revision,
    /// then the revision alone.
    own: Own,
    own_revision: Own,
    before: Sample,
    after: Sample,
}

impl Figures {
    fn print(&self, n: usize, processes: &[(&str, u32)]) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("== {} ({n} Stacks)", self.name);
        println!(
            "create requests                     {:.1} s",
            self.created.as_secs_f64()
        );
        println!(
            "all Workspaces + StatefulSets exist {:.1} s after the first create",
            self.all_exist.as_secs_f64()
        );
        println!(
            "new revision -> StatefulSet  p50    {:.0} ms   (target {TARGET_P50_MS:.0} ms, ratio {:.2})",
            ms(self.p50()),
            ms(self.p50()) / TARGET_P50_MS
        );
        println!(
            "new revision -> StatefulSet  p99    {:.0} ms",
            ms(self.p99())
        );
        println!(
            "new revision -> StatefulSet  last   {:.0} ms",
            ms(self.lat[self.lat.len() - 1])
        );
        println!(
            "new revision -> Workspace    p10/p50/p99 {:.0}/{:.0}/{:.0} ms; StatefulSet p10 {:.0} ms",
            ms(percentile(&self.ws_lat, 0.10)),
            ms(percentile(&self.ws_lat, 0.50)),
            ms(percentile(&self.ws_lat, 0.99)),
            ms(percentile(&self.lat, 0.10)),
        );
        println!(
            "operator CPU                        {:.1} s ({:.1} s of it for the revision)",
            self.cpu, self.cpu_revision
        );
        println!(
            "operator peak RSS                   {:.1} MiB (target {TARGET_RSS_MIB:.0} MiB, ratio {:.2}; {:.1} MiB before the Stacks)",
            self.rss,
            self.rss / TARGET_RSS_MIB,
            self.idle_rss
        );
        self.own.print("whole run", n);
        self.own_revision.print("the revision", n);
        println!("the revision (all clients, until the last StatefulSet):");
        breakdown(&self.before, &self.after, n, processes);
    }

    fn p50(&self) -> Duration {
        percentile(&self.lat, 0.50)
    }

    fn p99(&self) -> Duration {
        percentile(&self.lat, 0.99)
    }
}

/// A control plane with an audit log, Flux's CRDs and the bench's GitRepository at its first
/// artifact.
async fn control_plane() -> ControlPlane {
    let cp = ControlPlane::start_with(e2e::control_plane::Options {
        audit: true,
        ..Default::default()
    })
    .await
    .expect("control plane starts");
    cp.install_flux_crds().await.expect("flux CRDs");
    cp.apply_yaml(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: bench}\n\
         spec: {url: 'http://git.invalid/bench.git', interval: 1h, ref: {branch: main}}\n",
        "gitrepository",
        "default",
    )
    .await
    .expect("GitRepository");
    bench_repository(&cp)
        .patch_status(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(&artifact(1)),
        )
        .await
        .expect("first artifact");
    cp
}

fn bench_repository(cp: &ControlPlane) -> Api<DynamicObject> {
    Api::namespaced_with(cp.client(), "default", &git_repositories())
}

/// Installs PKO from its quickstart manifest, all but the Deployment (its manager runs here as
/// a process, as ours does), and starts its manager with the flags ours gets, but without
/// leader election: out of a cluster controller-runtime refuses it ("unable to find leader
/// election namespace"; PKO has no flag for the namespace). That spares PKO the lease renewals
/// ours makes every 2 s (not counted in the requests; in the CPU they are).
async fn start_pko(cp: &ControlPlane, manager: &std::path::Path) -> e2e::process::Process {
    let pko = e2e::cluster::tool_dir("pko", "pulumi-kubernetes-agent").expect("tool pko");
    let manifest = std::fs::read_to_string(pko.join("quickstart/install.yaml"))
        .expect("PKO's quickstart manifest");
    let docs: Vec<&str> = manifest
        .split("\n---\n")
        .filter(|d| !d.lines().any(|l| l == "kind: Deployment"))
        .collect();
    let file = cp.dir().join("pko-install.yaml");
    std::fs::write(&file, docs.join("\n---\n")).expect("write PKO's manifest");
    cp.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])
        .unwrap_or_else(|e| panic!("PKO's quickstart manifest: {e}"));
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/stacks.pulumi.com",
        "crd/workspaces.auto.pulumi.com",
        "crd/updates.auto.pulumi.com",
    ])
    .unwrap_or_else(|e| panic!("PKO's CRDs: {e}"));
    let kubeconfig = op_support::operator_kubeconfig(cp).await;
    let health = e2e::process::free_port();
    let program = format!("127.0.0.1:{}", e2e::process::free_port());
    let mut cmd = std::process::Command::new(manager);
    cmd.args([
        &format!("--health-probe-bind-address=127.0.0.1:{health}"),
        "--metrics-bind-address=0",
        &format!("--program-fs-addr={program}"),
        &format!("--program-fs-adv-addr={program}"),
        "--zap-log-level=info",
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("KUBECONFIG", &kubeconfig)
    .env("POD_NAMESPACE", op_support::OPERATOR_NS)
    .env("POD_SA_NAME", "controller-manager")
    .env("AGENT_IMAGE", op_support::AGENT_IMAGE);
    let process = e2e::process::Process::spawn("pko-manager", cmd, cp.dir()).expect("PKO starts");
    let url = format!("http://127.0.0.1:{health}/readyz");
    let log = process.log_path().to_path_buf();
    wait_for(Duration::from_secs(60), "PKO's manager to be ready", || {
        let url = url.clone();
        let log = log.clone();
        async move {
            let ok = op_support::http_get(&url)
                .await
                .is_some_and(|(code, _)| code == 200);
            if !ok && e2e::process::tail(&log, 40).contains("\"level\":\"error\"") {
                panic!("PKO's manager failed:\n{}", e2e::process::tail(&log, 40));
            }
            ok.then_some(())
        }
    })
    .await;
    process
}

/// Creates `n` Stacks, 16 requests in flight.
async fn create_stacks(cp: &ControlPlane, n: usize) {
    let stacks: Api<DynamicObject> =
        Api::namespaced_with(cp.client(), "default", &support::stacks());
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
}

/// Runs one operator through the Stacks' creation and a new revision.
async fn measure(
    cp: &ControlPlane,
    contender: &Contender,
    n: usize,
    processes: &mut Vec<(&'static str, u32)>,
) -> (Figures, Running) {
    let ws_api: Api<DynamicObject> = Api::namespaced_with(cp.client(), "default", &workspaces());
    let sts_api: Api<StatefulSet> = Api::namespaced(cp.client(), "default");
    let t_start = jiff::Timestamp::now();
    let running = match contender {
        Contender::Ours => {
            let kubeconfig = op_support::install(cp).await;
            Running::Ours(op_support::start(cp, &kubeconfig, &[]).await)
        }
        Contender::Pko(manager) => Running::Pko(start_pko(cp, manager).await),
    };
    let pid = running.pid();
    processes.push(("operator", pid));
    let idle_rss = peak_rss_mib(pid);

    let started = Instant::now();
    create_stacks(cp, n).await;
    let created = started.elapsed();
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
    quiet(&cp.client(), "before the revision").await;

    // A new revision; watch each Workspace and StatefulSet take it. Both watches are established
    // (their initial lists drained) before the change.
    let second = digest(2);
    let sts_watch = established(watcher(sts_api.clone(), watcher::Config::default()), n).await;
    let ws_watch = established(watcher(ws_api.clone(), watcher::Config::default()), n).await;
    let before = sample(&cp.client(), processes).await;
    // `PPROF=file`: a CPU profile of the API server during the wave, for `go tool pprof`.
    let profile = std::env::var_os("PPROF").map(|path| {
        let client = cp.client();
        tokio::spawn(async move {
            let req = http::Request::get("/debug/pprof/profile?seconds=5")
                .body(Vec::new())
                .expect("pprof request");
            let mut body = Vec::new();
            match client.request_stream(req).await {
                Ok(mut r) => {
                    use futures::AsyncReadExt;
                    r.read_to_end(&mut body).await.expect("read profile");
                    std::fs::write(&path, body).expect("write profile");
                }
                Err(e) => eprintln!("profile: {e}"),
            }
        })
    });
    let t_revision = jiff::Timestamp::now();
    let revised = Instant::now();
    bench_repository(cp)
        .patch_status(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(&artifact(2)),
        )
        .await
        .expect("second artifact");
    let ws_digest = second.clone();
    let (ws_lat, lat) = tokio::join!(
        first_seen(ws_watch, n, revised, |ws: &DynamicObject| {
            ws.data["spec"]["flux"]["digest"].as_str() == Some(ws_digest.as_str())
        }),
        first_seen(sts_watch, n, revised, |sts: &StatefulSet| {
            digest_of(sts).as_deref() == Some(second.as_str())
        }),
    );
    let after = sample(&cp.client(), processes).await;
    let t_end = jiff::Timestamp::now();
    if let Some(p) = profile {
        let _ = p.await;
    }
    // `DUMP=dir`: one Workspace and its StatefulSet as the API server stores them.
    if let Some(dir) = std::env::var_os("DUMP") {
        let dir = std::path::PathBuf::from(dir).join(contender.name());
        std::fs::create_dir_all(&dir).expect("DUMP dir");
        let ws = ws_api.get("s0000").await.expect("Workspace");
        let sts = sts_api.get("s0000-workspace").await.expect("StatefulSet");
        std::fs::write(
            dir.join("workspace.json"),
            serde_json::to_vec_pretty(&ws).expect("json"),
        )
        .expect("write");
        std::fs::write(
            dir.join("statefulset.json"),
            serde_json::to_vec_pretty(&sts).expect("json"),
        )
        .expect("write");
    }
    let (own, own_revision) =
        own_requests(&cp.audit_log(), OPERATOR_USER, t_start, t_revision, t_end);
    let cpu_index = processes.len() - 1;
    let figures = Figures {
        name: contender.name(),
        created,
        all_exist,
        lat,
        ws_lat,
        idle_rss,
        rss: peak_rss_mib(pid),
        cpu: after.cpu[cpu_index],
        cpu_revision: after.cpu[cpu_index] - before.cpu[cpu_index],
        own,
        own_revision,
        before,
        after,
    };
    (figures, running)
}

/// The baseline: what the API server alone needs for the same change. With the operator
/// stopped, this program does only the two writes a revision needs per Stack, built by the
/// operator's own functions — the Workspace the Stack controller would apply, then the
/// StatefulSet the Workspace controller would apply — as 50 chains at once (the operator runs
/// 25 Stack and 25 Workspace reconciles at once).
async fn baseline(cp: &ControlPlane, n: usize, ours: &Figures, processes: &[(&str, u32)]) {
    quiet(&cp.client(), "before the baseline").await;
    let sts_api: Api<StatefulSet> = Api::namespaced(cp.client(), "default");
    let third = digest(3);
    let sts_watch = established(watcher(sts_api.clone(), watcher::Config::default()), n).await;
    let typed: Api<Stack> = Api::namespaced(cp.client(), "default");
    let all = typed
        .list(&ListParams::default())
        .await
        .expect("Stacks")
        .items;
    let settings = Settings::from_vars(&HashMap::from([
        (
            "AGENT_IMAGE".to_string(),
            op_support::AGENT_IMAGE.to_string(),
        ),
        ("FETCH_IMAGE".to_string(), support::FETCH_IMAGE.to_string()),
    ]))
    .expect("settings");
    let url = artifact(3)["status"]["artifact"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    let base_before = sample(&cp.client(), processes).await;
    let base_started = Instant::now();
    let chains = stream::iter(all)
        .map(|stack| {
            let (client, settings, url, third) =
                (cp.client(), settings.clone(), url.clone(), third.clone());
            async move {
                let source = Source::Artifact {
                    url,
                    digest: third,
                    dir: Some("app".into()),
                };
                let ws = desired_workspace(&stack, &source).expect("Workspace");
                let ws_api: Api<Workspace> = Api::namespaced(client.clone(), "default");
                let name = stack.metadata.name.clone().unwrap_or_default();
                let applied = controller::apply(&ws_api, &name, OPERATOR, &ws)
                    .await
                    .expect("Workspace apply");
                let sts = desired::statefulset(&applied, &settings).expect("StatefulSet");
                let sts_api: Api<StatefulSet> = Api::namespaced(client, "default");
                controller::apply(&sts_api, &desired::object_name(&applied), OPERATOR, &sts)
                    .await
                    .expect("StatefulSet apply");
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<()>>();
    let (_, base_lat) = tokio::join!(
        chains,
        first_seen(sts_watch, n, base_started, |sts: &StatefulSet| {
            digest_of(sts).as_deref() == Some(third.as_str())
        }),
    );
    let base_after = sample(&cp.client(), processes).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let base_p50 = percentile(&base_lat, 0.50);
    println!(
        "baseline (only the 2 writes per Stack, no operator): p50 {:.0} ms, p99 {:.0} ms; operator p50 / baseline p50 = {:.2}",
        ms(base_p50),
        ms(percentile(&base_lat, 0.99)),
        ms(ours.p50()) / ms(base_p50)
    );
    println!("the baseline:");
    breakdown(&base_before, &base_after, n, processes);
}

/// One line of the comparison: ours, PKO's, the ratio and whether it meets its target.
fn versus(what: &str, ours: f64, pko: f64, unit: &str, target: f64) {
    let ratio = ours / pko;
    let verdict = if ratio <= target { "met" } else { "MISSED" };
    println!(
        "  {what:<34} {ours:>9.1} {unit:<4} {pko:>9.1} {unit:<4} {ratio:>6.2}  (target <= {target}: {verdict})"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("STACKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let pko = std::env::var_os("PKO_MANAGER").map(std::path::PathBuf::from);

    let ours = {
        let cp = control_plane().await;
        let mut processes: Vec<(&str, u32)> = cp.pids().to_vec();
        processes.push(("this bench", std::process::id()));
        let (ours, running) = measure(&cp, &Contender::Ours, n, &mut processes).await;
        ours.print(n, &processes);
        drop(running);
        baseline(&cp, n, &ours, &processes).await;
        ours
    };
    let Some(manager) = pko else {
        return;
    };
    let theirs = {
        let cp = control_plane().await;
        let mut processes: Vec<(&str, u32)> = cp.pids().to_vec();
        processes.push(("this bench", std::process::id()));
        let (theirs, _running) = measure(&cp, &Contender::Pko(manager), n, &mut processes).await;
        theirs.print(n, &processes);
        theirs
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("== ours / PKO, {n} Stacks, one after the other on fresh control planes");
    println!("  {:<34} {:>14} {:>14} {:>6}", "", "ours", "PKO", "ratio");
    versus("peak RSS", ours.rss, theirs.rss, "MiB", VS_RSS);
    versus("CPU, whole run", ours.cpu, theirs.cpu, "s", VS_CPU);
    versus(
        "API requests per Stack, whole run",
        ours.own.total() / n as f64,
        theirs.own.total() / n as f64,
        "",
        VS_REQUESTS,
    );
    versus(
        "all Workspaces + StatefulSets exist",
        ours.all_exist.as_secs_f64(),
        theirs.all_exist.as_secs_f64(),
        "s",
        VS_LATENCY,
    );
    versus(
        "new revision -> StatefulSet p50",
        ms(ours.p50()),
        ms(theirs.p50()),
        "ms",
        VS_LATENCY,
    );
    versus(
        "new revision -> StatefulSet p99",
        ms(ours.p99()),
        ms(theirs.p99()),
        "ms",
        VS_LATENCY,
    );
}
