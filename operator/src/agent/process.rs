//! The agent's child processes: a registry of the Pulumi CLI runs in flight (so shutdown can
//! interrupt them and wait for them to save their state), and, when the agent is PID 1 in its
//! container, the reaping of orphans that the kernel re-parents to it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// The Pulumi processes this agent started and has not yet waited for.
#[derive(Debug, Default)]
pub struct Children {
    pids: Mutex<BTreeSet<i32>>,
    changed: Notify,
    stopping: std::sync::atomic::AtomicBool,
}

/// Removes its pid from the registry when the run ends, however it ends.
pub struct ChildGuard {
    children: Arc<Children>,
    pid: i32,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut pids) = self.children.pids.lock() {
            pids.remove(&self.pid);
        }
        self.children.changed.notify_waiters();
    }
}

impl Children {
    pub fn new() -> Arc<Children> {
        Arc::new(Children::default())
    }

    /// Starts a child with `spawn` and records it before the reaper can see it: the registry
    /// stays locked from before the fork until the pid is in it, and the reaper asks the
    /// registry before each wait. Recording after `spawn` returned left a window in which a
    /// child that exits at once (`pulumi version`) was reaped as an orphan and its own waiter
    /// got ECHILD ("No child processes").
    pub fn spawn_tracked<T>(
        self: &Arc<Self>,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<(T, ChildGuard)> {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        let child = spawn()?;
        let pid = pid_of(&child).map_or(0, |p| p as i32);
        pids.insert(pid);
        drop(pids);
        // Shutdown has begun: the new child is interrupted at once.
        if self.is_stopping() {
            interrupt(pid);
        }
        let guard = ChildGuard {
            children: Arc::clone(self),
            pid,
        };
        Ok((child, guard))
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.pids.lock().map(|p| p.contains(&pid)).unwrap_or(false)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn snapshot(&self) -> Vec<i32> {
        self.pids
            .lock()
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Asks every running Pulumi command to stop the way Ctrl-C does: the engine finishes the
    /// steps in flight, writes the checkpoint and releases the stack lock.
    pub fn interrupt_all(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for pid in self.snapshot() {
            info!(
                pid,
                "interrupting the running pulumi command so it can save its state"
            );
            interrupt(pid);
        }
    }

    /// Kills every running Pulumi command and its plugins (their process groups).
    pub fn kill_all(&self) {
        for pid in self.snapshot() {
            warn!(pid, "killing the pulumi command");
            // SAFETY: plain syscall; a stale pid at worst gets ESRCH.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Waits until no tracked child is left, or `limit` passes; true when none is left.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.snapshot().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.snapshot().is_empty();
            }
        }
    }
}

fn interrupt(pid: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

/// When the agent is PID 1, processes orphaned inside the container (plugins whose parent
/// died, anything a program spawned) become its children and must be reaped, or they pile up
/// as zombies. Tracked children are left to their own waiters.
pub fn spawn_reaper(children: Arc<Children>) {
    // SAFETY: getpid cannot fail.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    tokio::spawn(async move {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot watch SIGCHLD; reaping orphans every 5s instead");
                None
            }
        };
        loop {
            match sigchld.as_mut() {
                Some(s) => {
                    tokio::select! {
                        _ = s.recv() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            reap_orphans(&children);
        }
    });
}

/// Reaps every zombie child that is not a tracked Pulumi run.
fn reap_orphans(children: &Children) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((state, ppid)) = parse_stat(&stat) else {
            continue;
        };
        if state == 'Z' && ppid == me && !children.contains(pid) {
            let mut status = 0;
            // SAFETY: waits for one specific zombie child; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                debug!(pid, "reaped an orphaned process");
            }
        }
    }
}

/// State and parent pid from `/proc/<pid>/stat` (the command name may contain spaces and
/// parentheses, so parse from the last ')').
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (sleep) Z 1 42 42 0"), Some(('Z', 1)));
        assert_eq!(parse_stat("7 (a) b (c)) S 3 7 7 0 -1"), Some(('S', 3)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_child_is_in_the_registry_before_the_reaper_can_ask() {
        let children = Children::new();
        let c = Arc::clone(&children);
        let (pid, guard) = children
            .spawn_tracked(
                || {
                    // The reaper's question (contains) would wait here: the registry is held.
                    assert!(
                        c.pids.try_lock().is_err(),
                        "the registry is locked while spawning"
                    );
                    Ok(4242u32)
                },
                |p| Some(*p),
            )
            .expect("spawned");
        assert_eq!(pid, 4242);
        assert!(children.contains(4242));
        drop(guard);
        assert!(!children.contains(4242));
        assert!(
            children
                .spawn_tracked(
                    || Err::<u32, _>(std::io::Error::other("no such file")),
                    |p| Some(*p)
                )
                .is_err()
        );
        assert!(
            children.snapshot().is_empty(),
            "a failed spawn records nothing"
        );
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_child_is_released() {
        let children = Children::new();
        let (_, guard) = children
            .spawn_tracked(|| Ok(999_999u32), |p| Some(*p))
            .expect("tracked");
        assert!(!children.wait_idle(Duration::from_millis(50)).await);
        let c = Arc::clone(&children);
        let waiter = tokio::spawn(async move { c.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.expect("joined"));
    }
}
