//! The Pulumi CLI, driven as a child process in the workspace directory, the way Pulumi's
//! Automation API drives it: `--non-interactive`, `--stack` on every stack command, JSON output,
//! and the engine's event log (`--event-log`, one JSON event a line) for progress, never the
//! screen output.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::process::Children;

/// How much of a command's stdout and stderr is kept for its result (the tail; verbose engine
/// logs can run to many megabytes, and all of it is in the container log anyway).
const KEEP_OUTPUT_BYTES: usize = 1 << 20;
/// The most a command whose JSON is parsed may print: the largest reply the operator accepts
/// (stack outputs travel in one gRPC message of at most 400 MiB).
const MAX_JSON_BYTES: usize = 400 << 20;
/// How long a failure's explanation may be: it ends up in object status and events.
const DETAIL_BYTES: usize = 2048;
/// A failure's explanation when the CLI printed no diagnostic on stderr.
const NO_DIAGNOSTICS: &str = "the CLI printed no error diagnostic on stderr; its standard \
     output is in the log of the workspace pod's pulumi container at debug level only (set \
     AGENT_LOG=debug on that container through the Stack's workspaceTemplate)";

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

/// What happens to a command's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// Logged line by line at debug level, the tail kept for the result (permalinks, known
    /// failures); it never reaches a failure's message.
    Logged,
    /// Kept whole up to [`MAX_JSON_BYTES`], never logged: JSON that may hold secrets.
    Private,
}

/// serde_json's message for a document that did not parse, reduced to its category and
/// position: its data errors quote the offending value (`invalid type: string "hunter2"`).
fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "JSON cut short",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

async fn read_stdout(pipe: Option<impl AsyncRead + Unpin>, capture: Capture) -> (String, bool) {
    match capture {
        // stdout prints values (outputs, diffs, a program's own prints): debug only.
        Capture::Logged => (read_lines(pipe, "stdout", false).await, false),
        Capture::Private => read_private(pipe, MAX_JSON_BYTES).await,
    }
}

/// Reads a pipe whole, up to `limit` bytes (then drains the rest so the CLI is not blocked, and
/// says it was cut). Nothing of it is logged.
async fn read_private(pipe: Option<impl AsyncRead + Unpin>, limit: usize) -> (String, bool) {
    let Some(mut pipe) = pipe else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut truncated = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) if kept.len() + n <= limit => kept.extend_from_slice(&buf[..n]),
            Ok(_) => truncated = true,
            Err(e) => {
                warn!(error = %e, "cannot read the pulumi command's output");
                break;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// Reads a pipe line by line into the log, keeping the tail for the result.
async fn read_lines(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: &'static str,
    log: bool,
) -> String {
    let Some(pipe) = pipe else {
        return String::new();
    };
    let mut lines = BufReader::new(pipe).lines();
    let mut kept = TailBuffer::new(KEEP_OUTPUT_BYTES);
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if log {
                    info!(target: "pulumi", stream, "{line}");
                } else {
                    debug!(target: "pulumi", stream, "{line}");
                }
                kept.push(&line);
            }
            Ok(None) => break,
            Err(e) => {
                warn!(stream, error = %e, "cannot read the pulumi command's output");
                break;
            }
        }
    }
    kept.into_string()
}

/// The last `cap` bytes of a stream of lines.
struct TailBuffer {
    cap: usize,
    len: usize,
    lines: VecDeque<String>,
    dropped: bool,
}

impl TailBuffer {
    fn new(cap: usize) -> TailBuffer {
        TailBuffer {
            cap,
            len: 0,
            lines: VecDeque::new(),
            dropped: false,
        }
    }

    fn push(&mut self, line: &str) {
        self.len += line.len() + 1;
        self.lines.push_back(line.to_string());
        while self.len > self.cap && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.len -= old.len() + 1;
                self.dropped = true;
            }
        }
    }

    fn into_string(self) -> String {
        let mut out = String::with_capacity(self.len + 32);
        if self.dropped {
            out.push_str("[earlier output omitted]\n");
        }
        for l in self.lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }
}

