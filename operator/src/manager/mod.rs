//! The `operator` binary: flags and environment (PKO's manager's, plus `FETCH_IMAGE`), the
//! HTTP servers (health, metrics, Program artifacts), leader election, and the four
//! controllers, with a graceful shutdown that lets running reconciles finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::runtime::leader;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::scope::{Scope, ScopeError};
use crate::controller::settings::Settings;
use crate::controller::{self, Contexts};

mod secure_metrics;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "operator",
    version,
    about = "Deploys Pulumi stacks declared as Stack objects"
)]
pub struct Flags {
    /// Address of the metrics endpoint (`/metrics`); "0" turns it off.
    #[arg(long, default_value = "0")]
    pub metrics_bind_address: String,
    /// Address of the health endpoints (`/healthz`, `/readyz`).
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Run the controllers only while holding the leader lease (`--leader-elect`,
    /// `--leader-elect=true|false` as Go's flag package takes it).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// Where the Program artifact server listens.
    #[arg(long, env = "PROGRAM_FS_ADDR", default_value = ":9090")]
    pub program_fs_addr: String,
    /// The address workspace pods reach the Program server at (default: derived from
    /// --program-fs-addr).
    #[arg(long, env = "PROGRAM_FS_ADV_ADDR", default_value = "")]
    pub program_fs_adv_addr: String,
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "60s")]
    pub leader_election_lease_duration: String,
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "45s")]
    pub leader_election_renew_deadline: String,
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "10s")]
    pub leader_election_retry_period: String,
    /// Timeout of each Kubernetes API request.
    #[arg(long, env = "KUBE_API_TIMEOUT", default_value = "30s")]
    pub kube_api_timeout: String,
    /// Reconciles run at once per controller.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 25)]
    pub max_concurrent_reconciles: u16,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level (a tracing filter: info, debug, operator=debug,...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Accepted for PKO compatibility (`console` = text, `json`).
    #[arg(long, hide = true)]
    pub zap_encoder: Option<String>,
    /// Accepted for PKO compatibility (sets the log level).
    #[arg(long, hide = true)]
    pub zap_log_level: Option<String>,
    /// Accepted for PKO compatibility; ignored.
    #[arg(long, hide = true)]
    pub zap_time_encoding: Option<String>,
    /// Serve the metrics over HTTPS to callers allowed to `get` `/metrics` (TokenReview and
    /// SubjectAccessReview, as PKO); `--metrics-secure=false` for plain HTTP. On by default,
    /// as in PKO.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub metrics_secure: Option<bool>,
    /// Accepted for PKO compatibility; ignored (PKO turns HTTP/2 off on its metrics and webhook
    /// servers by default; we serve no webhooks).
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_http2: Option<bool>,
    /// Accepted for PKO compatibility (controller-runtime's zap development mode); ignored.
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub zap_devel: Option<bool>,
    /// Accepted for PKO compatibility; ignored (errors carry their causes, not stack traces).
    #[arg(long, hide = true)]
    pub zap_stacktrace_level: Option<String>,
    /// Reconcile only the Stacks, Programs, Workspaces and Updates of these namespaces
    /// (comma-separated or repeated; `WATCH_NAMESPACE` too). Unset: every namespace. Roles in
    /// these namespaces are then all the operator needs (config/namespaced, the chart's
    /// `controller.watchNamespaces`).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Flux's: `--watch-all-namespaces=false` without `--watch-namespace` watches the
    /// operator's own namespace only.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub watch_all_namespaces: Option<bool>,
    /// Reconcile only the objects this label selector picks (Flux's sharding, e.g.
    /// `sharding.fluxcd.io/key=shard1`, and `!sharding.fluxcd.io/key` for the shard of the
    /// rest). The Workspaces and Updates made for a Stack carry its labels the selector
    /// names, so the same shard reconciles them.
    #[arg(long)]
    pub watch_label_selector: Option<String>,
    /// Flux's lockdown flag. Accepted: this operator never follows a reference out of a
    /// Stack's namespace, with or without it (Flux sources, Programs, prerequisites and
    /// Secrets are read from the Stack's own namespace; a Secret named in another is refused).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub no_cross_namespace_refs: Option<bool>,
    /// The service account of workspace pods whose Stack names none; unset: `default`, as
    /// PKO.
    #[arg(long)]
    pub default_service_account: Option<String>,
}

