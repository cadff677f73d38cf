//! `--metrics-secure` (on by default, as in PKO): `/metrics` over HTTPS, served only to callers
//! the API server vouches for, as controller-runtime's `WithAuthenticationAndAuthorization`
//! filter serves PKO's. The bearer token is checked with a TokenReview, then the caller's right
//! to `get` the path (a non-resource URL, granted by the `metrics-reader` ClusterRole) with a
//! SubjectAccessReview. Answers and their status codes are controller-runtime's: 401
//! `Unauthorized`, 403 `Authorization denied for user <name>`, 500 when a review itself fails
//! (the operator may not create TokenReviews, say). Verdicts are cached as it caches them
//! (identities 1 min, a refused token 10 s; allowed 5 min, denied 30 s), keyed by hashes: a
//! token is never kept or logged. At most a few reviews run at once, so a flood of scrapes
//! with new tokens cannot flood the API server.
//!
//! The certificate is self-signed and made at start, controller-runtime's default too:
//! scrapers verify the caller, not the server (Prometheus: `insecure_skip_verify`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};

use crate::verdicts::Verdicts;

const IDENTITY_TTL: Duration = Duration::from_secs(60);
const REFUSED_TOKEN_TTL: Duration = Duration::from_secs(10);
const ALLOW_TTL: Duration = Duration::from_secs(300);
const DENY_TTL: Duration = Duration::from_secs(30);
/// Reviews in flight at once.
const CONCURRENT_REVIEWS: usize = 4;
/// A TLS handshake that takes longer is dropped (a client that connects and says nothing).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecureMetricsError {
    #[error("cannot make the metrics endpoint's self-signed certificate: {0}")]
    Certificate(String),
    #[error("cannot set up TLS for the metrics endpoint: {0}")]
    Tls(String),
}

/// Who may read the metrics: the API server's answers, cached.
pub struct Reviewer {
    client: kube::Client,
    identities: Verdicts<[u8; 32], Option<UserInfo>>,
    decisions: Verdicts<[u8; 32], bool>,
    reviews: Semaphore,
}

/// Why a request is not served.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Unauthorized,
    Denied(String),
    /// A review failed: the message controller-runtime answers with.
    Failed(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (code, text) = match self {
            Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized".to_string()),
            Refusal::Denied(user) => (
                StatusCode::FORBIDDEN,
                format!("Authorization denied for user {user}"),
            ),
            Refusal::Failed(text) => (StatusCode::INTERNAL_SERVER_ERROR, text),
        };
        (code, format!("{text}\n")).into_response()
    }
}

/// The bearer token of a request's `Authorization` header.
fn bearer(req: &Request) -> Option<&str> {
    let value = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so that no two different lists hash the same bytes.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

impl Reviewer {
    pub fn new(client: kube::Client) -> Reviewer {
        Reviewer {
            client,
            identities: Verdicts::new(),
            decisions: Verdicts::new(),
            reviews: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    /// `token`: the request's bearer token, if it has one.
    async fn check(&self, token: Option<&str>, verb: &str, path: &str) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::Unauthorized)?;
        let user = self.authenticate(token).await?;
        let name = user.username.clone().unwrap_or_default();
        if self.authorize(user, verb, path).await? {
            debug!(user = %name, "metrics scrape authorized");
            Ok(())
        } else {
            Err(Refusal::Denied(name))
        }
    }

    async fn authenticate(&self, token: &str) -> Result<UserInfo, Refusal> {
        let key = digest(&[token]);
        if let Some(known) = self.identities.get(&key) {
            return known.ok_or(Refusal::Unauthorized);
        }
        let _slot = self.reviews.acquire().await.map_err(|_| failed_authn())?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                error!(
                    error = %e,
                    "Authentication failed: the TokenReview was refused (the operator's \
                     ClusterRole needs create on tokenreviews.authentication.k8s.io for \
                     --metrics-secure)"
                );
                failed_authn()
            })?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        let ttl = if user.is_some() {
            IDENTITY_TTL
        } else {
            REFUSED_TOKEN_TTL
        };
        self.identities.put(key, ttl, user.clone());
        user.ok_or(Refusal::Unauthorized)
    }

    async fn authorize(&self, user: UserInfo, verb: &str, path: &str) -> Result<bool, Refusal> {
        let name = user.username.clone().unwrap_or_default();
        let mut groups = user.groups.clone().unwrap_or_default();
        groups.sort();
        let mut parts = vec![name.as_str(), user.uid.as_deref().unwrap_or(""), verb, path];
        parts.extend(groups.iter().map(String::as_str));
        let key = digest(&parts);
        if let Some(known) = self.decisions.get(&key) {
            return Ok(known);
        }
        let failed = || Refusal::Failed(format!("Authorization for user {name} failed"));
        let _slot = self.reviews.acquire().await.map_err(|_| failed())?;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                error!(
                    user = %name,
                    error = %e,
                    "Authorization failed: the SubjectAccessReview was refused (the operator's \
                     ClusterRole needs create on subjectaccessreviews.authorization.k8s.io for \
                     --metrics-secure)"
                );
                failed()
            })?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOW_TTL } else { DENY_TTL };
        self.decisions.put(key, ttl, allowed);
        Ok(allowed)
    }
}

fn failed_authn() -> Refusal {
    Refusal::Failed("Authentication failed".into())
}

/// The middleware: the request goes on only for a caller who may `get` its path.
pub async fn guard(State(reviewer): State<Arc<Reviewer>>, req: Request, next: Next) -> Response {
    let token = bearer(&req).map(str::to_string);
    let verb = req.method().as_str().to_ascii_lowercase();
    let path = req.uri().path().to_string();
    match reviewer.check(token.as_deref(), &verb, &path).await {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// TLS with a certificate made now for `localhost` and this pod's host name; HTTP/1.1 only
/// (PKO turns HTTP/2 off on its metrics server unless `--enable-http2`).
pub fn self_signed_tls() -> Result<Arc<rustls::ServerConfig>, SecureMetricsError> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::env::var("HOSTNAME")
        && !host.is_empty()
    {
        names.push(host);
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| SecureMetricsError::Certificate(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        made.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecureMetricsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .map_err(|e| SecureMetricsError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `stop`.
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
                () = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "metrics: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "metrics: TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                {
                    debug!(%peer, error = %e, "metrics: connection ended with an error");
                }
            });
        }
        info!("metrics: stopped");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::get("/metrics");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert_eq!(bearer(&request(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&request(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(&request(Some("Basic abc"))), None);
        assert_eq!(bearer(&request(Some("Bearer "))), None);
        assert_eq!(bearer(&request(None)), None);
    }

    #[test]
    fn cache_keys_do_not_run_together() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
    }

    #[test]
    fn refusals_answer_as_controller_runtime_does() {
        let code = |r: Refusal| r.into_response().status();
        assert_eq!(code(Refusal::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(code(Refusal::Denied("u".into())), StatusCode::FORBIDDEN);
        assert_eq!(
            code(Refusal::Failed("Authentication failed".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_certificate_is_made_at_start() {
        let tls = self_signed_tls().expect("tls");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
