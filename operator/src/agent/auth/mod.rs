//! Who may call the agent. In `kube` mode every call carries a Kubernetes service-account token
//! (`authorization: Bearer <jwt>`) minted for the audience `<workspace>.<namespace>`; the agent
//! asks the apiserver who it is (TokenReview) and whether that identity may `use` the
//! `workspaces/rpc` subresource of this Workspace (SubjectAccessReview). Answers are cached
//! briefly, keyed by a hash of the token (the token itself is never kept or logged); a token's
//! verdict never outlives the token's own `exp`. The apiserver is protected from callers with
//! junk, without letting them lock out anyone else:
//! - a bearer that is not a JWT, whose `exp` has passed, or that is not for this workspace's
//!   audience is refused without a review;
//! - failed reviews are counted per caller address: an address with many recent failures has
//!   its new tokens refused for a short while, other addresses are not affected;
//! - at most a few reviews run at once, and only for tokens that name an issuer the apiserver
//!   already verified, from an address with a clean record (the operator's, normally); anything
//!   else shares one slot of its own, so junk never queues ahead of the operator. An issuer is
//!   learned from a verified token, never assumed, so a cluster that changes issuers is not
//!   locked out: its new tokens are reviewed in that slot and their issuer learned.

mod claims;
mod peers;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::{debug, warn};

use crate::api::names::group;
use crate::controller::runtime::outage;
use crate::verdicts::Verdicts;
use claims::{Claims, now_unix};
use peers::{PeerRecord, Peers};

const AUTHN_OK_TTL: Duration = Duration::from_secs(3600);
const AUTHN_FAIL_TTL: Duration = Duration::from_secs(60);
const AUTHZ_ALLOW_TTL: Duration = Duration::from_secs(300);
const AUTHZ_DENY_TTL: Duration = Duration::from_secs(5);
/// TokenReviews in flight at once for callers with a clean record.
const CONCURRENT_REVIEWS: usize = 4;
/// ... and for callers whose tokens failed review recently, all of them together.
const SUSPECT_REVIEWS: usize = 1;
/// Verified issuers remembered (a cluster has one, two while it migrates).
const MAX_ISSUERS: usize = 4;

/// The identity a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

pub enum Authenticator {
    /// No checks (`--auth-mode none`): for local runs only.
    None,
    Kube(Box<KubeAuth>),
}

impl Authenticator {
    pub async fn check<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Kube(k) => {
                // Unknown only without a TCP listener (never in `serve`): one shared budget.
                let peer = request
                    .remote_addr()
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                k.check(request.metadata(), peer).await
            }
        }
    }
}

pub struct KubeAuth {
    client: kube::Client,
    audiences: Vec<String>,
    namespace: String,
    workspace: String,
    authn: Verdicts<[u8; 32], Result<Identity, String>>,
    authz: Verdicts<[u8; 32], Result<(), String>>,
    reviews: Semaphore,
    suspect_reviews: Semaphore,
    peers: Peers,
    /// The issuers of the tokens the apiserver verified.
    issuers: Mutex<Vec<String>>,
    /// For the hint when the TokenReview API is refused.
    pod_service_account: String,
}

/// The bearer token of a call, or why there is none (messages as grpc-go's auth middleware).
pub fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Status::unauthenticated("Request unauthenticated with Bearer"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("Bad authorization string"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated(
            "Request unauthenticated with Bearer",
        ));
    }
    Ok(token)
}

impl KubeAuth {
    pub fn new(
        client: kube::Client,
        audiences: Vec<String>,
        namespace: String,
        workspace: String,
    ) -> KubeAuth {
        let pod_service_account = format!(
            "{}/{}",
            std::env::var("POD_NAMESPACE").unwrap_or_else(|_| namespace.clone()),
            std::env::var("POD_SA_NAME").unwrap_or_else(|_| "default".into())
        );
        KubeAuth {
            client,
            audiences,
            namespace,
            workspace,
            authn: Verdicts::new(),
            authz: Verdicts::new(),
            reviews: Semaphore::new(CONCURRENT_REVIEWS),
            suspect_reviews: Semaphore::new(SUSPECT_REVIEWS),
            peers: Peers::default(),
            issuers: Mutex::new(Vec::new()),
            pod_service_account,
        }
    }