impl Flags {
    /// Parses a command line as PKO's manager would take it: an argv[0]-style `/manager`
    /// first (PKO's manifests pass it in `args`, and our image's entrypoint is the operator
    /// itself) and Go's single-dash long flags (`-leader-elect`) are accepted.
    pub fn parse_pko<I, T>(args: I) -> Flags
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Flags::parse_from(pko_argv(args))
    }

    pub fn try_parse_pko<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Flags::try_parse_from(pko_argv(args))
    }

    pub fn leader_elect(&self) -> bool {
        self.leader_elect.unwrap_or(false)
    }

    pub fn metrics_secure(&self) -> bool {
        self.metrics_secure.unwrap_or(true)
    }

    /// What the controllers reconcile; `own_namespace` for `--watch-all-namespaces=false`.
    pub fn scope(&self, own_namespace: &str) -> Result<Scope, ScopeError> {
        let mut namespaces = self.watch_namespace.clone();
        if self.watch_all_namespaces == Some(false)
            && namespaces.iter().all(|n| n.trim().is_empty())
        {
            namespaces = vec![own_namespace.to_string()];
        }
        Scope::new(&namespaces, self.watch_label_selector.as_deref())
    }
}

/// The command line with what PKO's manager accepts and clap does not put right: the program
/// named again first (`/manager` or `/operator`, as a Deployment's `args` does when its image
/// has no entrypoint) is dropped, and `-name[=value]` becomes `--name[=value]`.
pub fn pko_argv<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for (i, arg) in args.into_iter().map(Into::into).enumerate() {
        let text = arg.to_string_lossy();
        if i == 1 && names_the_program(&text) {
            continue;
        }
        if i > 0 && text.len() > 2 && text.starts_with('-') && !text.starts_with("--") {
            out.push(format!("-{text}").into());
            continue;
        }
        out.push(arg);
    }
    out
}

