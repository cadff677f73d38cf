//! Reading what the CLI prints: stdout and stderr line by line into the log (the tail kept),
//! private JSON whole and never logged, and the engine's event log as it grows.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::MAX_JSON_BYTES;
use super::diagnostics::is_error_diagnostic;

/// How much of a command's stdout and stderr is kept for its result (the tail; verbose engine
/// logs can run to many megabytes, and all of it is in the container log anyway).
const KEEP_OUTPUT_BYTES: usize = 1 << 20;

/// What happens to a command's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Capture {
    /// Logged line by line at debug level, the tail kept for the result (permalinks, known
    /// failures); it never reaches a failure's message.
    Logged,
    /// Kept whole up to [`MAX_JSON_BYTES`], never logged: JSON that may hold secrets.
    Private,
}

pub(super) async fn read_stdout(
    pipe: Option<impl AsyncRead + Unpin>,
    capture: Capture,
) -> (String, bool) {
    match capture {
        // stdout prints values (outputs, diffs, a program's own prints): debug only.
        Capture::Logged => (read_lines(pipe, "stdout", false).await, false),
        Capture::Private => read_private(pipe, MAX_JSON_BYTES).await,
    }
}

/// Reads a pipe whole, up to `limit` bytes (then drains the rest so the CLI is not blocked, and
/// says it was cut). Nothing of it is logged.
pub(super) async fn read_private(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
) -> (String, bool) {
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
pub(super) async fn read_lines(
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
pub(super) async fn tail_events(
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

#[cfg(test)]
mod tests {
    use super::*;

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
