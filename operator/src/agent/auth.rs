//! Who may call the agent. In `kube` mode every call carries a Kubernetes service-account token
//! (`authorization: Bearer <jwt>`) minted for the audience `<workspace>.<namespace>`; the agent
//! asks the apiserver who it is (TokenReview) and whether that identity may `use` the
//! `workspaces/rpc` subresource of this Workspace (SubjectAccessReview). Answers are cached
//! briefly, keyed by a hash of the token (the token itself is never kept or logged).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

const AUTHN_OK_TTL: Duration = Duration::from_secs(3600);
const AUTHN_FAIL_TTL: Duration = Duration::from_secs(60);
const AUTHZ_ALLOW_TTL: Duration = Duration::from_secs(300);
const AUTHZ_DENY_TTL: Duration = Duration::from_secs(5);
const CACHE_LIMIT: usize = 1024;

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
    pub async fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Kube(k) => k.check(metadata).await,
        }
    }
}

/// Verdicts by key, each with its expiry.
type Cache<K, V> = Mutex<HashMap<K, (Instant, V)>>;

pub struct KubeAuth {
    client: kube::Client,
    audiences: Vec<String>,
    namespace: String,
    workspace: String,
    authn: Cache<[u8; 32], Result<Identity, String>>,
    authz: Cache<String, Result<(), String>>,
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
            authn: Mutex::new(HashMap::new()),
            authz: Mutex::new(HashMap::new()),
            pod_service_account,
        }
    }

    async fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let token = bearer(metadata)?;
        let identity = self.authenticate(token).await?;
        self.authorize(&identity).await?;
        debug!(user = %identity.username, "call authorized");
        Ok(())
    }

    async fn authenticate(&self, token: &str) -> Result<Identity, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = cached(&self.authn, &key) {
            return hit.map_err(Status::unauthenticated);
        }
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
        let verdict = match (status.authenticated, status.user) {
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
        };
        let ttl = if verdict.is_ok() {
            AUTHN_OK_TTL
        } else {
            AUTHN_FAIL_TTL
        };
        remember(&self.authn, key, ttl, verdict.clone());
        verdict.map_err(Status::unauthenticated)
    }

    async fn authorize(&self, who: &Identity) -> Result<(), Status> {
        let key = format!("{}\n{}", who.username, who.groups.join(","));
        if let Some(hit) = cached(&self.authz, &key) {
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
        remember(&self.authz, key, ttl, verdict.clone());
        verdict.map_err(Status::permission_denied)
    }
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
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
            Ok(Err(e)) if tries < 5 && is_transient(&e) => {}
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

fn cached<K: std::hash::Hash + Eq, V: Clone>(cache: &Cache<K, V>, key: &K) -> Option<V> {
    let cache = cache.lock().ok()?;
    let (expires, value) = cache.get(key)?;
    (Instant::now() < *expires).then(|| value.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(cache: &Cache<K, V>, key: K, ttl: Duration, value: V) {
    let Ok(mut cache) = cache.lock() else {
        return;
    };
    let now = Instant::now();
    if cache.len() >= CACHE_LIMIT {
        cache.retain(|_, (expires, _)| *expires > now);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
    }
    cache.insert(key, (now + ttl, value));
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
    fn cache_entries_expire() {
        let cache = Mutex::new(HashMap::new());
        remember(&cache, "a", Duration::from_secs(60), 1);
        remember(&cache, "b", Duration::ZERO, 2);
        assert_eq!(cached(&cache, &"a"), Some(1));
        assert_eq!(cached(&cache, &"b"), None);
    }
}