    async fn check(&self, metadata: &MetadataMap, peer: IpAddr) -> Result<(), Status> {
        let token = bearer(metadata)?;
        let identity = self.authenticate(token, peer).await?;
        self.authorize(&identity).await?;
        debug!(user = %identity.username, "call authorized");
        Ok(())
    }

    async fn authenticate(&self, token: &str, peer: IpAddr) -> Result<Identity, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.authn.get(&key) {
            return hit.map_err(Status::unauthenticated);
        }
        let claims = Claims::read(token, now_unix()).map_err(Status::unauthenticated)?;
        claims
            .precheck(&self.audiences)
            .map_err(Status::unauthenticated)?;
        let record = self.peers.record(peer);
        if record == PeerRecord::Saturated {
            return Err(Status::unavailable(
                "too many invalid tokens were presented from this address recently; try again in \
                 a few seconds",
            ));
        }
        let known_issuer = claims.issuer.as_ref().is_some_and(|iss| {
            self.issuers
                .lock()
                .is_ok_and(|known| known.iter().any(|k| k == iss))
        });
        let pool = if record == PeerRecord::Clean && known_issuer {
            &self.reviews
        } else {
            &self.suspect_reviews
        };
        let _permit = pool
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?;
        // Another call may have reviewed the same token while this one waited.
        if let Some(hit) = self.authn.get(&key) {
            return hit.map_err(Status::unauthenticated);
        }
        let verdict = self.review(token).await?;
        let ttl = if verdict.is_ok() {
            // A verified token's issuer is the cluster's: its later tokens get the clean lane.
            if let (Some(iss), Ok(mut known)) = (claims.issuer.clone(), self.issuers.lock())
                && !known.contains(&iss)
            {
                if known.len() >= MAX_ISSUERS {
                    known.remove(0);
                }
                known.push(iss);
            }
            // Never trust a verdict past the token's own expiry.
            AUTHN_OK_TTL.min(claims.expires_in)
        } else {
            self.peers.failed(peer);
            AUTHN_FAIL_TTL
        };
        self.authn.put(key, ttl, verdict.clone());
        verdict.map_err(Status::unauthenticated)
    }

    /// Asks the apiserver who `token` belongs to (a TokenReview for this workspace's
    /// audiences): the identity, or why not. `Err` when the review itself could not be made.
    async fn review(&self, token: &str) -> Result<Result<Identity, String>, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let pp = PostParams::default();
        let result = with_retries(|| api.create(&pp, &review)).await;
        let review = match result {
            Ok(r) => r,
            Err(e) if is_forbidden(&e) => {
                warn!(
                    service_account = %self.pod_service_account,
                    "the TokenReview API refused the workspace's service account; bind the \
                     ClusterRole system:auth-delegator to it"
                );
                return Err(Status::unauthenticated("TokenReview API is unavailable"));
            }
            Err(e) => return Err(Status::unauthenticated(e.to_string())),
        };
        let status = review.status.unwrap_or_default();
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| self.audiences.contains(x)));
        Ok(match (status.authenticated, status.user) {
            (Some(true), Some(user)) if audience_ok => Ok(Identity {
                username: user.username.unwrap_or_default(),
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }),
            _ => Err(status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "unauthenticated".into())),
        })
    }

    async fn authorize(&self, who: &Identity) -> Result<(), Status> {
        let key = who.cache_key();
        if let Some(hit) = self.authz.get(&key) {
            return hit.map_err(Status::permission_denied);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.username.clone()),
                uid: who.uid.clone(),
                groups: Some(who.groups.clone()),
                extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.namespace.clone()),
                    name: Some(self.workspace.clone()),
                    group: Some(group::AUTO.into()),
                    version: Some("v1alpha1".into()),
                    resource: Some("workspaces".into()),
                    subresource: Some("rpc".into()),
                    verb: Some("use".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let pp = PostParams::default();
        let review = match with_retries(|| api.create(&pp, &review)).await {
            Ok(r) => r,
            Err(e) if is_forbidden(&e) => {
                warn!(
                    service_account = %self.pod_service_account,
                    "the SubjectAccessReview API refused the workspace's service account; bind \
                     the ClusterRole system:auth-delegator to it"
                );
                return Err(Status::unauthenticated(
                    "SubjectAccessReview API is unavailable",
                ));
            }
            Err(e) => return Err(Status::unknown(e.to_string())),
        };
        let status = review.status.unwrap_or_default();
        let verdict = if status.allowed && !status.denied.unwrap_or(false) {
            Ok(())
        } else {
            Err(status
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "forbidden".into()))
        };
        let ttl = if verdict.is_ok() {
            AUTHZ_ALLOW_TTL
        } else {
            AUTHZ_DENY_TTL
        };
        self.authz.put(key, ttl, verdict.clone());
        verdict.map_err(Status::permission_denied)
    }
}

