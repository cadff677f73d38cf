//! The operator's side of the agent channel: a token minted for the operator's own service
//! account with the workspace's audience (TokenRequest), cached and refreshed before it
//! expires, and a gRPC connection to the workspace pod's IP (no cluster DNS needed).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use crate::proto::automation_service_client::AutomationServiceClient;

/// Refresh a token this long before it expires.
const REFRESH_LEEWAY: Duration = Duration::from_secs(300);
/// Forget tokens of workspaces not talked to for this long.
const IDLE_PRUNE: Duration = Duration::from_secs(2 * 3600);
/// Responses may carry a whole stack's outputs.
const MAX_RECEIVE: usize = 400 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot mint a token for service account {account} (TokenRequest): {source}; the \
         operator needs `create` on serviceaccounts/token for its own account"
    )]
    Token {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("the TokenRequest for {0} returned no token")]
    EmptyToken(String),
    #[error("the workspace pod has no IP yet")]
    NoAddress,
    #[error("cannot connect to the workspace agent at {addr}: {detail}")]
    Dial { addr: String, detail: String },
}

struct Cached {
    token: String,
    expires: jiff::Timestamp,
    last_used: std::time::Instant,
}

/// Audience-scoped tokens for the operator's own service account.
pub struct Tokens {
    client: kube::Client,
    namespace: String,
    service_account: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Tokens {
    pub fn new(client: kube::Client, namespace: String, service_account: String) -> Tokens {
        Tokens {
            client,
            namespace,
            service_account,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn token(&self, audience: &str) -> Result<String, ConnectError> {
        let mut cache = self.cache.lock().await;
        cache.retain(|_, c| c.last_used.elapsed() < IDLE_PRUNE);
        let now = jiff::Timestamp::now();
        let leeway = jiff::SignedDuration::try_from(REFRESH_LEEWAY).unwrap_or_default();
        if let Some(c) = cache.get_mut(audience)
            && c.expires.checked_sub(leeway).is_ok_and(|t| now < t)
        {
            c.last_used = std::time::Instant::now();
            return Ok(c.token.clone());
        }
        match self.mint(audience).await {
            Ok((token, expires)) => {
                cache.insert(
                    audience.to_string(),
                    Cached {
                        token: token.clone(),
                        expires,
                        last_used: std::time::Instant::now(),
                    },
                );
                Ok(token)
            }
            // An old token that has not expired yet beats no token.
            Err(e) => match cache.get(audience) {
                Some(c) if now < c.expires => {
                    warn!(error = %e, "token refresh failed; using the current token until it expires");
                    Ok(c.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    async fn mint(&self, audience: &str) -> Result<(String, jiff::Timestamp), ConnectError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let account = format!("{}/{}", self.namespace, self.service_account);
        let resp = api
            .create_token_request(&self.service_account, &PostParams::default(), &req)
            .await
            .map_err(|source| ConnectError::Token {
                account: account.clone(),
                source,
            })?;
        let status = resp
            .status
            .ok_or_else(|| ConnectError::EmptyToken(account.clone()))?;
        if status.token.is_empty() {
            return Err(ConnectError::EmptyToken(account));
        }
        debug!(audience, "minted an agent token");
        Ok((status.token, status.expiration_timestamp.0))
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type AgentClient =
    AutomationServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Connects to an agent at `addr` (`host:port`) within `timeout`.
pub async fn dial(addr: &str, token: &str, timeout: Duration) -> Result<AgentClient, ConnectError> {
    let err = |detail: String| ConnectError::Dial {
        addr: addr.to_string(),
        detail,
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| err(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(|e| err(fetch::error::chain(&e)))?;
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| err("the token is not valid header text".into()))?;
    Ok(
        AutomationServiceClient::with_interceptor(channel, Bearer(value))
            .max_decoding_message_size(MAX_RECEIVE),
    )
}
