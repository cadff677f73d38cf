//! Leader election on a `coordination.k8s.io` Lease, as controller-runtime does it: one
//! replica holds the lease and renews it; the others wait for it to expire. A leader that
//! cannot renew within the deadline stops (the process exits and restarts as a follower).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    config: Config,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ours,
    Free,
    Held(String),
}

/// Whether the lease can be taken: ours, free (no holder or expired), or held by another.
fn verdict(lease: &Lease, me: &str, now: jiff::Timestamp) -> Verdict {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me {
        return Verdict::Ours;
    }
    if holder.is_empty() {
        return Verdict::Free;
    }
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match renewed {
        Some(t) if t.checked_add(duration).is_ok_and(|exp| exp > now) => Verdict::Held(holder),
        _ => Verdict::Free,
    }
}

impl Elector {
    pub fn new(client: Client, config: Config) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the lease; true when we hold it afterwards.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let name = &self.config.name;
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = match verdict(&lease, &self.config.identity, jiff::Timestamp::now()) {
            Verdict::Held(_) => return Ok(false),
            Verdict::Ours => self.spec(transitions, spec.acquire_time),
            Verdict::Free => self.spec(transitions + 1, None),
        };
        lease.spec = Some(new_spec);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process leads.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(false) if !announced => {
                    info!(lease = %self.config.name, "another replica leads; waiting for the lease");
                    announced = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: cannot read or write the lease"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the lease until renewal fails for longer than the renew deadline; returns then
    /// (leadership is lost).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("the lease was taken by another replica");
                    return;
                }
                Err(e) => warn!(error = %e, "cannot renew the lease"),
            }
            if last_ok.elapsed() > self.config.renew_deadline {
                warn!("could not renew the lease within the deadline");
                return;
            }
        }
    }

    /// Gives the lease up so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        if verdict(&lease, &self.config.identity, jiff::Timestamp::now()) != Verdict::Ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "cannot release the lease");
        } else {
            info!("released the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
                renew_time: Some(MicroTime(renewed.parse().expect("time"))),
                lease_duration_seconds: Some(secs),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_or_expired() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().expect("t");
        assert_eq!(
            verdict(&lease("me", "2026-01-01T00:00:59Z", 60), "me", now),
            Verdict::Ours
        );
        assert_eq!(
            verdict(&lease("", "2026-01-01T00:00:59Z", 60), "me", now),
            Verdict::Free
        );
        assert_eq!(
            verdict(&lease("other", "2026-01-01T00:00:30Z", 60), "me", now),
            Verdict::Held("other".into())
        );
        assert_eq!(
            verdict(&lease("other", "2025-12-31T23:59:00Z", 60), "me", now),
            Verdict::Free
        );
    }
}
