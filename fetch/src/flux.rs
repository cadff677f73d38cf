//! `fetch flux`: a Flux `status.artifact` (URL + digest) into a verified program directory.
//!
//! One pass over the bytes: a download thread reads the body and hashes it, and hands the
//! chunks over a small bounded channel to the unpacking thread, which inflates and writes them
//! into a staging directory. The staged tree is switched in only after the whole body was read
//! and its digest matched; on any failure it is removed. The two threads keep both cores busy
//! (hash on one, inflate and write on the other) while memory stays at a few chunks.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::blocking::Client;
use tracing::{info, warn};

use crate::digest::Digest;
use crate::http::{self, HttpError};
use crate::unpack::{self, Deadline, Summary, UnpackError, UnpackOptions};
use crate::workspace::{Workspace, WorkspaceError};

const CHUNK: usize = 64 << 10;
const CHANNEL_DEPTH: usize = 16;

#[derive(Debug, Clone)]
pub struct FluxRequest {
    pub url: Url,
    pub digest: Digest,
    pub retries: u32,
    pub timeout: Duration,
    pub backoff: Duration,
    pub unpack: UnpackOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum FluxError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "digest mismatch: the artifact from {url} hashes to {actual}, expected {expected}; \
         the artifact changed or was corrupted in transit, nothing was kept"
    )]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("cannot unpack the artifact from {url}")]
    Unpack {
        url: String,
        #[source]
        source: UnpackError,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("the unpacking thread panicked")]
    Panicked,
}

#[derive(Debug)]
pub enum Outcome {
    /// The tree recorded for this digest was already in place (a pod restart).
    Reused,
    Fetched(Summary),
}

/// Runs the fetch; on error the caller clears the workspace.
pub fn fetch(req: &FluxRequest, ws: &Workspace) -> Result<Outcome, FluxError> {
    let key = format!("flux {} modes={:?}", req.digest, ws.modes());
    if ws.already_fetched(&key) {
        info!(digest = %req.digest, "artifact already in place, not downloading again");
        ws.relink()?;
        return Ok(Outcome::Reused);
    }
    let client = http::client().map_err(FluxError::Client)?;
    let started = Instant::now();
    let deadline = started + req.timeout;
    let shown = http::redact(&req.url);
    let mut attempt = 0;
    loop {
        let staging = ws.stage()?;
        let result = download_and_unpack(&client, req, staging.path().to_path_buf(), deadline);
        match result {
            Ok(summary) => {
                ws.commit(staging, &key)?;
                info!(
                    url = %shown,
                    digest = %req.digest,
                    files = summary.files,
                    bytes = summary.bytes,
                    skipped = summary.skipped,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "artifact verified and unpacked"
                );
                return Ok(Outcome::Fetched(summary));
            }
            Err(FluxError::Http(e)) => {
                drop(staging);
                let Some(asked) = e.retry() else {
                    return Err(e.into());
                };
                let wait = asked.unwrap_or_else(|| http::backoff(req.backoff, attempt));
                let remaining = deadline.saturating_duration_since(Instant::now());
                if attempt >= req.retries || wait >= remaining {
                    if attempt < req.retries {
                        return Err(HttpError::TimedOut {
                            url: shown,
                            after: req.timeout,
                        }
                        .into());
                    }
                    return Err(e.into());
                }
                attempt += 1;
                warn!(
                    error = %crate::error::chain(&e),
                    attempt,
                    retries = req.retries,
                    wait_ms = wait.as_millis() as u64,
                    "download failed, retrying"
                );
                thread::sleep(wait);
            }
            Err(e) => return Err(e),
        }
    }
}

fn download_and_unpack(
    client: &Client,
    req: &FluxRequest,
    root: PathBuf,
    deadline: Instant,
) -> Result<Summary, FluxError> {
    let shown = http::redact(&req.url);
    let mut resp = http::get(client, &req.url, deadline)?;
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    // --timeout bounds the unpacking too, symlink checks included, not just the download.
    let opts = UnpackOptions {
        deadline: Some(Deadline {
            at: deadline,
            after: req.timeout,
        }),
        ..req.unpack
    };
    let unpacker = thread::Builder::new()
        .name("unpack".into())
        .spawn(move || unpack::unpack(ChannelReader::new(rx), &root, &opts))
        .map_err(|e| FluxError::Workspace(spawn_error(e)))?;

    let mut hasher = req.digest.hasher();
    let mut sender: Option<SyncSender<Vec<u8>>> = Some(tx);
    let mut broken = None;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        match resp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                chunk.truncate(n);
                hasher.update(&chunk);
                // If the unpacker stopped early (a bad entry), keep reading so the digest can
                // still tell a corrupted download from a hostile but authentic artifact.
                if let Some(tx) = &sender
                    && tx.send(chunk).is_err()
                {
                    sender = None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                broken = Some(e);
                break;
            }
        }
    }
    drop(sender);
    let unpacked = unpacker.join().map_err(|_| FluxError::Panicked)?;

    if let Some(source) = broken {
        return Err(HttpError::Body { url: shown, source }.into());
    }
    let actual = hasher.finalize();
    if actual != req.digest {
        return Err(FluxError::DigestMismatch {
            url: shown,
            expected: req.digest.clone(),
            actual,
        });
    }
    unpacked.map_err(|source| FluxError::Unpack { url: shown, source })
}

fn spawn_error(source: io::Error) -> WorkspaceError {
    WorkspaceError::Io {
        action: "cannot start the unpacking thread for",
        path: PathBuf::new(),
        source,
    }
}

/// The receiving end of the download channel as a `Read`; a closed channel is end of input.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
