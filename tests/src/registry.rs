//! A real OCI registry on loopback (Debian's `docker-registry`, the CNCF distribution registry),
//! its storage in the test's directory: where the images built from our Dockerfiles are pushed
//! and where a node pulls them from, by fully qualified names.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Process, ProcessError};

/// Where Debian installs it (`scripts/setup.sh`).
const BINARY: &str = "docker-registry";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot prepare the registry's directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the registry did not answer on {addr} within 20 s; last lines of its log:\n{log}")]
    NotReady { addr: String, log: String },
}

pub struct Registry {
    /// `<ip>:<port>`: the host part of image names.
    addr: String,
    _process: Process,
}

impl Registry {
    /// Starts a registry on loopback with its storage and log under `dir`.
    pub fn start(dir: &Path) -> Result<Registry, RegistryError> {
        Self::start_on(dir, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts a registry listening on `ip` (a real node pulls from the node network's
    /// gateway: loopback is the node's own), with its storage and log under `dir`.
    pub fn start_on(dir: &Path, ip: IpAddr) -> Result<Registry, RegistryError> {
        let root = dir.join("registry");
        std::fs::create_dir_all(root.join("storage"))
            .map_err(|e| RegistryError::Dir(root.clone(), e))?;
        let port = crate::process::free_port();
        let addr = std::net::SocketAddr::new(ip, port).to_string();
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                root.join("storage").display()
            ),
        )
        .map_err(|e| RegistryError::Dir(config.clone(), e))?;
        let mut cmd = Command::new(BINARY);
        cmd.arg("serve").arg(&config);
        let mut process = Process::spawn("registry", cmd, &root)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            process.check_running()?;
            if v2_answers(&addr) {
                break;
            }
            if Instant::now() > deadline {
                return Err(RegistryError::NotReady {
                    addr,
                    log: crate::process::tail(process.log_path(), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Registry {
            addr,
            _process: process,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The fully qualified name of `name:tag` in this registry.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr)
    }
}

/// Whether `GET /v2/` answers 200 (the registry API's base endpoint).
fn v2_answers(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
