//! Where a run's outcome is told: logs on stderr (text or JSON) and, on failure, the
//! container's termination message so `kubectl describe pod` shows why the init container
//! failed without anyone reading its logs.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Kubernetes keeps at most this much of a termination message.
const TERMINATION_MESSAGE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; `FETCH_LOG` (a tracing filter such as `debug`) overrides the level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FETCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Writes `message` as the termination message when `path` exists (it does in a pod; it does
/// not on a workstation, where nothing is written).
pub fn termination_message(path: &Path, message: &str) {
    if !path.exists() {
        return;
    }
    let mut end = message.len().min(TERMINATION_MESSAGE_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let written = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(&message.as_bytes()[..end]));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_written_only_where_the_file_exists_and_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        termination_message(&missing, "boom");
        assert!(!missing.exists());
        let log = tmp.path().join("termination-log");
        std::fs::write(&log, "old text that is longer").unwrap();
        termination_message(&log, "boom");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "boom");
        termination_message(&log, &"é".repeat(3000));
        let got = std::fs::read_to_string(&log).unwrap();
        assert!(got.len() <= TERMINATION_MESSAGE_MAX && got.len() > 4000);
    }
}
