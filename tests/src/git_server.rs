//! A smart-HTTP git server: `git http-backend` behind a small CGI host, with HTTP basic auth.
//! Flux's source-controller and the git CLI talk to it exactly as to a real forge's HTTP
//! endpoint (the dumb protocol is not served: `GIT_HTTP_EXPORT_ALL` and smart only).
//!
//! One thread accepts, one thread per connection; every response closes the connection, which
//! HTTP/1.1 allows and every git client copes with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}")]
    Listen(String, #[source] std::io::Error),
    #[error("cannot create {0}")]
    Create(PathBuf, #[source] std::io::Error),
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        args: String,
        dir: String,
        stderr: String,
    },
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
}

/// Basic-auth credentials the server requires.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

pub struct GitServer {
    addr: SocketAddr,
    root: PathBuf,
    _owned: Option<tempfile::TempDir>,
    credentials: Credentials,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    root: PathBuf,
    credentials: Credentials,
    requests: Arc<AtomicUsize>,
}

impl GitServer {
    /// Serves repositories under a fresh directory on `ip` (port chosen by the kernel).
    pub fn start(ip: IpAddr, credentials: Credentials) -> Result<GitServer, Error> {
        let owned = tempfile::Builder::new()
            .prefix("e2e-git-")
            .tempdir()
            .map_err(|e| Error::Create(PathBuf::from("git root"), e))?;
        let root = owned.path().to_path_buf();
        let mut server = GitServer::serve(ip, 0, &root, credentials)?;
        server._owned = Some(owned);
        Ok(server)
    }

    /// Serves the bare repositories in `<root>/repos` on `ip:port` (0: any free port).
    pub fn serve(
        ip: IpAddr,
        port: u16,
        root: &Path,
        credentials: Credentials,
    ) -> Result<GitServer, Error> {
        let listener =
            TcpListener::bind((ip, port)).map_err(|e| Error::Listen(ip.to_string(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Listen(ip.to_string(), e))?;
        let root = root.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            root: root.join("repos"),
            credentials: credentials.clone(),
            requests: requests.clone(),
        });
        std::fs::create_dir_all(&shared.root).map_err(|e| Error::Create(shared.root.clone(), e))?;
        let stop_flag = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                }
            }
        });
        Ok(GitServer {
            addr,
            root,
            _owned: None,
            credentials,
            stop,
            requests,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The clone URL of repository `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// How many HTTP requests were served (authenticated or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Creates an empty bare repository `name` (default branch `main`) and a work tree whose
    /// commits are pushed to it through this server (smart HTTP, receive-pack, basic auth).
    pub fn create_repo(&self, name: &str) -> Result<Repo, Error> {
        let bare = self.root.join("repos").join(format!("{name}.git"));
        let work = self.root.join("work").join(name);
        std::fs::create_dir_all(&bare).map_err(|e| Error::Create(bare.clone(), e))?;
        std::fs::create_dir_all(&work).map_err(|e| Error::Create(work.clone(), e))?;
        git(&bare, &["init", "--bare", "--initial-branch=main", "."])?;
        git(&work, &["init", "--initial-branch=main", "."])?;
        let push_url = format!(
            "http://{}:{}@{}/{name}.git",
            userinfo(&self.credentials.username),
            userinfo(&self.credentials.password),
            self.addr
        );
        git(&work, &["remote", "add", "origin", &push_url])?;
        Ok(Repo { work, bare })
    }
}

/// Percent-encodes a URL's user or password part (a password may hold spaces or `@`).
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop. If the address is gone (its network was torn down first), the
        // thread stays blocked in accept; leave it rather than wait forever.
        let woke =
            TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(2)).is_ok();
        if let Some(t) = self.accept.take()
            && woke
        {
            let _ = t.join();
        }
    }
}

/// A repository's work tree; commits are pushed to the served bare repository.
pub struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    /// The served bare repository on disk (for `file://` URLs and ssh paths).
    pub fn bare_path(&self) -> &Path {
        &self.bare
    }

    /// Sets a config value in the served repository, e.g.
    /// `uploadpack.allowReachableSHA1InWant true`.
    pub fn set_config(&self, key: &str, value: &str) -> Result<(), Error> {
        git(&self.bare, &["config", key, value]).map(|_| ())
    }

    /// Creates a lightweight tag at HEAD and pushes it.
    pub fn tag(&self, name: &str) -> Result<(), Error> {
        git(&self.work, &["tag", name])?;
        git(&self.work, &["push", "-q", "origin", name]).map(|_| ())
    }

    /// Writes `files` (path, contents), commits everything and pushes `main`. Returns the new
    /// commit's SHA. A body starting with `#!` is committed executable (mode 100755).
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> Result<String, Error> {
        use std::os::unix::fs::PermissionsExt;
        for (path, body) in files {
            let p = self.work.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::Create(parent.into(), e))?;
            }
            std::fs::write(&p, body).map_err(|e| Error::Create(p.clone(), e))?;
            if body.starts_with("#!") {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::Create(p.clone(), e))?;
            }
        }
        git(&self.work, &["add", "-A"])?;
        git(
            &self.work,
            &[
                "-c",
                "user.name=e2e",
                "-c",
                "user.email=e2e@example.com",
                "commit",
                "--allow-empty",
                "-q",
                "-m",
                message,
            ],
        )?;
        git(&self.work, &["push", "-q", "origin", "main"])?;
        Ok(git(&self.work, &["rev-parse", "HEAD"])?.trim().to_string())
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if !authorized(req.header("authorization"), &shared.credentials) {
        return respond(
            &mut out,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"git\"")],
            b"authentication required\n",
        );
    }
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &shared.root)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", &req.path)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_USER", &shared.credentials.username)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = req.header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = req.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = req.header("git-protocol") {
        cmd.env("HTTP_GIT_PROTOCOL", proto);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take();
    let body = req.body;
    // Feed the body while reading the output: a large pack could fill both pipes.
    let feeder = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&body);
        }
    });
    let mut output = Vec::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_end(&mut output)?;
    }
    let _ = feeder.join();
    let _ = child.wait();

    // CGI response: headers, a blank line, the body. `Status:` sets the status line.
    let split = find_blank_line(&output);
    let (head, body) = match split {
        Some((end, skip)) => (&output[..end], &output[end + skip..]),
        None => (&output[..], &[][..]),
    };
    let mut status = "200 OK".to_string();
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("status") {
                status = v;
            } else {
                headers.push((k, v));
            }
        }
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    respond(&mut out, &status, &refs, body)
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
    }
    None
}

fn authorized(header: Option<&str>, creds: &Credentials) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{}:{}", creds.username, creds.password).as_bytes()
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            req.headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                let mut trailer = String::new();
                while reader.read_line(&mut trailer)? > 2 {
                    trailer.clear();
                }
                break;
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}