/// Follows the event log the CLI appends to, one JSON event a line, until the CLI has exited
/// and the file is drained. Returns the events (for the summary and error diagnostics).
async fn tail_events(
    path: PathBuf,
    events: Option<mpsc::Sender<serde_json::Value>>,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    let mut file = None;
    let mut pending = Vec::<u8>::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let finished = *done.borrow();
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        let mut progressed = false;
        if let Some(f) = file.as_mut() {
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        progressed = true;
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=pos).collect();
                            forward(&line, &events, &mut seen).await;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read the engine event log");
                        break;
                    }
                }
            }
        }
        if finished && !progressed {
            if !pending.is_empty() {
                let line = std::mem::take(&mut pending);
                forward(&line, &events, &mut seen).await;
            }
            return seen;
        }
        if !progressed {
            tokio::select! {
                _ = done.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

async fn forward(
    line: &[u8],
    events: &Option<mpsc::Sender<serde_json::Value>>,
    seen: &mut Vec<serde_json::Value>,
) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(event) => {
            if let Some(tx) = events {
                // A caller that went away is noticed by the operation loop; keep reading.
                let _ = tx.send(event.clone()).await;
            }
            // Only what the result needs is kept: summaries and error diagnostics.
            if event.get("summaryEvent").is_some() || is_error_diagnostic(&event) {
                seen.push(event);
            }
        }
        Err(e) => debug!(error = %e, "skipping an event log line that is not JSON"),
    }
}

fn is_error_diagnostic(event: &serde_json::Value) -> bool {
    event
        .get("diagnosticEvent")
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
        == Some("error")
}

/// Why a command failed, in a few lines a person can act on: the engine's error diagnostics
/// when there are any, else the end of stderr. Never stdout: it can print values (outputs,
/// diffs, whatever the program prints), and this text reaches statuses and events that the
/// view role can read.
fn failure_detail(events: &[serde_json::Value], out: &Output) -> String {
    let diagnostics: Vec<String> = events
        .iter()
        .filter(|e| is_error_diagnostic(e))
        .filter_map(|e| e["diagnosticEvent"]["message"].as_str())
        .map(|m| strip_color(m).trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    let text = if !diagnostics.is_empty() {
        diagnostics.join("; ")
    } else {
        let err_lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !is_log_line(l))
            .collect();
        if err_lines.is_empty() {
            return NO_DIAGNOSTICS.into();
        }
        let start = err_lines.len().saturating_sub(12);
        err_lines[start..].join("\n")
    };
    truncate(&strip_color(&text), DETAIL_BYTES)
}

/// Engine log lines from `--logtostderr` (JSON in current CLIs, glog's `I1125 09:33:20.1` in
/// older ones): noise in an error message.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    line.starts_with("{\"time\":")
        || (b.len() > 5
            && matches!(b[0], b'I' | b'W' | b'E' | b'F')
            && b[1..5].iter().all(u8::is_ascii_digit))
}

/// Removes the CLI's colour directives (`<{%reset%}>`) and ANSI escapes.
pub fn strip_color(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("<{%") {
        out.push_str(&rest[..start]);
        match rest[start..].find("%}>") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    let mut clean = String::with_capacity(out.len());
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        clean.push(c);
    }
    clean
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The command line for logs and messages; config values are never shown (they may be
/// secrets), only their keys.
pub fn display_args(args: &[String]) -> String {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push(match a.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => "***".into(),
            });
            hide_next = false;
            continue;
        }
        hide_next = matches!(a.as_str(), "--plaintext" | "--secret" | "--json");
        out.push(a.clone());
    }
    out.join(" ")
}

