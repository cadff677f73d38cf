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
//! Each status is keyed by the object's uid and is written as a JSON patch that first tests
//! `/metadata/uid`, so a status queued for an object that was deleted and created again under
//! the same name is refused by the server rather than written onto its successor (an apply
//! would not do: the status strategy resets metadata, the uid included, before any check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    pub uid: String,
    /// The whole status.
    pub status: serde_json::Value,
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

/// The map stays usable after a panic elsewhere: every change to it is a single insert,
/// take or remove, so it is never left half-done.
fn lock(m: &Mutex<HashMap<String, Option<Job>>>) -> MutexGuard<'_, HashMap<String, Option<Job>>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    pub fn submit(&self, job: Job) {
        let uid = job.uid.clone();
        let start = {
            let mut waiting = lock(&self.inner.waiting);
            match waiting.get_mut(&uid) {
                Some(slot) => {
                    *slot = Some(job);
                    false
                }
                None => {
                    waiting.insert(uid.clone(), Some(job));
                    true
                }
            }
        };
        if start {
            tokio::spawn(Arc::clone(&self.inner).drain(uid));
        }
    }

    /// Statuses handed over and not yet written.
    pub fn pending(&self) -> usize {
        lock(&self.inner.waiting)
            .values()
            .filter(|j| j.is_some())
            .count()
    }

    /// Waits (at most `limit`) until every status handed over was written or dropped: on a
    /// graceful shutdown, before the lease is released.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !lock(&self.inner.waiting).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes nothing more: after leadership is lost, the next leader owns the statuses.
    pub fn close(&self) {
        self.inner.permits.close();
    }
}

/// Ends a drain that did not finish normally (refused for good, queue closed, or a panic in
/// a write): the object's entry goes, so a later status starts a new task instead of waiting
/// for a dead one, and so does the memo, since the status it records may not be written.
/// A normal end removes the entry itself, under the lock in which it saw nothing waiting.
struct Finish<'a> {
    inner: &'a Inner,
    uid: &'a str,
    done: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.inner.waiting).remove(self.uid);
            self.inner.statuses.forget(self.uid);
        }
    }
}

impl Inner {
    /// Writes the object's newest status until none is waiting.
    async fn drain(self: Arc<Self>, uid: String) {
        let mut finish = Finish {
            inner: &self,
            uid: &uid,
            done: false,
        };
        let mut failures: u32 = 0;
        loop {
            let Ok(permit) = self.permits.acquire().await else {
                return; // closed
            };
            // Taken only once a writer is free: what arrived while waiting replaces it.
            let job = {
                let mut waiting = lock(&self.waiting);
                match waiting.get_mut(&uid).and_then(Option::take) {
                    Some(job) => job,
                    None => {
                        // Removed under the same lock a submit takes: a status handed over
                        // from now on starts a new task, none is lost.
                        waiting.remove(&uid);
                        finish.done = true;
                        return;
                    }
                }
            };
            match (self.write)(&job).await {
                Ok(()) => failures = 0,
                Err(kube::Error::Api(e)) if permanent(e.code) => {
                    // Gone, replaced (the uid test failed) or refused as written: retrying
                    // cannot help; the next reconcile decides again.
                    debug!(workspace = %job.name, namespace = %job.namespace, code = e.code, error = %e.message, "Workspace status dropped");
                    if e.code != 404 {
                        warn!(workspace = %job.name, namespace = %job.namespace, code = e.code, error = %e.message, "the Workspace status was refused");
                    }
                    // A status handed over meanwhile is dropped with it (and forgotten by the
                    // guard): it was for the same object.
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY);
                    warn!(workspace = %job.name, namespace = %job.namespace, error = %e, retry_in = ?wait, "cannot write the Workspace status");
                    {
                        let mut waiting = lock(&self.waiting);
                        if let Some(slot) = waiting.get_mut(&uid)
                            && slot.is_none()
                        {
                            *slot = Some(job);
                        }
                    }
                    drop(permit);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Client errors a retry cannot fix; 408 and 429 are worth another try.
fn permanent(code: u16) -> bool {
    (400..500).contains(&code) && code != 408 && code != 429
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::Notify;

    fn job(uid: &str, n: i64) -> Job {
        Job {
            namespace: "ns".into(),
            name: "w".into(),
            uid: uid.into(),
            status: json!({"n": n}),
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
            let n = j.status["n"].as_i64().unwrap_or(-1);
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
            if q.pending() == 0 && lock(&q.inner.waiting).is_empty() {
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
        q.submit(job("u1", 1));
        tokio::time::sleep(Duration::from_millis(20)).await; // job 1 is being written
        q.submit(job("u1", 2));
        q.submit(job("u1", 3));
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
            q.submit(job(&format!("u{i}"), i));
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
    async fn a_replaced_object_drops_its_status_and_forgets_the_memo() {
        let (write, written) = recorder(None, vec![422]);
        let statuses = Arc::new(Statuses::default());
        statuses.record("u1", &json!({"n": 1}));
        let q = StatusQueue::new(write, Arc::clone(&statuses));
        q.submit(job("u1", 1));
        settle(&q).await;
        assert_eq!(*written.lock().unwrap(), vec![1]);
        // Forgotten: the same status is no longer taken as written.
        assert!(!statuses.unchanged("u1", &json!({"n": 0}), &json!({"n": 1})));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_with_the_newest_status() {
        let (write, written) = recorder(None, vec![500]);
        let q = StatusQueue::new(write, Arc::new(Statuses::default()));
        q.submit(job("u1", 1));
        tokio::time::sleep(Duration::from_millis(100)).await; // 1 failed; retry in 2 s
        q.submit(job("u1", 2));
        tokio::time::sleep(Duration::from_secs(3)).await;
        settle(&q).await;
        assert_eq!(*written.lock().unwrap(), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_closed_queue_writes_nothing_more() {
        let (write, written) = recorder(None, vec![]);
        let q = StatusQueue::new(write, Arc::new(Statuses::default()));
        q.close();
        q.submit(job("u1", 1));
        settle(&q).await;
        assert!(written.lock().unwrap().is_empty());
    }

    #[test]
    fn only_retryable_errors_are_retried() {
        assert!(permanent(404) && permanent(409) && permanent(422) && permanent(403));
        assert!(!permanent(429) && !permanent(408) && !permanent(500) && !permanent(503));
    }
}
