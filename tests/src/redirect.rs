//! A git HTTP endpoint that redirects to another host, for proving that credentials stay with
//! the host they were configured for. The first server (on 127.0.0.1) answers every request
//! with a 302 to the same path on a second server on another loopback address (127.0.0.2), which
//! asks for basic auth (401) and records every `Authorization` header it is sent.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct OffsiteRedirect {
    /// The URL to configure (it redirects).
    pub url: String,
    /// The host the redirect points at.
    pub other_host: String,
    seen: Arc<Mutex<Vec<String>>>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

impl OffsiteRedirect {
    pub fn start() -> std::io::Result<OffsiteRedirect> {
        let other = TcpListener::bind("127.0.0.2:0")?;
        let other_addr = other.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in other.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let headers = read_head(&stream).1;
                for h in headers {
                    if h.to_ascii_lowercase().starts_with("authorization:")
                        && let Ok(mut l) = log.lock()
                    {
                        l.push(h);
                    }
                }
                let _ = (&stream).write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let first = TcpListener::bind("127.0.0.1:0")?;
        let first_addr = first.local_addr()?;
        thread::spawn(move || {
            for stream in first.incoming().flatten() {
                let (target, _) = read_head(&stream);
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{other_addr}{target}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = (&stream).write_all(reply.as_bytes());
            }
        });
        Ok(OffsiteRedirect {
            url: format!("http://{first_addr}/org/repo.git"),
            other_host: other_addr.to_string(),
            seen,
            requests,
        })
    }

    /// How many requests reached the other host: a test that proves nothing was sent there
    /// must first show that the client did follow the redirect.
    pub fn requests_elsewhere(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `Authorization` headers the other host received.
    pub fn credentials_seen_elsewhere(&self) -> Vec<String> {
        self.seen.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The request target and the header lines of one request.
fn read_head(stream: &TcpStream) -> (String, Vec<String>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return (String::from("/"), Vec::new());
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" => break,
            Ok(_) => headers.push(h.trim().to_string()),
        }
    }
    (target, headers)
}
