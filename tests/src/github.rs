//! GitHub's API for a GitHub App, on loopback: no real one can run here. It checks what GitHub
//! checks (the RS256 signature against the App's public key, the claims, the method, path and
//! headers) and returns an installation token, which the harness's git server then accepts as
//! the password of `x-access-token`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

pub const APP_ID: &str = "424242";
pub const INSTALLATION: &str = "31337";
pub const TOKEN: &str = "ghs_e2eInstallationToken0123456789";

/// GitHub's installation-token endpoint on loopback, over HTTPS with a self-signed
/// certificate (trust it with `SSL_CERT_FILE` = [`FakeGitHub::ca_path`]).
pub struct FakeGitHub {
    addr: SocketAddr,
    ca_file: tempfile::NamedTempFile,
    accepted: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

/// What GitHub would say about a request, or None if it is right.
fn check(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    public: &RsaPublicKey,
) -> Option<String> {
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    if method != "POST" || path != format!("/app/installations/{INSTALLATION}/access_tokens") {
        return Some(format!("Not Found: {method} {path}"));
    }
    if header("accept") != Some("application/vnd.github+json") {
        return Some("wrong Accept header".into());
    }
    if header("x-github-api-version").is_none_or(str::is_empty) {
        return Some("no X-GitHub-Api-Version".into());
    }
    if header("user-agent").is_none_or(str::is_empty) {
        return Some("Request forbidden by administrative rules. Please make sure your request has a User-Agent header".into());
    }
    let jwt = header("authorization")?.strip_prefix("Bearer ")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Some("A JSON web token could not be decoded".into());
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
    let head: serde_json::Value = serde_json::from_slice(&decode(h)?).ok()?;
    if head["alg"] != "RS256" {
        return Some("'alg' must be RS256".into());
    }
    let sig = Signature::try_from(decode(s)?.as_slice()).ok()?;
    if VerifyingKey::<Sha256>::new(public.clone())
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .is_err()
    {
        return Some("A JSON web token could not be decoded".into());
    }
    let claims: serde_json::Value = serde_json::from_slice(&decode(c)?).ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let (iat, exp) = (claims["iat"].as_i64()?, claims["exp"].as_i64()?);
    if claims["iss"].as_str() != Some(APP_ID)
        && claims["iss"].as_i64().map(|i| i.to_string()).as_deref() != Some(APP_ID)
    {
        return Some("'Issuer' claim ('iss') must be the App's ID".into());
    }
    if iat > now + 1 || exp <= now || exp - iat > 600 {
        return Some("'Expiration time' claim ('exp') is too far in the future or past".into());
    }
    None
}

impl FakeGitHub {
    /// Serves installation [`INSTALLATION`] of App [`APP_ID`], whose key `public` is.
    pub fn start(public: RsaPublicKey) -> FakeGitHub {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
        let mut ca_file = tempfile::NamedTempFile::new().expect("ca file");
        ca_file
            .write_all(cert.cert.pem().as_bytes())
            .expect("write ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .expect("tls config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let (acc, rej) = (accepted.clone(), rejected.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tcp = stream;
                let mut conn = conn;
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut it = line.split_whitespace();
                let (method, path) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                );
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let (status, reply) = match check(&method, &path, &headers, &public) {
                    None => {
                        acc.fetch_add(1, Ordering::SeqCst);
                        (
                            "201 Created",
                            serde_json::json!({"token": TOKEN, "expires_at": "2099-01-01T00:00:00Z"}),
                        )
                    }
                    Some(message) => {
                        rej.fetch_add(1, Ordering::SeqCst);
                        ("401 Unauthorized", serde_json::json!({"message": message}))
                    }
                };
                let reply = reply.to_string();
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = tls.write_all(response.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        FakeGitHub {
            addr,
            ca_file,
            accepted,
            rejected,
        }
    }

    /// The API's base URL (`GITHUB_API_URL`).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The certificate to trust.
    pub fn ca_path(&self) -> &Path {
        self.ca_file.path()
    }

    /// Token requests answered with a token.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Token requests refused.
    pub fn rejected(&self) -> usize {
        self.rejected.load(Ordering::SeqCst)
    }
}

/// What a GitHub App test starts from: the App's key and one that is not its (PKCS#1 PEM, as
/// GitHub hands them out), GitHub's API serving the App's installation, and a git server on
/// loopback that takes the installation token as GitHub's git endpoint does
/// (`x-access-token`), with repository `app-repo` at one commit.
pub struct AppFixture {
    pub pem: String,
    pub other_pem: String,
    pub github: FakeGitHub,
    pub git: crate::git_server::GitServer,
    /// The commit of `app-repo`.
    pub sha: String,
    _keys: tempfile::TempDir,
}

impl AppFixture {
    /// `app-repo` holds `files` in its one commit.
    pub fn start(files: &[(&str, &str)]) -> AppFixture {
        use crate::git_server::{Credentials, GitServer};
        let keys = tempfile::tempdir().expect("tempdir");
        let (pem, public) = app_key(keys.path(), "app");
        let (other_pem, _) = app_key(keys.path(), "other");
        let git = GitServer::start(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Credentials {
                username: "x-access-token".into(),
                password: TOKEN.into(),
            },
        )
        .expect("git server");
        let sha = git
            .create_repo("app-repo")
            .expect("repo")
            .commit(files, "c")
            .expect("commit");
        AppFixture {
            pem,
            other_pem,
            github: FakeGitHub::start(public),
            git,
            sha,
            _keys: keys,
        }
    }
}

/// An RSA key made by openssl, as PKCS#1 (what GitHub hands out) and its public half.
fn app_key(dir: &Path, name: &str) -> (String, RsaPublicKey) {
    let pkcs8 = dir.join(format!("{name}.p8"));
    let pkcs1 = dir.join(format!("{name}.pem"));
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pkcs8)
        .status()
        .expect("openssl")
        .success()
        && Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&pkcs8)
            .arg("-out")
            .arg(&pkcs1)
            .status()
            .expect("openssl")
            .success();
    assert!(ok, "openssl made the key");
    let private =
        RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(&pkcs8).expect("p8")).expect("key");
    (
        std::fs::read_to_string(&pkcs1).expect("pem"),
        private.to_public_key(),
    )
}
