//! Workspace statuses are written behind the reconciles: a few at a time, the newest only.
//!
//! When a new source reaches many Stacks at once, what users wait for is the source in the
//! pods (Stack → Workspace → StatefulSet), and the API server's CPU is what limits it. A
//! status write inside each Workspace reconcile would make every StatefulSet wait behind
//! status writes. Here a reconcile hands its status over and returns; at most [`WRITERS`]
//! statuses are written at once, in the order they were handed over; a Workspace whose status
//! changes again before its write starts gets only the newest written (under a burst, the
//! short-lived steps coalesce). With nothing queued, a status is written at once.
//!
//! Each status is keyed by the object's uid and carries it, so a status queued for an object
//! that was deleted and created again under the same name is refused by the server (409)
//! rather than written onto its successor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::cache::Statuses;

/// Status writes in flight at once.
pub const WRITERS: usize = 4;
/// A failed write is tried again after 2 s, 4 s, 8 s, ... up to this.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// One status to write.
pub struct Job {
    pub namespace: String,
    pub name: String,
    /// The apply body (with `metadata.uid`).
    pub body: serde_json::Value,
}

/// Writes a job; injected so the queue's rules can be tested without a server.
pub type Write = Arc<dyn Fn(&Job) -> BoxFuture<'static, Result<(), kube::Error>> + Send + Sync>;

pub struct StatusQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// Per uid, the status waiting to be written; a uid present here has a task draining it.
    waiting: Mutex<HashMap<String, Option<Job>>>,
    permits: Semaphore,
    write: Write,
    /// Forgotten when a write is refused for good, so the next reconcile hands it over again.
    statuses: Arc<Statuses>,
}

impl StatusQueue {
    pub fn new(write: Write, statuses: Arc<Statuses>) -> StatusQueue {
        StatusQueue {
            inner: Arc::new(Inner {
                waiting: Mutex::new(HashMap::new()),
                permits: Semaphore::new(WRITERS),
                write,
                statuses,
            }),
        }
    }

    /// Queues `job` as the status of the object `uid`, replacing one not yet started.
    pub fn submit(&self, uid: &str, job: Job) {
        let Ok(mut waiting) = self.inner.waiting.lock() else {
            return;
        };
        match waiting.get_mut(uid) {
            Some(slot) => *slot = Some(job),
            None => {
                waiting.insert(uid.to_string(), Some(job));
                tokio::spawn(Arc::clone(&self.inner).drain(uid.to_string()));
            }
        }
    }

    /// Statuses handed over and not yet written (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.inner
            .waiting
            .lock()
            .map(|w| w.values().filter(|j| j.is_some()).count())
            .unwrap_or(0)
    }
}

impl Inner {
    /// Writes the object's newest status until none is waiting.
    async fn drain(self: Arc<Self>, uid: String) {
        let mut failures: u32 = 0;
        loop {
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            // Taken only once a writer is free: what arrived while waiting replaces it.
            let job = {
                let Ok(mut waiting) = self.waiting.lock() else {
                    return;
                };
                match waiting.get_mut(&uid).and_then(Option::take) {
                    Some(job) => job,
                    None => {
                        waiting.remove(&uid);
                        return;
                    }
                }
            };
            match (self.write)(&job).await {
                Ok(()) => failures = 0,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    // Gone, or replaced by an object with another uid: nothing to write.
                    debug!(workspace = %job.name, namespace = %job.namespace, code = e.code, "status dropped: the Workspace is gone");
                    self.statuses.forget(&uid);
                    if let Ok(mut waiting) = self.waiting.lock() {
                        waiting.remove(&uid);
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY);
                    warn!(workspace = %job.name, namespace = %job.namespace, error = %e, retry_in = ?wait, "cannot write the Workspace status");
                    if let Ok(mut waiting) = self.waiting.lock()
                        && let Some(slot) = waiting.get_mut(&uid)
                        && slot.is_none()
                    {
                        *slot = Some(job);
                    }
                    drop(_permit);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::Notify;

    fn job(n: i64) -> Job {
        Job {
            namespace: "ns".into(),
            name: "w".into(),
            body: json!({"n": n}),
        }
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    /// A writer that records what it wrote, waits for `gate` before each write when given,
    /// and answers with `answers` in order (then Ok).
    fn recorder(gate: Option<Arc<Notify>>, answers: Vec<u16>) -> (Write, Arc<Mutex<Vec<i64>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers));
        let w = Arc::clone(&written);
        let write: Write = Arc::new(move |j: &Job| {
            let n = j.body["n"].as_i64().unwrap_or(-1);
            let (gate, w, answers) = (gate.clone(), Arc::clone(&w), Arc::clone(&answers));
            Box::pin(async move {
                if let Some(g) = gate {
                    g.notified().await;
                }
                w.lock().unwrap().push(n);
                let code = {
                    let mut a = answers.lock().unwrap();
                    if a.is_empty() {
                        None
                    } else {
                        Some(a.remove(0))
                    }
                };
                match code {
                    Some(c) => Err(api_error(c)),
                    None => Ok(()),
                }
            })
        });
        (write, written)
    }

    async fn settle(q: &StatusQueue) {
        for _ in 0..200 {
            if q.pending() == 0 && q.inner.waiting.lock().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the queue did not drain");
    }

    #[tokio::test]
    async fn statuses_handed_over_during_a_write_coalesce_into_the_newest() {
        let gate = Arc::new(Notify::new());
        let (write, written) = recorder(Some(Arc::clone(&gate)), vec![]);
        let q = StatusQueue::new(write, Arc::new(Statuses::default()));
        q.submit("u1", job(1));
        tokio::time::sleep(Duration::from_millis(20)).await; // job 1 is being written
        q.submit("u1", job(2));
        q.submit("u1", job(3));
        assert_eq!(q.pending(), 1);
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_one();
        settle(&q).await;
        assert_eq!(*written.lock().unwrap(), vec![1, 3]);
    }

    #[tokio::test]
    async fn at_most_writers_statuses_are_written_at_once() {
        let gate = Arc::new(Notify::new());
        let (write, written) = recorder(Some(Arc::clone(&gate)), vec![]);
        let q = StatusQueue::new(write, Arc::new(Statuses::default()));
        for i in 0..10 {
            q.submit(&format!("u{i}"), job(i));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(q.inner.permits.available_permits(), 0);
        assert_eq!(q.pending(), 10 - WRITERS);
        for _ in 0..10 {
            gate.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        settle(&q).await;
        let mut w = written.lock().unwrap().clone();
        w.sort();
        assert_eq!(w, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_gone_object_drops_its_status_and_forgets_the_memo() {
        let (write, written) = recorder(None, vec![404]);
        let statuses = Arc::new(Statuses::default());
        statuses.record("u1", &json!({"n": 1}));
        let q = StatusQueue::new(write, Arc::clone(&statuses));
        q.submit("u1", job(1));
        settle(&q).await;
        assert_eq!(*written.lock().unwrap(), vec![1]);
        // Forgotten: the same status is no longer taken as written.
        assert!(!statuses.unchanged("u1", &json!({"n": 0}), &json!({"n": 1})));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_with_the_newest_status() {
        let (write, written) = recorder(None, vec![500]);
        let q = StatusQueue::new(write, Arc::new(Statuses::default()));
        q.submit("u1", job(1));
        tokio::time::sleep(Duration::from_millis(100)).await; // 1 failed; retry in 2 s
        q.submit("u1", job(2));
        tokio::time::sleep(Duration::from_secs(3)).await;
        settle(&q).await;
        assert_eq!(*written.lock().unwrap(), vec![1, 2]);
    }
}