fn names_the_program(arg: &str) -> bool {
    let name = arg.rsplit('/').next().unwrap_or(arg);
    !arg.starts_with('-') && matches!(name, "manager" | "operator")
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{flag}: {detail}")]
    Flag { flag: &'static str, detail: String },
    #[error(transparent)]
    Settings(#[from] controller::settings::SettingsError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(String),
    #[error("cannot listen on {addr} ({what}): {detail}")]
    Listen {
        addr: String,
        what: &'static str,
        detail: String,
    },
    #[error(transparent)]
    SecureMetrics(#[from] secure_metrics::SecureMetricsError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

pub fn init_logging(flags: &Flags) {
    let level = flags
        .zap_log_level
        .clone()
        .unwrap_or_else(|| flags.log_level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json =
        matches!(flags.log_format, LogFormat::Json) || flags.zap_encoder.as_deref() == Some("json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn duration_flag(flag: &'static str, v: &str) -> Result<Duration, ManagerError> {
    controller::duration::parse(v).map_err(|e| ManagerError::Flag {
        flag,
        detail: e.to_string(),
    })
}

/// `:9090` → `0.0.0.0:9090`.
pub fn bind_addr(flag: &'static str, v: &str) -> Result<Option<SocketAddr>, ManagerError> {
    if v == "0" || v.is_empty() {
        return Ok(None);
    }
    let full = if v.starts_with(':') {
        format!("0.0.0.0{v}")
    } else {
        v.to_string()
    };
    full.parse().map(Some).map_err(|e| ManagerError::Flag {
        flag,
        detail: format!("{v:?} is not host:port ({e})"),
    })
}

/// What workspace pods dial for Program artifacts: the flag, or the bind address with a
/// usable host (PKO's rule).
pub fn advertised(adv: &str, bind: &str) -> String {
    if !adv.is_empty() {
        return adv.to_string();
    }
    let (host, port) = bind.rsplit_once(':').unwrap_or((bind, "9090"));
    let host = match host {
        "" => "localhost".to_string(),
        "0.0.0.0" | "[::]" => std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        h => h.to_string(),
    };
    format!("{host}:{port}")
}

async fn listen(
    addr: SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, ManagerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ManagerError::Listen {
            addr: addr.to_string(),
            what,
            detail: e.to_string(),
        })?;
    info!(%addr, what, "listening");
    Ok(listener)
}

async fn serve(
    addr: SocketAddr,
    what: &'static str,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    let listener = listen(addr, what).await?;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            error!(what, error = %e, "HTTP server failed");
        }
    });
    Ok(())
}

pub async fn run(flags: Flags) -> Result<(), ManagerError> {
    let mut settings = Settings::from_env()?;
    let scope = flags.scope(&settings.namespace)?;
    settings.default_service_account = flags
        .default_service_account
        .clone()
        .filter(|s| !s.trim().is_empty());
    let client = client(&flags).await?;
    check_selector(&client, &scope).await?;
    if !(settings.agent_image_given && settings.fetch_image_given) {
        match own_image(&client, &settings.namespace).await {
            Ok(image) => settings = settings.with_own_image(&image),
            Err(why) => warn!(
                agent_image = %settings.agent_image,
                "AGENT_IMAGE is not set and the operator's own image is unknown ({why}); \
                 set AGENT_IMAGE to the image workspace pods should run"
            ),
        }
    }
    set_git_timeouts();
    let metrics = Arc::new(Metrics::default());
    let base = program_base_url(&flags);
    let ctx = Contexts::new(
        client.clone(),
        settings,
        Arc::clone(&metrics),
        base.clone(),
        scope.clone(),
    );
    let workspaces = Arc::clone(&ctx.workspace);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(false);
    start_servers(&flags, &client, &scope, &metrics, ready_rx, &stop_rx).await?;

    // A standby replica is ready (it serves Program artifacts) while it waits for the lease.
    let _ = ready_tx.send(true);
    let elector = match elect(&flags, &client, &workspaces.settings.namespace, &scope).await? {
        Lease::NotElecting => None,
        Lease::Held(e) => Some(e),
        Lease::ShutDown => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };

    let stop = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let n = flags.max_concurrent_reconciles.max(1);
    let controllers = tokio::spawn({
        let rx = stop_rx.clone();
        let scope = scope.clone();
        async move {
            tokio::join!(
                controller::workspace::run(ctx.workspace, &scope, n, stop(&rx)),
                controller::update::run(ctx.update, &scope, n, stop(&rx)),
                controller::stack::run(ctx.stack, &scope, n, stop(&rx)),
                controller::program::run(ctx.program, &scope, stop(&rx)),
            );
        }
    });
    info!(
        agent_image = %workspaces.settings.agent_image,
        fetch_image = %workspaces.settings.fetch_image,
        program_url = %base,
        namespaces = %scope.namespaces().map_or("all".into(), |n| n.join(",")),
        label_selector = scope.selector().unwrap_or(""),
        "controllers running"
    );

    let lost = async {
        match &elector {
            Some(e) => e.keep().await,
            None => std::future::pending().await,
        }
    };
    let still_leader = tokio::select! {
        _ = shutdown_signal() => {
            info!("shutting down: letting running reconciles finish");
            true
        }
        _ = lost => {
            warn!("leadership lost: stopping");
            // The next leader owns the statuses from now on.
            workspaces.status_queue.close();
            false
        }
    };
    let _ = stop_tx.send(true);
    if let Err(e) = controllers.await {
        error!(error = %e, "controllers ended abnormally");
    }
    if still_leader {
        // Statuses handed over by the last reconciles are written before the lease goes.
        workspaces.status_queue.flush(Duration::from_secs(10)).await;
        workspaces.status_queue.close();
    }
    if let Some(e) = &elector {
        e.release().await;
    }
    info!("operator stopped");
    Ok(())
}

/// A client for the API server with `--kube-api-timeout` on connects and writes (reads wait
/// at least 5 minutes: watches are long reads).
async fn client(flags: &Flags) -> Result<kube::Client, ManagerError> {
    let timeout = duration_flag("--kube-api-timeout", &flags.kube_api_timeout)?;
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| ManagerError::Kube(e.to_string()))?;
    config.read_timeout = Some(timeout.max(Duration::from_secs(300)));
    config.write_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    kube::Client::try_from(config).map_err(|e| ManagerError::Kube(e.to_string()))
}

/// Where workspace pods fetch Program artifacts (`http://host:port` unless a scheme is given).
fn program_base_url(flags: &Flags) -> String {
    let adv = advertised(&flags.program_fs_adv_addr, &flags.program_fs_addr);
    if adv.contains("://") {
        adv
    } else {
        format!("http://{adv}")
    }
}

/// The health, metrics and Program artifact servers, each unless its address is "0". They run
/// on every replica, leader or not, until `stop`.
async fn start_servers(
    flags: &Flags,
    client: &kube::Client,
    scope: &Scope,
    metrics: &Arc<Metrics>,
    ready: watch::Receiver<bool>,
    stop: &watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    if let Some(addr) = bind_addr(
        "--health-probe-bind-address",
        &flags.health_probe_bind_address,
    )? {
        serve(addr, "health", health_router(ready), stop.clone()).await?;
    }
    if let Some(addr) = bind_addr("--metrics-bind-address", &flags.metrics_bind_address)? {
        let router = metrics_router(Arc::clone(metrics));
        if flags.metrics_secure() {
            let tls = secure_metrics::self_signed_tls()?;
            let reviewer = Arc::new(secure_metrics::Reviewer::new(client.clone()));
            let router = router.layer(axum::middleware::from_fn_with_state(
                reviewer,
                secure_metrics::guard,
            ));
            let listener = listen(addr, "metrics (HTTPS, --metrics-secure)").await?;
            secure_metrics::serve_tls(listener, tls, router, stop.clone());
        } else {
            serve(addr, "metrics", router, stop.clone()).await?;
        }
    }
    if let Some(addr) = bind_addr("--program-fs-addr", &flags.program_fs_addr)? {
        let served = controller::program::served(client.clone(), scope);
        let router = controller::program::router(served);
        serve(addr, "program artifacts", router, stop.clone()).await?;
    }
    Ok(())
}

/// `/healthz` always, `/readyz` once `ready` says so.
fn health_router(ready: watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move {
                    if *ready.borrow() {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
}

/// `/metrics` in the OpenMetrics text format.
fn metrics_router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    )
}

/// How leader election ended before the controllers start.
enum Lease {
    /// `--leader-elect` is off: run at once.
    NotElecting,
    Held(Arc<leader::Elector>),
    /// Asked to stop while waiting for the lease.
    ShutDown,
}

/// The image of the operator's own container: of its pod (`POD_NAME`, else the host name, in
/// `namespace`), the only container, or the one named `manager` (PKO's manifests' name).
async fn own_image(client: &kube::Client, namespace: &str) -> Result<String, String> {
    use k8s_openapi::api::core::v1::Pod;
    // A pod's host name is its name unless its spec says otherwise.
    let name = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|n| n.trim().to_string())
        .map_err(|_| "no POD_NAME, HOSTNAME or host name".to_string())?;
    let pod = kube::Api::<Pod>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .map_err(|e| format!("reading pod {namespace}/{name}: {e}"))?;
    let containers = pod.spec.map(|s| s.containers).unwrap_or_default();
    let ours = match containers.as_slice() {
        [only] => Some(only),
        many => many.iter().find(|c| c.name == "manager"),
    };
    ours.and_then(|c| c.image.clone()).ok_or_else(|| {
        format!("pod {namespace}/{name} has neither a single container nor one named manager")
    })
}

