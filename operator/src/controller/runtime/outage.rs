//! Writes that must outlive an outage of the API server.
//!
//! Most writes can fail and be redone by the next reconcile. The record of an operation that
//! has run cannot: once `pulumi up` has ended, a reconcile that fails to write its result would
//! find the Update still `Progressing`, with nobody running it, and end it `Aborted` (its
//! outcome unknown), and the Stack would run the same revision again. So those writes are
//! retried, the result held in memory, while the API server is unreachable or overloaded.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use tracing::{info, warn};

/// How long a result is held while the API server cannot take it: beyond any restart of a
/// control plane, and within the operator's termination grace period (600 s in the manifests).
pub const PATIENCE: Duration = Duration::from_secs(300);
/// The longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(15);
/// One try's limit: a frozen API server would otherwise hold a write for the client's read
/// timeout (minutes).
const TRY_LIMIT: Duration = Duration::from_secs(30);

/// Whether `e` may pass by itself: the server unreachable, overloaded or failing, never a
/// refusal of the request (4xx), which a retry would only repeat.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `write` until it succeeds, fails for a reason that is not [`is_transient`], or
/// `patience` has passed (then its last error): 1 s between tries, doubling, at most 15 s.
/// `what` names the write in the log.
pub async fn until_written<T, F, Fut>(
    what: &str,
    patience: Duration,
    mut write: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_secs(1);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let result = match tokio::time::timeout(TRY_LIMIT, write()).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(
                format!(
                    "the API server did not answer within {}s",
                    TRY_LIMIT.as_secs()
                )
                .into(),
            )),
        };
        match result {
            Ok(v) => {
                if tries > 1 {
                    info!(what, tries, "written once the API server answered again");
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) && Instant::now() + wait < deadline => {
                if tries == 1 {
                    warn!(what, error = %e, patience_s = patience.as_secs(),
                        "the API server did not take the write; holding it and trying again");
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_what_may_pass_is_transient() {
        assert!(is_transient(&status(503)));
        assert!(is_transient(&status(429)));
        assert!(is_transient(&kube::Error::Service("refused".into())));
        assert!(!is_transient(&status(403)));
        assert!(!is_transient(&status(422)));
        assert!(!is_transient(&status(404)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_held_through_an_outage_and_a_refusal_is_not_retried() {
        let calls = AtomicU32::new(0);
        let written = until_written("status", PATIENCE, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 4 {
                    Err(kube::Error::Service("connection refused".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(written.ok(), Some(4));

        let calls = AtomicU32::new(0);
        let refused: Result<(), _> = until_written("status", PATIENCE, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(422)) }
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn patience_runs_out_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = until_written("status", Duration::from_secs(60), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(503)) }
        })
        .await;
        assert!(matches!(r, Err(kube::Error::Api(s)) if s.code == 503));
        // 1 + 2 + 4 + 8 + 15 + 15 s waited, the next wait would pass the minute.
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
