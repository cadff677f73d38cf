//! Leader election: which lease, who holds it, and waiting for it.

use std::sync::Arc;

use super::flags::{Flags, duration_flag};
use super::{ManagerError, shutdown_signal};
use crate::controller::runtime::leader;
use crate::controller::runtime::scope::Scope;

/// How leader election ended before the controllers start.
pub(super) enum Lease {
    /// `--leader-elect` is off: run at once.
    NotElecting,
    Held(Arc<leader::Elector>),
    /// Asked to stop while waiting for the lease.
    ShutDown,
}

/// Who holds the lease: the pod's (host) name and a random part, as controller-runtime makes
/// it, so that two replicas with one host name (`hostNetwork` pods on one node) never both
/// think they lead.
pub(super) fn lease_identity(host: Option<String>) -> String {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState is seeded from the OS's randomness.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let host = host
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "operator".into());
    format!("{host}_{:016x}", h.finish())
}

/// The leader-election lease: PKO's name for an operator of the whole cluster; with a scope
/// of namespaces or a label selector, that name tagged with it, so that shards and tenants
/// running in one namespace each elect their own leader (Flux tags its lease the same way).
pub(super) fn lease_name(scope: &Scope) -> String {
    match scope.tag() {
        tag if tag.is_empty() => "operator.pulumi.com".into(),
        tag => format!("operator.pulumi.com-{tag}"),
    }
}

/// With `--leader-elect`, waits for the lease ([`lease_name`]) in the operator's namespace
/// (or for a shutdown signal).
pub(super) async fn elect(
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