/// The permalink the CLI prints for backends that have one (Pulumi Cloud).
pub fn permalink(stdout: &str) -> Option<String> {
    for prefix in [
        "View Live: ",
        "View in Browser: ",
        "View in Browser (Ctrl+O): ",
        "Permalink: ",
    ] {
        if let Some(i) = stdout.find(prefix) {
            let rest = &stdout[i + prefix.len()..];
            let end = rest.find('\n')?;
            let link = rest[..end].trim();
            if !link.is_empty() {
                return Some(link.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_never_appear_in_the_displayed_command() {
        let args: Vec<String> = [
            "config",
            "set-all",
            "--stack",
            "dev",
            "--path",
            "--secret",
            "p:token=hunter2",
            "--plaintext",
            "p:region=eu",
            "--json",
            "{\"p:x\":{\"value\":\"s3cret\"}}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let shown = display_args(&args);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("p:token=***"), "{shown}");
        assert!(shown.contains("--stack dev"), "{shown}");
    }

    #[test]
    fn permalinks_are_found_after_any_known_prefix() {
        assert_eq!(
            permalink("Updating...\nView Live: https://app.pulumi.com/o/p/s/updates/3\n\n"),
            Some("https://app.pulumi.com/o/p/s/updates/3".into())
        );
        assert_eq!(permalink("no link here\n"), None);
        assert_eq!(permalink("View Live: unterminated"), None);
    }

    #[test]
    fn colour_directives_and_escapes_are_stripped() {
        assert_eq!(
            strip_color("<{%fg 1%}>error: <{%reset%}>boom\u{1b}[31m!\u{1b}[0m"),
            "error: boom!"
        );
    }

    #[test]
    fn failure_detail_prefers_engine_diagnostics() {
        let events = vec![serde_json::json!({
            "diagnosticEvent": {"severity": "error", "message": "<{%reset%}>resource failed: boom\n"}
        })];
        let out = Output {
            stdout: "lots\n".into(),
            stderr: "error: update failed\n".into(),
            ..Output::default()
        };
        assert_eq!(failure_detail(&events, &out), "resource failed: boom");
        let none = failure_detail(&[], &out);
        assert_eq!(none, "error: update failed");
        let verbose = Output {
            stdout: String::new(),
            stderr: "I1125 09:33:20.1 log line\n{\"time\":\"x\",\"v\":9}\nerror: real problem\n"
                .into(),
            ..Output::default()
        };
        assert_eq!(failure_detail(&[], &verbose), "error: real problem");
    }

    #[test]
    fn failure_detail_never_quotes_stdout() {
        let out = Output {
            stdout: "Outputs:\n    password: \"hunter2\"\n".into(),
            stderr: "\n".into(),
            ..Output::default()
        };
        let detail = failure_detail(&[], &out);
        assert!(!detail.contains("hunter2"), "{detail}");
        assert_eq!(detail, NO_DIAGNOSTICS);
    }

    #[test]
    fn a_json_parse_error_never_quotes_the_output() {
        let e = serde_json::from_str::<std::collections::HashMap<String, u32>>(
            r#"{"password": "hunter2"}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("hunter2"),
            "serde_json does quote it"
        );
        let shown = json_error(&e);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.starts_with("JSON of an unexpected shape at line 1"),
            "{shown}"
        );
        let cut = serde_json::from_str::<serde_json::Value>(r#"{"a": "s3cr"#).unwrap_err();
        assert_eq!(json_error(&cut), "JSON cut short at line 1 column 11");
    }

    #[tokio::test]
    async fn private_output_is_kept_whole_up_to_the_limit() {
        let big = vec![b'x'; 3 << 20];
        let (kept, cut) = read_private(Some(&big[..]), 4 << 20).await;
        assert_eq!((kept.len(), cut), (3 << 20, false));
        let (kept, cut) = read_private(Some(&big[..]), 1 << 20).await;
        assert!(cut && kept.len() <= 1 << 20);
    }

    #[test]
    fn the_tail_buffer_keeps_the_end() {
        let mut t = TailBuffer::new(10);
        for l in ["aaaa", "bbbb", "cccc"] {
            t.push(l);
        }
        assert_eq!(t.into_string(), "[earlier output omitted]\nbbbb\ncccc\n");
    }
}