/// Who holds the lease: the pod's (host) name and a random part, as controller-runtime makes
/// it, so that two replicas with one host name (`hostNetwork` pods on one node) never both
/// think they lead.
fn lease_identity(host: Option<String>) -> String {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState is seeded from the OS's randomness.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let host = host
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "operator".into());
    format!("{host}_{:016x}", h.finish())
}

/// With `--leader-elect`, waits for the lease `operator.pulumi.com` in the operator's
/// namespace (or for a shutdown signal).
/// The leader-election lease: PKO's name for an operator of the whole cluster; with a scope
/// of namespaces or a label selector, that name tagged with it, so that shards and tenants
/// running in one namespace each elect their own leader (Flux tags its lease the same way).
fn lease_name(scope: &Scope) -> String {
    match scope.tag() {
        tag if tag.is_empty() => "operator.pulumi.com".into(),
        tag => format!("operator.pulumi.com-{tag}"),
    }
}

/// Asks the API server once for a Stack with `--watch-label-selector`, so that a selector it
/// refuses stops the operator at start, naming the flag, instead of failing every watch.
async fn check_selector(client: &kube::Client, scope: &Scope) -> Result<(), ManagerError> {
    let Some(selector) = scope.selector() else {
        return Ok(());
    };
    let Some((_, api)) = scope
        .apis::<crate::api::stack::Stack>(client)
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match api.list_metadata(&params).await {
        Err(kube::Error::Api(e)) if e.code == 400 => Err(ManagerError::Flag {
            flag: "--watch-label-selector",
            detail: format!("{selector:?} is refused by the API server: {}", e.message),
        }),
        // Anything else (RBAC, a slow API server) shows in the watches' errors.
        _ => Ok(()),
    }
}

