//! The `operator` binary: flags and environment (PKO's manager's, plus `FETCH_IMAGE`), the
//! HTTP servers (health, metrics, Program artifacts), leader election, and the four
//! controllers, with a graceful shutdown that lets running reconciles finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::runtime::leader;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::scope::{Scope, ScopeError};
use crate::controller::settings::Settings;
use crate::controller::{self, Contexts};

mod election;
mod flags;
mod secure_metrics;
mod servers;

use election::{Lease, elect};
use flags::duration_flag;
pub use flags::{Flags, LogFormat, advertised, bind_addr, pko_argv};
use servers::{program_base_url, start_servers};

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

    wind_down(elector, controllers, stop_tx, &workspaces).await;
    info!("operator stopped");
    Ok(())
}

/// Runs until a shutdown signal or the loss of the lease, then stops the controllers: on a
/// signal, the statuses they handed over are written before the lease goes; after a loss, the
/// next leader owns them.
async fn wind_down(
    elector: Option<Arc<leader::Elector>>,
    controllers: tokio::task::JoinHandle<()>,
    stop_tx: watch::Sender<bool>,
    workspaces: &controller::workspace::Context,
) {
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
mod tests;
