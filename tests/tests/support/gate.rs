//! A gate for programs that must be caught in the middle of `pulumi up`: a named pipe in the
//! shared state directory (`/state` in the workspace pod) that the program reads, which blocks
//! until the test writes to it; the Updates' states; and the eviction guard a workspace pod
//! carries while an update runs on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::real_node::RealCluster;

/// Makes the gate, closed, in `state` (the directory the Stack's `/state` volume shares):
/// writable by the workspace's user.
pub fn make(state: &Path) -> PathBuf {
    let fifo = state.join("gate");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "666"])
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    fifo
}

/// A program that waits, in the middle of `pulumi up`, until the test opens its gate: it reads
/// a named pipe in the shared state directory, which blocks until a writer comes.
pub const GATED: &str = "name: gated\nruntime: yaml\n\
variables:\n  gate:\n    fn::readFile: /state/gate\n\
outputs:\n  passed: open\n";

/// Opens the gate: lets every reader of the pipe at `fifo` through (one gets a line, the others end of file);
/// fails unless one is waiting within `limit`.
pub async fn open(fifo: &Path, limit: Duration) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + limit;
    loop {
        // Non-blocking: without a reader the open fails (ENXIO) instead of waiting.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(mut f) => {
                let _ = f.write_all(b"open\n");
                return;
            }
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("nobody read the gate within {limit:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The Stack's Updates as (name, Progressing status, Failed reason, Complete status), oldest
/// first.
pub async fn update_states(rc: &RealCluster) -> Vec<(String, String, String, String)> {
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(rc.cp.client(), "default", &super::updates());
    let mut list = api.list(&Default::default()).await.expect("updates").items;
    list.sort_by_key(|u| u.metadata.creation_timestamp.clone().map(|t| t.0));
    list.into_iter()
        .map(|u| {
            let v = serde_json::to_value(&u).expect("json");
            let field = |t: &str, f: &str| {
                super::condition(&v, t)
                    .and_then(|c| c[f].as_str().map(str::to_string))
                    .unwrap_or_default()
            };
            (
                u.metadata.name.clone().unwrap_or_default(),
                field("Progressing", "status"),
                field("Failed", "reason"),
                field("Complete", "status"),
            )
        })
        .collect()
}

/// Waits until Update `name` has ended (Progressing False, Complete True); its state, as
/// [`update_states`] gives it.
pub async fn ended(
    rc: &RealCluster,
    name: &str,
    limit: Duration,
) -> (String, String, String, String) {
    super::wait_for(limit, &format!("Update {name} to end"), || async move {
        update_states(rc)
            .await
            .into_iter()
            .find(|(n, p, _, c)| n == name && p == "False" && c == "True")
    })
    .await
}

/// Waits until an Update runs (Progressing); its name.
pub async fn running(rc: &RealCluster) -> String {
    super::wait_for(
        Duration::from_secs(120),
        "an update running",
        || async move {
            update_states(rc)
                .await
                .into_iter()
                .find(|(_, progressing, _, _)| progressing == "True")
                .map(|(name, ..)| name)
        },
    )
    .await
}

pub const GUARD: [(&str, &str); 2] = [
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    ("karpenter.sh/do-not-disrupt", "true"),
];

pub fn guarded(p: &Pod) -> bool {
    let a = p.metadata.annotations.clone().unwrap_or_default();
    GUARD
        .iter()
        .all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
}

/// The workspace pods seen carrying the guard, from a watch started before the Stack.
pub fn watch_guards(rc: &RealCluster) -> Arc<Mutex<BTreeSet<String>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let pods: Api<Pod> = Api::namespaced(rc.cp.client(), "default");
    let cfg = watcher::Config::default().labels("auto.pulumi.com/component=workspace");
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut stream = watcher(pods, cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(p)) = stream.next().await {
            if guarded(&p)
                && let (Ok(mut s), Some(uid)) = (record.lock(), p.metadata.uid.clone())
            {
                s.insert(uid);
            }
        }
    });
    seen
}

pub async fn pod_of(rc: &RealCluster, stack: &str) -> Pod {
    Api::<Pod>::namespaced(rc.cp.client(), "default")
        .get(&format!("{stack}-workspace-0"))
        .await
        .expect("workspace pod")
}

/// The id of the workspace pod's `pulumi` container (`containerd://...`), if the pod exists
/// and that container runs.
pub async fn running_pulumi_container(rc: &RealCluster, stack: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(rc.cp.client(), "default");
    let p = pods.get_opt(&format!("{stack}-workspace-0")).await.ok()??;
    p.status?
        .container_statuses?
        .into_iter()
        .find(|c| c.name == "pulumi" && c.state.as_ref().is_some_and(|s| s.running.is_some()))?
        .container_id
}

/// As [`running_pulumi_container`], which must be.
pub async fn pulumi_container(rc: &RealCluster, stack: &str) -> String {
    running_pulumi_container(rc, stack)
        .await
        .expect("the running pulumi container's id")
}

/// Waits until a process of the Stack's workspace pod (one in its network namespace) waits
/// at the gate: blocked opening the pipe (`wait_for_partner`, where the kernel holds a FIFO's
/// reader until a writer comes; in any of its threads), so the update is surely in its
/// middle. A pipe cannot be
/// opened to look without letting the reader through, and the reader has no descriptor yet.
pub async fn wait_reader(rc: &RealCluster, stack: &str, limit: Duration) {
    let container = pulumi_container(rc, stack).await;
    let task = rc
        .node
        .task_pid(&container)
        .expect("containerd's tasks")
        .expect("the pulumi container's task");
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let pod = netns(&task.to_string()).expect("the pod's network namespace");
    let waiting = || -> bool {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|p| {
            let pid = p.file_name().to_string_lossy().into_owned();
            // Any thread: Go blocks the open on one of its own, not the main one.
            let blocked = || {
                std::fs::read_dir(p.path().join("task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|t| {
                        std::fs::read_to_string(t.path().join("wchan"))
                            .is_ok_and(|w| w.trim() == "wait_for_partner")
                    })
            };
            pid.bytes().all(|b| b.is_ascii_digit())
                && netns(&pid).as_ref() == Some(&pod)
                && blocked()
        })
    };
    let deadline = std::time::Instant::now() + limit;
    while !waiting() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing in {stack}'s workspace pod waited at the gate within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
