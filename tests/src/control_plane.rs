//! A local Kubernetes control plane made of the real upstream binaries: etcd, kube-apiserver
//! (RBAC on, service-account issuer and keys, client-certificate auth), kube-controller-manager
//! (StatefulSets make pods, garbage collection, namespaces, service-account tokens) and
//! kube-scheduler. Everything runs as child processes of the test and stops on drop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{self, Scope};
use kube::{Client, Config};

use crate::pki::{Pki, PkiError};
use crate::process::{self, Process, ProcessError};
use crate::tools::{self, ToolsError};

/// The field manager the harness applies objects with.
pub const FIELD_MANAGER: &str = "e2e-harness";

/// The Services' ClusterIP range (`--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tools(#[from] ToolsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot create the control plane's directory")]
    Dir(#[source] std::io::Error),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the kubeconfig the harness wrote is invalid")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot build a client")]
    Client(#[source] kube::Error),
    #[error("{what} not ready after {secs}s{detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("{0}: invalid YAML document")]
    Yaml(String, #[source] serde_yaml::Error),
    #[error("{0}: not a valid object")]
    Json(String, #[source] serde_json::Error),
    #[error("{0}: document has no apiVersion/kind")]
    NoKind(String),
    #[error("cannot run kubectl")]
    KubectlSpawn(#[source] std::io::Error),
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{what} was refused by the apiserver")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// How to start a control plane; the default (no nodes) is what tests that run no pods use.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The address real nodes reach the apiserver at (a [`crate::node::NodeNetwork`]'s
    /// gateway): put into the serving certificate and advertised as the endpoint of the
    /// `kubernetes` Service, so that pods on those nodes reach the apiserver at its ClusterIP
    /// through kube-proxy, as in a cluster.
    pub advertise: Option<Ipv4Addr>,
    /// Write an audit log (one JSON line per request, metadata only) to
    /// [`ControlPlane::audit_log`]: who asked for what, which the apiserver's metrics do not
    /// say. The benchmarks count each operator's own requests with it.
    pub audit: bool,
}

const AUDIT_LOG: &str = "audit.log";

/// Every request at `Metadata` level, once it is answered: no bodies, so the log stays small
/// and no Secret's data is written.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
    omitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n";

/// The running control plane. Dropping it stops every process (SIGTERM, then SIGKILL) and removes
/// its directory unless `E2E_KEEP` is set.
pub struct ControlPlane {
    // Field order is drop order: the scheduler and controller-manager go before the apiserver,
    // the apiserver before etcd, the directory last.
    scheduler: Process,
    controller_manager: Process,
    apiserver: Process,
    etcd: Process,
    url: String,
    port: u16,
    kubeconfig: PathBuf,
    client: Client,
    tool_dirs: Vec<PathBuf>,
    pki: Pki,
    dir: Dir,
}

/// The control plane's working directory: removed on drop unless kept for inspection.
struct Dir {
    path: PathBuf,
    keep: bool,
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("[e2e] kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl ControlPlane {
    /// Builds the tools if needed (`tests/tools/build.sh`), then starts etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler, and waits until the apiserver is ready and
    /// the `default` namespace has its service account.
    pub async fn start() -> Result<ControlPlane, Error> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with [`Options`].
    pub async fn start_with(options: Options) -> Result<ControlPlane, Error> {
        let tool_dirs = tools::dirs(&["k8s", "etcd"])?;
        let keep = std::env::var_os("E2E_KEEP").is_some();
        let path = tempfile::Builder::new()
            .prefix("e2e-control-plane-")
            .tempdir()
            .map_err(Error::Dir)?
            .keep();
        let dir = Dir { path, keep };
        let root = dir.path.clone();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::Dir)?;
        std::fs::create_dir_all(root.join("pki")).map_err(Error::Dir)?;

        // Pods reach the apiserver at the `kubernetes` Service's ClusterIP, real nodes at the
        // advertised address: both go into the serving certificate.
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut ips = vec![loopback, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
        ips.extend(options.advertise.map(IpAddr::V4));
        let pki = Pki::create(
            &root.join("pki"),
            &ips,
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        )?;

        let etcd_client = process::free_port();
        let etcd_peer = process::free_port();
        let mut etcd_cmd = Command::new(tools::find(&tool_dirs, "etcd")?);
        etcd_cmd
            .arg(format!("--data-dir={}", root.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{etcd_peer}"
            ))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let mut etcd = Process::spawn("etcd", etcd_cmd, &logs)?;
        wait_tcp(&mut etcd, etcd_client, Duration::from_secs(30)).await?;

        // The port is free when picked, but another process may bind it before the apiserver
        // does (tests start clusters side by side): then pick another, twice at most.
        let mut attempt = 0;
        let (port, url, apiserver, kubeconfig, client) = loop {
            attempt += 1;
            let port = process::free_port();
            let url = format!("https://127.0.0.1:{port}");
            let mut api_cmd = Command::new(tools::find(&tool_dirs, "kube-apiserver")?);
            api_cmd
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
                // All addresses: loopback for the harness, a node network's gateway for nodes.
                .arg("--bind-address=0.0.0.0")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", root.join("pki").display()))
                .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
                .arg(format!(
                    "--tls-private-key-file={}",
                    pki.serving_key.display()
                ))
                .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--allow-privileged=true")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!(
                    "--service-account-key-file={}",
                    pki.sa_pub.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ))
                // Logs and exec go to a real node's kubelet at its InternalIP (its name resolves
                // nowhere), with a client certificate the kubelet checks against the CA.
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    pki.kubelet_client_cert.display()
                ))
                .arg(format!(
                    "--kubelet-client-key={}",
                    pki.kubelet_client_key.display()
                ))
                .arg("--v=1");
            if options.audit {
                let policy = root.join("audit-policy.yaml");
                std::fs::write(&policy, AUDIT_POLICY).map_err(Error::Dir)?;
                api_cmd
                    .arg(format!("--audit-policy-file={}", policy.display()))
                    .arg(format!(
                        "--audit-log-path={}",
                        root.join(AUDIT_LOG).display()
                    ))
                    .arg("--audit-log-format=json")
                    .arg("--audit-log-mode=blocking")
                    .arg("--audit-log-maxsize=0");
            }
            match options.advertise {
                Some(ip) => {
                    api_cmd.arg(format!("--advertise-address={ip}"));
                }
                None => {
                    // No nodes: nothing reaches the advertise address, but it must not be
                    // loopback (the `kubernetes` Endpoints would fail validation).
                    api_cmd.arg("--endpoint-reconciler-type=none");
                }
            }
            let mut apiserver = Process::spawn("kube-apiserver", api_cmd, &logs)?;
            let kubeconfig = root.join("kubeconfig");
            write_kubeconfig(&kubeconfig, &url, &pki)?;
            let client = client_from(&kubeconfig).await?;
            match wait_ready(&mut apiserver, &client, Duration::from_secs(90)).await {
                Ok(()) => break (port, url, apiserver, kubeconfig, client),
                Err(_)
                    if attempt < 3
                        && process::tail(apiserver.log_path(), 5)
                            .contains("address already in use") => {}
                Err(e) => return Err(e),
            }
        };

        let mut kcm_cmd = Command::new(tools::find(&tool_dirs, "kube-controller-manager")?);
        kcm_cmd
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            .arg("--use-service-account-credentials=true")
            .arg("--secure-port=0")
            .arg("--v=1");
        let controller_manager = Process::spawn("kube-controller-manager", kcm_cmd, &logs)?;

        let sched_config = root.join("scheduler.yaml");
        let sched_yaml = format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection:\n  kubeconfig: {}\nleaderElection:\n  leaderElect: false\n",
            kubeconfig.display()
        );
        std::fs::write(&sched_config, sched_yaml)
            .map_err(|e| Error::Write(sched_config.clone(), e))?;
        let mut sched_cmd = Command::new(tools::find(&tool_dirs, "kube-scheduler")?);
        sched_cmd
            .arg(format!("--config={}", sched_config.display()))
            .arg("--secure-port=0")
            .arg("--v=1");
        let scheduler = Process::spawn("kube-scheduler", sched_cmd, &logs)?;

        let cp = ControlPlane {
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            url,
            port,
            kubeconfig,
            client,
            tool_dirs,
            pki,
            dir,
        };
        // The controller-manager creates each namespace's `default` service account; pods
        // cannot be created before it exists.
        cp.wait_service_account("default", "default").await?;
        Ok(cp)
    }

    /// A client for this control plane, authenticated as a cluster admin. Create one per
    /// tokio runtime: a client's connections belong to the runtime that made them.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new client from the kubeconfig, for use on another runtime.
    pub async fn new_client(&self) -> Result<Client, Error> {
        client_from(&self.kubeconfig).await
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's audit log, written when started with [`Options::audit`].
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path.join(AUDIT_LOG)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The apiserver's URL at another of its addresses (it listens on all), e.g. a node
    /// network's gateway.
    pub fn url_at(&self, ip: Ipv4Addr) -> String {
        format!("https://{ip}:{}", self.port)
    }

    /// The PKI: the CA, and client certificates for real nodes' components.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Where the upstream binaries are (for `kubectl` and friends).
    pub fn tool_dirs(&self) -> &[PathBuf] {
        &self.tool_dirs
    }

    /// The path of a built upstream tool, e.g. `kubectl`.
    pub fn tool(&self, name: &str) -> Result<PathBuf, Error> {
        Ok(tools::find(&self.tool_dirs, name)?)
    }

    /// Runs `kubectl` as the cluster admin; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        let out = Command::new(self.tool("kubectl")?)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .map_err(Error::KubectlSpawn)?;
        if !out.status.success() {
            return Err(Error::Kubectl {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Each control-plane process with its pid (for benchmarks that read `/proc`).
    pub fn pids(&self) -> [(&'static str, u32); 4] {
        [
            ("kube-apiserver", self.apiserver.pid()),
            ("etcd", self.etcd.pid()),
            ("kube-controller-manager", self.controller_manager.pid()),
            ("kube-scheduler", self.scheduler.pid()),
        ]
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 5 s): an outage for fault tests. Etcd,
    /// the controller-manager and the scheduler go on; clients see refused connections.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop(Duration::from_secs(5));
    }

    /// Starts kube-apiserver again as it first ran (same port, certificates and etcd), and
    /// waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<(), Error> {
        self.apiserver.restart()?;
        wait_ready(&mut self.apiserver, &self.client, Duration::from_secs(90)).await
    }

    /// Fails with the end of its log if any control-plane process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        self.etcd.check_running()?;
        self.apiserver.check_running()?;
        self.controller_manager.check_running()?;
        self.scheduler.check_running()?;
        Ok(())
    }

    /// Creates a namespace and waits for its `default` service account.
    pub async fn create_namespace(&self, name: &str) -> Result<(), Error> {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .map_err(|e| Error::Json(name.into(), e))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| Error::Api {
                what: format!("namespace {name}"),
                source,
            })?;
        self.wait_service_account(name, "default").await
    }

    async fn wait_service_account(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let secs = 60;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = api.get_opt(name).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::Timeout {
            what: format!("service account {namespace}/{name}"),
            secs,
            detail: format!(
                "; kube-controller-manager log:\n{}",
                process::tail(self.controller_manager.log_path(), 30)
            ),
        })
    }

    /// Installs CustomResourceDefinitions from YAML files and waits until each is Established.
    pub async fn install_crds(&self, files: &[PathBuf]) -> Result<Vec<String>, Error> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let mut names = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| Error::Read(file.clone(), e))?;
            for doc in documents(&text, &file.display().to_string())? {
                let crd: CustomResourceDefinition = serde_json::from_value(doc)
                    .map_err(|e| Error::Json(file.display().to_string(), e))?;
                let name = crd.metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER)
                        .force()
                        .validation_strict(),
                    &Patch::Apply(&crd),
                )
                .await
                .map_err(|source| Error::Api {
                    what: format!("CRD {name} from {}", file.display()),
                    source,
                })?;
                names.push(name);
            }
        }
        let secs = 30;
        let deadline = Instant::now() + Duration::from_secs(secs);
        for name in &names {
            loop {
                let established = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("CRD {name} Established"),
                        secs,
                        detail: String::new(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(names)
    }

    /// Installs this project's CRDs (`config/crd/bases`).
    pub async fn install_project_crds(&self) -> Result<Vec<String>, Error> {
        self.install_crds(&yaml_files(&repo_root().join("config/crd/bases"))?)
            .await
    }

    /// Installs Flux's source-controller CRDs, read from the source-controller module.
    pub async fn install_flux_crds(&self) -> Result<Vec<String>, Error> {
        let dirs = tools::dirs(&["flux"])?;
        let crds = dirs
            .iter()
            .map(|d| d.join("crds"))
            .find(|d| d.is_dir())
            .ok_or_else(|| ToolsError::Missing("flux CRDs".into(), format!("{dirs:?}")))?;
        self.install_crds(&yaml_files(&crds)?).await
    }

    /// Applies every document of a YAML stream with server-side apply and strict field
    /// validation (unknown or duplicate fields are errors, as with `kubectl apply
    /// --server-side --validate=strict`). Namespaced objects without a namespace go to
    /// `default_namespace`.
    pub async fn apply_yaml(
        &self,
        yaml: &str,
        origin: &str,
        default_namespace: &str,
    ) -> Result<Vec<DynamicObject>, Error> {
        let mut applied = Vec::new();
        for doc in documents(yaml, origin)? {
            let obj: DynamicObject =
                serde_json::from_value(doc).map_err(|e| Error::Json(origin.into(), e))?;
            let types = obj
                .types
                .clone()
                .ok_or_else(|| Error::NoKind(origin.into()))?;
            let gvk =
                GroupVersionKind::try_from(&types).map_err(|_| Error::NoKind(origin.into()))?;
            let name = obj.metadata.name.clone().unwrap_or_default();
            let what = format!("{} {name} from {origin}", types.kind);
            let (resource, caps) =
                discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|source| Error::Api {
                        what: what.clone(),
                        source,
                    })?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Cluster => Api::all_with(self.client.clone(), &resource),
                Scope::Namespaced => Api::namespaced_with(
                    self.client.clone(),
                    obj.metadata
                        .namespace
                        .as_deref()
                        .unwrap_or(default_namespace),
                    &resource,
                ),
            };
            let out = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER)
                        .force()
                        .validation_strict(),
                    &Patch::Apply(&obj),
                )
                .await
                .map_err(|source| Error::Api { what, source })?;
            applied.push(out);
        }
        Ok(applied)
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `*.yaml` files directly in `dir`, sorted, without `kustomization.yaml`.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Read(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The non-empty documents of a YAML stream, as JSON values.
pub fn documents(text: &str, origin: &str) -> Result<Vec<serde_json::Value>, Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| Error::Yaml(origin.into(), e))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn write_kubeconfig(path: &Path, url: &str, pki: &Pki) -> Result<(), Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut doc = BTreeMap::new();
    doc.insert("apiVersion", serde_json::json!("v1"));
    doc.insert("kind", serde_json::json!("Config"));
    doc.insert(
        "clusters",
        serde_json::json!([{"name": "e2e", "cluster": {
            "server": url, "certificate-authority-data": b64(&pki.ca_pem)}}]),
    );
    doc.insert(
        "users",
        serde_json::json!([{"name": "e2e-admin", "user": {
            "client-certificate-data": b64(&pki.admin_cert_pem),
            "client-key-data": b64(&pki.admin_key_pem)}}]),
    );
    doc.insert(
        "contexts",
        serde_json::json!([{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-admin"}}]),
    );
    doc.insert("current-context", serde_json::json!("e2e"));
    let text = serde_yaml::to_string(&doc).map_err(|e| Error::Yaml("kubeconfig".into(), e))?;
    std::fs::write(path, text).map_err(|e| Error::Write(path.to_path_buf(), e))
}

/// A client from a kubeconfig file (e.g. the operator's, to act with its RBAC).
pub async fn client_from(kubeconfig: &Path) -> Result<Client, Error> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| Error::Read(kubeconfig.to_path_buf(), e))?;
    let kc = Kubeconfig::from_yaml(&text).map_err(Error::Kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(Error::Kubeconfig)?;
    Client::try_from(config).map_err(Error::Client)
}

async fn wait_tcp(proc: &mut Process, port: u16, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        proc.check_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Timeout {
        what: format!("port {port}"),
        secs: limit.as_secs(),
        detail: format!("; log:\n{}", process::tail(proc.log_path(), 30)),
    })
}

async fn wait_ready(
    apiserver: &mut Process,
    client: &Client,
    limit: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        apiserver.check_running()?;
        let req = http::Request::get("/readyz").body(Vec::new());
        if let Ok(req) = req {
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Timeout {
        what: "kube-apiserver /readyz".into(),
        secs: limit.as_secs(),
        detail: format!(
            " (last answer: {last}); log:\n{}",
            process::tail(apiserver.log_path(), 30)
        ),
    })
}