impl Identity {
    /// Everything a SubjectAccessReview is asked about, hashed: two identities that differ in
    /// any of it (the uid of a re-created service account, an extra attribute) never share
    /// a verdict.
    fn cache_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(&self.username);
        field(self.uid.as_deref().unwrap_or(""));
        field(&self.groups.len().to_string());
        for g in &self.groups {
            field(g);
        }
        for (k, values) in &self.extra {
            field(k);
            field(&values.len().to_string());
            for v in values {
                field(v);
            }
        }
        h.finalize().into()
    }
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// 500 ms × 1.5, five tries, on server errors and broken connections.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut wait = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        tries += 1;
        let call = tokio::time::timeout(Duration::from_secs(10), call()).await;
        match call {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if tries < 5 && outage::is_transient(&e) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) if tries < 5 => {}
            Err(_) => {
                return Err(kube::Error::Service(
                    "the apiserver did not answer within 10s".into(),
                ));
            }
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn bearer_tokens_are_read_as_grpc_go_reads_them() {
        assert_eq!(bearer(&md(Some("Bearer abc"))).expect("token"), "abc");
        assert_eq!(bearer(&md(Some("bearer abc"))).expect("token"), "abc");
        let none = bearer(&md(None)).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert_eq!(none.message(), "Request unauthenticated with Bearer");
        assert_eq!(
            bearer(&md(Some("Bearerabc"))).unwrap_err().message(),
            "Bad authorization string"
        );
        assert_eq!(
            bearer(&md(Some("Basic abc"))).unwrap_err().message(),
            "Request unauthenticated with Bearer"
        );
    }

    #[test]
    fn identities_differing_in_uid_or_extra_never_share_a_verdict() {
        let base = Identity {
            username: "system:serviceaccount:ns:sa".into(),
            uid: Some("1".into()),
            groups: vec!["g".into()],
            extra: Default::default(),
        };
        let mut other_uid = base.clone();
        other_uid.uid = Some("2".into());
        let mut with_extra = base.clone();
        with_extra.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec!["p".into()],
        );
        let mut split_groups = base.clone();
        split_groups.groups = vec!["g".into(), String::new()];
        let keys = [&base, &other_uid, &with_extra, &split_groups].map(Identity::cache_key);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(base.cache_key(), base.clone().cache_key());
    }

    #[tokio::test]
    async fn a_saturated_address_is_refused_before_any_review() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let auth = KubeAuth::new(client, vec!["ws.ns".into()], "ns".into(), "ws".into());
        let junk: IpAddr = "10.0.0.66".parse().expect("ip");
        for _ in 0..100 {
            auth.peers.failed(junk);
        }
        assert_eq!(auth.peers.record(junk), PeerRecord::Saturated);
        let token = claims::jwt(&format!(r#"{{"exp":{},"aud":"ws.ns"}}"#, now_unix() + 600));
        let e = auth.authenticate(&token, junk).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("from this address"), "{e:?}");
    }
}
