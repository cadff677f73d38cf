//! Flux's real source-controller as a host process, run against the harness's control plane.
//! Its artifact server binds on the address given (a node network's gateway, where pods reach
//! the host) and advertises that address in `status.artifact.url`, as the in-cluster Service
//! address would be. (`crate::in_cluster` runs it in the cluster instead.)

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::control_plane::ControlPlane;
use crate::process::{self, Process, ProcessError};
use crate::tools::{self, ToolsError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tools(#[from] ToolsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot create {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("source-controller not healthy after {secs}s; log:\n{log}")]
    Timeout { secs: u64, log: String },
}

pub struct SourceController {
    process: Process,
    storage: SocketAddr,
}

impl SourceController {
    /// Starts source-controller watching all namespaces, its artifact server on `ip`.
    pub async fn start(cp: &ControlPlane, ip: IpAddr) -> Result<SourceController, Error> {
        let dirs = tools::dirs(&["flux"])?;
        let storage_dir = cp.dir().join("source-controller");
        std::fs::create_dir_all(&storage_dir).map_err(|e| Error::Dir(storage_dir.clone(), e))?;
        let listener = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Dir(PathBuf::from(format!("port on {ip}")), e))?;
        let storage = SocketAddr::new(ip, listener.port());
        let health = process::free_port();
        let mut cmd = Command::new(tools::find(&dirs, "source-controller")?);
        // source-controller has no --kubeconfig flag: controller-runtime reads KUBECONFIG.
        cmd.env("KUBECONFIG", cp.kubeconfig())
            .env("RUNTIME_NAMESPACE", "flux-system")
            .arg(format!("--storage-path={}", storage_dir.display()))
            .arg(format!("--storage-addr={storage}"))
            .arg(format!("--storage-adv-addr={storage}"))
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .arg("--metrics-addr=127.0.0.1:0")
            .arg("--enable-leader-election=false")
            .arg("--watch-all-namespaces=true")
            .arg("--log-level=debug");
        let mut process = Process::spawn("source-controller", cmd, &cp.dir().join("logs"))?;
        let secs = 60;
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            process.check_running()?;
            if healthy(health).await {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    secs,
                    log: process::tail(process.log_path(), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(SourceController { process, storage })
    }

    /// The artifact server's address (what `status.artifact.url` points at).
    pub fn storage_addr(&self) -> SocketAddr {
        self.storage
    }

    pub fn log(&self) -> String {
        process::tail(self.process.log_path(), 60)
    }
}

async fn healthy(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}
