//! One HTTP GET of an artifact, and the policy for retrying it.
//!
//! The retry rules are Flux's (go-retryablehttp's `DefaultRetryPolicy`): connection errors,
//! 429 and 5xx other than 501 are retried with exponential back-off, honouring `Retry-After`;
//! 404 and other 4xx are final. Unlike Flux, one overall deadline bounds the whole run, so a
//! hung server cannot hold the pod's init container forever.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::blocking::{Client, Response};
use reqwest::header::RETRY_AFTER;

/// Longest wait between attempts, as in Flux.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "the artifact at {url} was not found (HTTP {status}); source-controller deletes old \
         artifacts soon after a new revision, so the source has probably moved on: the \
         operator will pick up the new artifact"
    )]
    NotFound { url: String, status: u16 },
    #[error("GET {url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the download from {url} broke off")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gave up on {url} after {secs}s (--timeout); check that the workspace pod can reach the \
         host (a NetworkPolicy in flux-system blocks other namespaces by default, see \
         config/flux)",
        secs = after.as_secs()
    )]
    TimedOut { url: String, after: Duration },
}

impl HttpError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, HttpError::NotFound { .. })
    }

    /// Whether another attempt could succeed, and how long the server asked us to wait.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            HttpError::Status {
                status,
                retry_after,
                ..
            } => {
                let s = *status;
                (s == 429 || (s >= 500 && s != 501)).then_some(*retry_after)
            }
            HttpError::Transport { source, .. } => transport_retriable(source).then_some(None),
            HttpError::Body { .. } => Some(None),
            HttpError::NotFound { .. } | HttpError::TimedOut { .. } => None,
        }
    }
}

fn transport_retriable(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    // A certificate the client refuses will be refused again.
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("certificate") {
            return false;
        }
        cause = c.source();
    }
    true
}

/// Shows a URL without credentials or query string (which may carry a signature).
pub fn redact(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?<redacted>");
    }
    shown
}

/// Replaces the host and port of `url` (`SOURCE_CONTROLLER_LOCALHOST`, as in Flux).
pub fn override_host(url: &mut Url, host_port: &str) -> Result<(), String> {
    let parsed = Url::parse(&format!("http://{host_port}"))
        .ok()
        .filter(|u| u.path() == "/" && u.username().is_empty() && u.host_str().is_some())
        .ok_or_else(|| format!("{host_port:?} is not a host or host:port"))?;
    url.set_host(parsed.host_str())
        .map_err(|e| format!("cannot use host {host_port:?}: {e}"))?;
    url.set_port(parsed.port())
        .map_err(|()| format!("cannot set a port on {}", redact(url)))
}

pub fn client() -> Result<Client, reqwest::Error> {
    Client::builder()
        .user_agent(concat!("pulumi-fetch/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()
}

/// Sends the GET; success is a 200 whose body is ready to read.
pub fn get(client: &Client, url: &Url, deadline: Instant) -> Result<Response, HttpError> {
    let shown = redact(url);
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(HttpError::TimedOut {
            url: shown,
            after: Duration::ZERO,
        });
    }
    let resp = client
        .get(url.clone())
        .timeout(remaining)
        .send()
        .map_err(|e| HttpError::Transport {
            url: shown.clone(),
            source: e.without_url(),
        })?;
    match resp.status() {
        StatusCode::OK => Ok(resp),
        s @ (StatusCode::NOT_FOUND | StatusCode::GONE) => Err(HttpError::NotFound {
            url: shown,
            status: s.as_u16(),
        }),
        s => Err(HttpError::Status {
            url: shown,
            status: s.as_u16(),
            retry_after: retry_after(&resp),
        }),
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential back-off: `base * 2^attempt`, capped at [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_credentials_and_query() {
        let u = Url::parse("https://user:secret@host:8443/a/b.tar.gz?X-Sig=abc").unwrap();
        assert_eq!(redact(&u), "https://host:8443/a/b.tar.gz?<redacted>");
    }

    #[test]
    fn host_override_replaces_host_and_port_only() {
        let mut u = Url::parse(
            "http://source-controller.flux-system.svc.cluster.local./gitrepository/ns/r/sha.tar.gz",
        )
        .unwrap();
        override_host(&mut u, "localhost:9090").unwrap();
        assert_eq!(
            u.as_str(),
            "http://localhost:9090/gitrepository/ns/r/sha.tar.gz"
        );
        override_host(&mut u, "[::1]:80").unwrap();
        assert_eq!(u.as_str(), "http://[::1]/gitrepository/ns/r/sha.tar.gz");
        assert!(override_host(&mut u, "host/path").is_err());
        assert!(override_host(&mut u, "").is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff(b, 0), Duration::from_secs(1));
        assert_eq!(backoff(b, 3), Duration::from_secs(8));
        assert_eq!(backoff(b, 10), MAX_BACKOFF);
        assert_eq!(backoff(b, 64), MAX_BACKOFF);
    }

    #[test]
    fn retry_policy_follows_flux() {
        let status = |s| HttpError::Status {
            url: String::new(),
            status: s,
            retry_after: None,
        };
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s).retry().is_some(), "{s}");
        }
        for s in [400, 401, 403, 418, 501] {
            assert!(status(s).retry().is_none(), "{s}");
        }
        let nf = HttpError::NotFound {
            url: String::new(),
            status: 404,
        };
        assert!(nf.retry().is_none());
    }
}
