//! A real HTTP/1.1 server on loopback whose misbehaviour each test scripts: status codes,
//! Retry-After, connections cut mid-body, silence. It counts requests per path so tests can
//! assert what was (not) downloaded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body.
    Body(Vec<u8>),
    /// A bare status with optional Retry-After.
    Status(u16, Option<String>),
    /// Headers promise the whole body, half of it is sent, then the connection closes.
    Cut(Vec<u8>),
    /// Nothing at all until the client gives up.
    Silence,
    /// 200 with the whole length promised, the body sent `chunk` bytes at a time with `pause`
    /// between them: a slow network.
    Trickle {
        body: Vec<u8>,
        chunk: usize,
        pause: Duration,
    },
}

/// A path's script: replies in order; the last one repeats.
#[derive(Clone, Debug)]
pub struct Script(pub Vec<Reply>);

#[derive(Default)]
struct State {
    routes: HashMap<String, Script>,
    hits: HashMap<String, usize>,
    requests: Vec<String>,
}

pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || handle(stream, &state));
            }
        });
        Server { addr, state }
    }

    pub fn route(&self, path: &str, replies: Vec<Reply>) -> String {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), Script(replies));
        self.url(path)
    }

    pub fn serve(&self, path: &str, body: Vec<u8>) -> String {
        self.route(path, vec![Reply::Body(body)])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(request_line.trim().to_string());
        let n = {
            let hits = s.hits.entry(path.clone()).or_insert(0);
            *hits += 1;
            *hits
        };
        match s.routes.get(&path) {
            Some(Script(replies)) => replies[(n - 1).min(replies.len() - 1)].clone(),
            None => Reply::Status(404, None),
        }
    };
    let mut out = stream;
    let _ = match reply {
        Reply::Body(body) => write_response(&mut out, 200, None, &body, body.len()),
        Reply::Status(code, retry_after) => write_response(&mut out, code, retry_after, b"", 0),
        Reply::Cut(body) => {
            write_response(&mut out, 200, None, &body[..body.len() / 2], body.len())
        }
        Reply::Silence => {
            thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        Reply::Trickle { body, chunk, pause } => {
            write_response(&mut out, 200, None, b"", body.len()).and_then(|()| {
                for part in body.chunks(chunk.max(1)) {
                    out.write_all(part)?;
                    out.flush()?;
                    thread::sleep(pause);
                }
                Ok(())
            })
        }
    };
}

fn write_response(
    out: &mut TcpStream,
    code: u16,
    retry_after: Option<String>,
    body: &[u8],
    length: usize,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {length}\r\nContent-Type: application/gzip\r\nConnection: close\r\n"
    );
    if let Some(r) = retry_after {
        head.push_str(&format!("Retry-After: {r}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
