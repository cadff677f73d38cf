//! The agent: the gRPC server inside each workspace pod that runs Pulumi operations for the
//! operator (`agent serve`), and the bootstrap step that copies it into the pod's shared volume
//! (`agent bootstrap`).

pub mod auth;
pub mod config;
pub mod envfile;
pub mod operation;
pub mod plan;
pub mod process;
pub mod project;
pub mod pulumi;
pub mod recovery;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use crate::proto::automation_service_server::AutomationServiceServer;
use auth::{Authenticator, KubeAuth};
use process::Children;
use pulumi::Pulumi;
use server::AgentServer;

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Runs Pulumi operations in a workspace pod for the operator"
)]
pub struct Cli {
    /// Debug logging.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Log format.
    #[arg(long, global = true, env = "AGENT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Kubeconfig for the auth checks (default: in-cluster, or $KUBECONFIG).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the automation API over gRPC.
    Serve(ServeArgs),
    /// Copy this binary to TARGET (the bootstrap init container: the operator image has no
    /// shell or `cp`).
    Bootstrap {
        /// Where to put the agent, e.g. /share/agent.
        target: PathBuf,
    },
    /// Make LINK a symlink to TARGET (the `fetch` step of a Workspace whose program is in
    /// its image, `spec.local`).
    Link {
        /// The program directory in the workspace image.
        target: PathBuf,
        /// The link, e.g. /share/workspace.
        link: PathBuf,
    },
    /// Write a minimal Pulumi.yaml (name and runtime) into --target-dir: the `fetch` step of
    /// a Workspace that destroys a stack whose source is gone (`spec.projectInfo`).
    InitProject {
        #[arg(long)]
        target_dir: PathBuf,
        #[arg(long)]
        project_name: String,
        #[arg(long)]
        project_runtime: String,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No checks: for local runs only.
    None,
    /// Kubernetes service-account tokens, checked with TokenReview and SubjectAccessReview.
    Kube,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The program directory (a symlink is followed).
    #[arg(short = 'w', long)]
    pub workspace: PathBuf,
    /// Do not run `pulumi install` at startup (the operator calls Install).
    #[arg(long)]
    pub skip_install: bool,
    /// Select (creating it if needed) this stack at startup.
    #[arg(short = 's', long)]
    pub stack: Option<String>,
    /// Secrets provider for a stack created at startup.
    #[arg(long)]
    pub secrets_provider: Option<String>,
    /// KEY=VALUE lines added to every Pulumi command's environment (missing file: none).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// `kube` unless the agent is run by hand for local testing (`none` lets any caller in).
    #[arg(long, value_enum, default_value = "kube")]
    pub auth_mode: AuthMode,
    /// Token audiences accepted (kube mode), normally `<workspace>.<namespace>`.
    #[arg(long)]
    pub kube_audience: Vec<String>,
    /// The Workspace's namespace (kube mode).
    #[arg(long, env = "WORKSPACE_NAMESPACE")]
    pub kube_workspace_namespace: Option<String>,
    /// The Workspace's name (kube mode).
    #[arg(long, env = "WORKSPACE_NAME")]
    pub kube_workspace_name: Option<String>,
    /// Engine log verbosity (`-v=N`, on stderr); 0 is off.
    #[arg(long, default_value_t = 0)]
    pub pulumi_log_level: u32,
    /// The Pulumi CLI.
    #[arg(long, env = "PULUMI_CLI", default_value = "pulumi")]
    pub pulumi: PathBuf,
    /// Longest wait for running operations to stop after SIGTERM before they are killed.
    #[arg(long, default_value_t = 570)]
    pub shutdown_timeout_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the workspace {path} cannot be opened: {source}")]
    Workspace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    EnvFile(#[from] envfile::EnvFileError),
    #[error(transparent)]
    Project(#[from] project::ProjectError),
    #[error("--auth-mode kube needs {0}")]
    KubeFlags(&'static str),
    #[error("cannot reach the Kubernetes API for the auth checks: {0}")]
    Kube(String),
    #[error("pulumi install failed: {0}")]
    Install(String),
    #[error("cannot select stack: {0}")]
    Stack(String),
    #[error("cannot listen on {addr}: {detail}")]
    Listen { addr: String, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--project-name and --project-runtime must not be empty")]
    EmptyProject,
    #[error("cannot copy the agent to {target}: {source}")]
    Bootstrap {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn init_logging(verbose: bool, format: LogFormat) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Copies the running binary to `target` atomically (written beside it, then renamed).
pub fn bootstrap(target: &Path) -> Result<(), AgentError> {
    let err = |source| AgentError::Bootstrap {
        target: target.display().to_string(),
        source,
    };
    let me = std::env::current_exe().map_err(err)?;
    let tmp = target.with_extension("partial");
    std::fs::copy(&me, &tmp).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    std::fs::rename(&tmp, target).map_err(err)?;
    info!(target = %target.display(), "agent copied");
    Ok(())
}

/// Points `link` at `target`, replacing an earlier link (a restarted init container).
pub fn link(target: &Path, link: &Path) -> Result<(), AgentError> {
    let err = |source| AgentError::Write {
        path: link.display().to_string(),
        source,
    };
    let tmp = link.with_extension("link-partial");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(err)?;
    std::fs::rename(&tmp, link).map_err(err)?;
    info!(link = %link.display(), target = %target.display(), "linked the program directory");
    Ok(())
}

/// Writes `Pulumi.yaml` with just a name and a runtime.
pub fn init_project(dir: &Path, name: &str, runtime: &str) -> Result<(), AgentError> {
    if name.trim().is_empty() || runtime.trim().is_empty() {
        return Err(AgentError::EmptyProject);
    }
    let file = dir.join("Pulumi.yaml");
    let err = |source| AgentError::Write {
        path: file.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let doc = serde_json::json!({"name": name, "runtime": runtime});
    let text =
        serde_yaml::to_string(&doc).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    std::fs::write(&file, text).map_err(err)?;
    info!(file = %file.display(), "wrote the project file");
    Ok(())
}

pub async fn serve(args: ServeArgs, kubeconfig: Option<PathBuf>) -> Result<(), AgentError> {
    let workdir =
        std::fs::canonicalize(&args.workspace).map_err(|source| AgentError::Workspace {
            path: args.workspace.display().to_string(),
            source,
        })?;
    let env = match &args.env_file {
        Some(f) => envfile::load(f)?,
        None => Vec::new(),
    };
    let project = project::Project::load(&workdir)?;
    let auth = authenticator(&args, kubeconfig).await?;
    let children = Children::new();
    process::spawn_reaper(Arc::clone(&children));
    let cli = Pulumi::new(
        args.pulumi.clone(),
        workdir.clone(),
        env,
        args.pulumi_log_level,
        Arc::clone(&children),
    );
    if !args.skip_install {
        cli.run(&["install".to_string()])
            .await
            .map_err(|e| AgentError::Install(e.to_string()))?;
    }
    let server = Arc::new(AgentServer::new(
        cli,
        project.clone(),
        auth,
        Arc::clone(&children),
    ));
    if let Some(stack) = &args.stack {
        server
            .select(stack, true, args.secrets_provider.as_deref())
            .await
            .map_err(|s| AgentError::Stack(s.message().to_string()))?;
    }
    let (addr, listener) = listen(&args).await?;
    info!(
        %addr,
        workspace = %workdir.display(),
        project = %project.name,
        auth = ?args.auth_mode,
        "agent serving"
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let shutdown = shutdown_signal(
        Arc::clone(&children),
        Duration::from_secs(args.shutdown_timeout_seconds),
    );
    // A caller that vanished without closing (a path dropped, a node gone) is found by its
    // missed pings, so its operation is interrupted instead of running on unobserved.
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            AutomationServiceServer::new(server)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(400 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        error!(error = %e, "the gRPC server failed");
    }
    // Operations end before their streams do, but be sure nothing is left mid-write.
    children.wait_idle(Duration::from_secs(30)).await;
    info!("agent stopped");
    Ok(())
}

/// Who may call: every call checked with the Kubernetes API (`kube`, whose three flags are
/// then required), or anyone (`none`, for local runs).
async fn authenticator(
    args: &ServeArgs,
    kubeconfig: Option<PathBuf>,
) -> Result<Authenticator, AgentError> {
    Ok(match args.auth_mode {
        AuthMode::None => {
            warn!("--auth-mode none: any caller can run Pulumi operations; use kube in a cluster");
            Authenticator::None
        }
        AuthMode::Kube => {
            if args.kube_audience.is_empty() {
                return Err(AgentError::KubeFlags("--kube-audience"));
            }
            let ns = args
                .kube_workspace_namespace
                .clone()
                .ok_or(AgentError::KubeFlags("--kube-workspace-namespace"))?;
            let name = args
                .kube_workspace_name
                .clone()
                .ok_or(AgentError::KubeFlags("--kube-workspace-name"))?;
            let client = kube_client(kubeconfig).await?;
            Authenticator::Kube(Box::new(KubeAuth::new(
                client,
                args.kube_audience.clone(),
                ns,
                name,
            )))
        }
    })
}

/// The listener on `--host:--port`, and that address as given.
async fn listen(args: &ServeArgs) -> Result<(String, tokio::net::TcpListener), AgentError> {
    let addr = format!("{}:{}", args.host, args.port);
    let sock: SocketAddr = tokio::net::lookup_host(&addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| AgentError::Listen {
            addr: addr.clone(),
            detail: "not an address".into(),
        })?;
    let listener = tokio::net::TcpListener::bind(sock)
        .await
        .map_err(|e| AgentError::Listen {
            addr: addr.clone(),
            detail: e.to_string(),
        })?;
    Ok((addr, listener))
}

/// How often the agent pings a caller's connection, and how long it waits for the answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

async fn kube_client(kubeconfig: Option<PathBuf>) -> Result<kube::Client, AgentError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| AgentError::Kube(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| AgentError::Kube(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| AgentError::Kube(e.to_string()))
}

/// Resolves at the first SIGTERM or SIGINT, after interrupting running operations (the server
/// then stops taking calls and waits for the running ones, whose Pulumi commands are saving
/// their state). A second signal, or `limit` passing, kills them and exits.
async fn shutdown_signal(children: Arc<Children>, limit: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: interrupting running operations, then stopping"),
        _ = int.recv() => info!("SIGINT: interrupting running operations, then stopping"),
    }
    children.interrupt_all();
    let watcher = Arc::clone(&children);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => warn!("second signal: killing running operations"),
            _ = int.recv() => warn!("second signal: killing running operations"),
            idle = watcher.wait_idle(limit) => {
                if idle { return; }
                warn!(limit_s = limit.as_secs(), "operations did not stop in time: killing them");
            }
        }
        watcher.kill_all();
        std::process::exit(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_checked_unless_the_command_line_says_otherwise() {
        let cli = Cli::try_parse_from(["agent", "serve", "--workspace", "/share/workspace"])
            .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        assert_eq!(args.auth_mode, AuthMode::Kube);
        let cli = Cli::try_parse_from(["agent", "serve", "-w", "/w", "--auth-mode", "none"])
            .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        assert_eq!(args.auth_mode, AuthMode::None);
    }
}
