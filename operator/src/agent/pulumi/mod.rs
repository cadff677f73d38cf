//! The Pulumi CLI, driven as a child process in the workspace directory, the way Pulumi's
//! Automation API drives it: `--non-interactive`, `--stack` on every stack command, JSON output,
//! and the engine's event log (`--event-log`, one JSON event a line) for progress, never the
//! screen output.

mod diagnostics;
mod streams;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::process::Children;
use diagnostics::{display_args, failure_detail, json_error};
use streams::{Capture, read_lines, read_stdout, tail_events};

pub use diagnostics::permalink;

/// The most a command whose JSON is parsed may print: the largest reply the operator accepts
/// (stack outputs travel in one gRPC message of at most 400 MiB).
const MAX_JSON_BYTES: usize = 400 << 20;
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot run `{binary}`: {source}; the workspace image must have the Pulumi CLI on PATH"
    )]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`pulumi {command}` failed (exit code {code}): {detail}")]
    Failed {
        command: String,
        code: i32,
        detail: String,
        stdout: String,
        stderr: String,
    },
    /// Never carries what the command printed: JSON output can hold secrets (stack outputs
    /// with `--show-secrets`), and this message reaches statuses, events and logs.
    #[error("`pulumi {command}` printed output that is not the JSON expected ({error})")]
    Parse { command: String, error: String },
    #[error(
        "`pulumi {command}` printed more than {} MiB; that is more than the agent can return",
        MAX_JSON_BYTES >> 20
    )]
    OutputTooLarge { command: String },
    #[error("cannot prepare the event log: {0}")]
    EventLog(#[source] std::io::Error),
}

impl CliError {
    /// Everything the command printed, for matching known failures.
    pub fn full_text(&self) -> String {
        match self {
            CliError::Failed {
                detail,
                stdout,
                stderr,
                ..
            } => format!("{detail}\n{stdout}\n{stderr}"),
            other => other.to_string(),
        }
    }
}

/// What a finished command printed.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// A private stdout was longer than the limit and only its start was kept.
    pub stdout_truncated: bool,
}

/// The CLI in one workspace directory.
#[derive(Debug, Clone)]
pub struct Pulumi {
    binary: PathBuf,
    workdir: PathBuf,
    /// Extra environment for every command (the `--env-file` lines).
    env: Vec<(String, String)>,
    log_level: u32,
    children: Arc<Children>,
}

static EVENT_LOGS: AtomicU64 = AtomicU64::new(0);

impl Pulumi {
    pub fn new(
        binary: PathBuf,
        workdir: PathBuf,
        env: Vec<(String, String)>,
        log_level: u32,
        children: Arc<Children>,
    ) -> Pulumi {
        Pulumi {
            binary,
            workdir,
            env,
            log_level,
            children,
        }
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The debug flags the engine understands: `-v=N` with the log on stderr (which is the
    /// container log) and flowing to plugins.
    pub fn debug_args(&self) -> Vec<String> {
        if self.log_level == 0 {
            return Vec::new();
        }
        vec![
            "--logtostderr".into(),
            format!("-v={}", self.log_level),
            "--logflow".into(),
        ]
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--non-interactive")
            .args(args)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a signal meant for the agent is not also delivered to the
            // CLI, so the agent decides when and how the CLI is interrupted.
            .process_group(0)
            .kill_on_drop(false);
        // An agent never wants to be told a newer CLI exists.
        if std::env::var_os("PULUMI_SKIP_UPDATE_CHECK").is_none() {
            cmd.env("PULUMI_SKIP_UPDATE_CHECK", "true");
        }
        cmd.env("PULUMI_AUTOMATION_API", "true");
        // Enables `--event-log` (as the Automation API does for stack commands).
        cmd.env("PULUMI_DEBUG_COMMANDS", "true");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a command to completion; its output is logged line by line as it comes.
    pub async fn run(&self, args: &[String]) -> Result<Output, CliError> {
        self.run_with_events(args, None, None, Capture::Logged)
            .await
            .map(|(o, _)| o)
    }

    /// Runs a command whose output must be JSON, and parses it. Its stdout is kept whole (up
    /// to [`MAX_JSON_BYTES`]) and never logged or put in an error: it may hold secrets.
    pub async fn run_json<T: for<'de> Deserialize<'de>>(
        &self,
        args: &[String],
    ) -> Result<T, CliError> {
        let command = display_args(args);
        let (out, _) = self
            .run_with_events(args, None, None, Capture::Private)
            .await?;
        if out.stdout_truncated {
            return Err(CliError::OutputTooLarge { command });
        }
        serde_json::from_str(&out.stdout).map_err(|e| CliError::Parse {
            command,
            error: json_error(&e),
        })
    }

    /// Runs an engine operation (up, preview, refresh, destroy) with `--event-log`, forwarding
    /// each engine event to `events`. If `events` closes (the caller went away), the
    /// operation is interrupted as Ctrl-C would, so it ends cleanly with its state saved.
    pub async fn run_operation(
        &self,
        args: &[String],
        events: mpsc::Sender<serde_json::Value>,
    ) -> Result<(Output, Vec<serde_json::Value>), CliError> {
        let dir = std::env::temp_dir().join(format!(
            "pulumi-agent-{}-{}",
            std::process::id(),
            EVENT_LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(CliError::EventLog)?;
        let log = dir.join("events.json");
        let mut full: Vec<String> = args.to_vec();
        full.push("--event-log".into());
        full.push(log.display().to_string());
        let result = self
            .run_with_events(&full, Some(&log), Some(events), Capture::Logged)
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn run_with_events(
        &self,
        args: &[String],
        event_log: Option<&Path>,
        events: Option<mpsc::Sender<serde_json::Value>>,
        capture: Capture,
    ) -> Result<(Output, Vec<serde_json::Value>), CliError> {
        let shown = display_args(args);
        debug!(command = %shown, "running pulumi");
        let (mut child, _guard) = self
            .children
            .spawn_tracked(|| self.command(args).spawn(), |c| c.id())
            .map_err(|source| CliError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stdout = tokio::spawn(read_stdout(child.stdout.take(), capture));
        let stderr = tokio::spawn(read_lines(child.stderr.take(), "stderr", true));

        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let tail = event_log
            .map(|path| tokio::spawn(tail_events(path.to_path_buf(), events.clone(), done_rx)));

        let mut interrupted = false;
        let status = loop {
            let closed = async {
                match &events {
                    Some(tx) if !interrupted => tx.closed().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status,
                _ = closed => {
                    info!(pid, command = %shown, "the caller went away; interrupting the operation");
                    // SAFETY: plain syscall on our own child.
                    unsafe { libc::kill(pid, libc::SIGINT); }
                    interrupted = true;
                }
            }
        };
        let _ = done_tx.send(true);
        let seen = match tail {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let (stdout, stdout_truncated) = stdout.await.unwrap_or_default();
        let out = Output {
            stdout,
            stderr: stderr.await.unwrap_or_default(),
            stdout_truncated,
        };
        let status = status.map_err(|source| CliError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        if status.success() {
            return Ok((out, seen));
        }
        let code = status.code().unwrap_or(-1);
        // A private stdout (JSON that may hold secrets) is left out of the failure entirely.
        let stdout = match capture {
            Capture::Logged => out.stdout,
            Capture::Private => String::new(),
        };
        let out = Output { stdout, ..out };
        Err(CliError::Failed {
            command: shown,
            code,
            detail: failure_detail(&seen, &out),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