async fn elect(
    flags: &Flags,
    client: &kube::Client,
    namespace: &str,
    scope: &Scope,
) -> Result<Lease, ManagerError> {
    if !flags.leader_elect() {
        return Ok(Lease::NotElecting);
    }
    let identity = lease_identity(
        std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok(),
    );
    let e = leader::Elector::new(
        client.clone(),
        leader::Config {
            namespace: namespace.to_string(),
            name: lease_name(scope),
            identity,
            lease_duration: duration_flag(
                "--leader-election-lease-duration",
                &flags.leader_election_lease_duration,
            )?,
            renew_deadline: duration_flag(
                "--leader-election-renew-deadline",
                &flags.leader_election_renew_deadline,
            )?,
            retry_period: duration_flag(
                "--leader-election-retry-period",
                &flags.leader_election_retry_period,
            )?,
        },
    );
    tokio::select! {
        _ = e.acquire() => Ok(Lease::Held(Arc::new(e))),
        _ = shutdown_signal() => Ok(Lease::ShutDown),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// libgit2's connect and read timeouts (process-wide) for `ls-remote`.
fn set_git_timeouts() {
    // SAFETY: set once at startup, before any git call.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PKO v2.9.0's manager arguments: its chart (`deploy/helm/pulumi-operator`), its
    /// kustomize base (`operator/config/manager`) and its quickstart install.yaml.
    #[test]
    fn pko_s_deployment_arguments_are_taken() {
        let chart = [
            "/operator",
            "/manager",
            "--leader-elect",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=:8383",
            "--metrics-secure=false",
            "--program-fs-adv-addr=pulumi-kubernetes-operator.ns:80",
            "--zap-log-level=info",
            "--zap-encoder=json",
            "--zap-time-encoding=iso8601",
        ];
        let f = Flags::try_parse_pko(chart).expect("the chart's arguments parse");
        assert!(f.leader_elect());
        assert_eq!(f.metrics_bind_address, ":8383");
        assert_eq!(f.metrics_secure, Some(false));
        assert_eq!(f.program_fs_adv_addr, "pulumi-kubernetes-operator.ns:80");
        assert_eq!(f.zap_encoder.as_deref(), Some("json"));
        let quickstart = [
            "/operator",
            "/manager",
            "--metrics-bind-address=:8443",
            "--leader-elect",
            "--health-probe-bind-address=:8081",
            "--enable-http2",
            "--metrics-secure",
            "--zap-devel=false",
            "--zap-stacktrace-level=error",
        ];
        let f = Flags::try_parse_pko(quickstart).expect("the quickstart's arguments parse");
        assert_eq!(
            (f.leader_elect(), f.metrics_secure, f.enable_http2),
            (true, Some(true), Some(true))
        );
        let go_style = [
            "/operator",
            "-leader-elect=false",
            "-leader-election-lease-duration",
            "1m30s",
        ];
        let f = Flags::try_parse_pko(go_style).expect("Go's single-dash flags parse");
        assert!(!f.leader_elect());
        assert_eq!(f.leader_election_lease_duration, "1m30s");
        let f = Flags::try_parse_pko(["/operator"]).expect("no arguments");
        assert!(!f.leader_elect());
    }

    #[test]
    fn only_a_leading_program_name_is_dropped() {
        let argv = |a: &[&str]| {
            pko_argv(a.iter().copied())
                .into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            argv(&["/operator", "/manager", "--leader-elect"]),
            ["/operator", "--leader-elect"]
        );
        assert_eq!(argv(&["/operator", "manager"]), ["/operator"]);
        assert_eq!(
            argv(&["/operator", "--leader-elect", "/manager"]),
            ["/operator", "--leader-elect", "/manager"]
        );
        assert_eq!(argv(&["/operator", "-h"]), ["/operator", "-h"]);
        let stray = Flags::try_parse_pko(["/operator", "/bin/sh"]).unwrap_err();
        assert_eq!(stray.kind(), clap::error::ErrorKind::UnknownArgument);
        let typo = Flags::try_parse_pko(["/operator", "--leader-elct"]).unwrap_err();
        assert_eq!(typo.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn the_tenancy_flags_take_fluxs_spellings() {
        let f = Flags::try_parse_pko([
            "/operator",
            "--watch-namespace=team-a,team-b",
            "--watch-namespace",
            "team-c",
            "--watch-label-selector=sharding.fluxcd.io/key=shard1",
            "--no-cross-namespace-refs",
            "--default-service-account=pulumi",
        ])
        .expect("parse");
        let scope = f.scope("ops").expect("scope");
        assert_eq!(
            scope.namespaces(),
            Some(&["team-a", "team-b", "team-c"].map(String::from)[..])
        );
        assert_eq!(scope.selector(), Some("sharding.fluxcd.io/key=shard1"));
        assert_eq!(f.no_cross_namespace_refs, Some(true));
        assert_eq!(f.default_service_account.as_deref(), Some("pulumi"));
        assert_ne!(lease_name(&scope), lease_name(&Scope::default()));
        assert_eq!(lease_name(&Scope::default()), "operator.pulumi.com");

        let own =
            Flags::try_parse_pko(["/operator", "-watch-all-namespaces=false"]).expect("parse");
        assert_eq!(
            own.scope("ops").expect("scope").namespaces(),
            Some(&["ops".to_string()][..])
        );
        let bad = Flags::try_parse_pko(["/operator", "--watch-namespace=Team"]).expect("parse");
        assert!(
            bad.scope("ops")
                .unwrap_err()
                .to_string()
                .contains("--watch-namespace")
        );
        let bad = Flags::try_parse_pko(["/operator", "--watch-label-selector=a b"]).expect("parse");
        assert!(
            bad.scope("ops")
                .unwrap_err()
                .to_string()
                .contains("--watch-label-selector")
        );
    }

    #[test]
    fn lease_identities_differ_for_one_host_name() {
        let a = lease_identity(Some("pod".into()));
        let b = lease_identity(Some("pod".into()));
        assert!(a.starts_with("pod_") && b.starts_with("pod_"), "{a} {b}");
        assert_ne!(a, b);
        assert!(lease_identity(None).starts_with("operator_"));
    }

    #[test]
    fn addresses_are_derived_as_pko_does() {
        assert_eq!(advertised("svc.ns:80", ":9090"), "svc.ns:80");
        assert_eq!(advertised("", ":9090"), "localhost:9090");
        assert_eq!(advertised("", "10.0.0.1:9090"), "10.0.0.1:9090");
        assert_eq!(
            bind_addr("f", ":8081").expect("ok"),
            Some("0.0.0.0:8081".parse().expect("addr"))
        );
        assert_eq!(bind_addr("f", "0").expect("ok"), None);
        assert!(bind_addr("f", "nonsense").is_err());
    }
}
