//! The HTTP servers every replica runs, leader or not: health, metrics, Program artifacts.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info};

use super::flags::{Flags, advertised, bind_addr};
use super::{ManagerError, secure_metrics};
use crate::controller;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::scope::Scope;

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

/// Where workspace pods fetch Program artifacts (`http://host:port` unless a scheme is given).
pub(super) fn program_base_url(flags: &Flags) -> String {
    let adv = advertised(&flags.program_fs_adv_addr, &flags.program_fs_addr);
    if adv.contains("://") {
        adv
    } else {
        format!("http://{adv}")
    }
}

/// The health, metrics and Program artifact servers, each unless its address is "0". They run
/// on every replica, leader or not, until `stop`.
pub(super) async fn start_servers(
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
