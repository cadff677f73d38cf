//! One pod's life on the test kubelet: network namespace, volumes, init containers in order,
//! then the containers together, with restarts per `restartPolicy`, real status reporting and
//! graceful termination on delete.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::env::{self, NodeFacts};
use super::{NODE_CPU_MILLIS, NODE_MEMORY, State, now, volumes};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The kubelet caps termination messages at 4 KiB.
const MAX_TERMINATION_MESSAGE: usize = 4096;

pub(super) fn log_path(dir: &Path, uid: &str, container: &str) -> PathBuf {
    dir.join("pods")
        .join(uid)
        .join("logs")
        .join(format!("{container}.log"))
}

pub(super) struct PodRun {
    pub state: Arc<State>,
    pub pod: Pod,
    pub stop: watch::Receiver<Option<i64>>,
    pub groups: Arc<Mutex<Vec<i32>>>,
    pub netns: String,
    pub ip: Arc<Mutex<Option<Ipv4Addr>>>,
}

#[derive(Clone, Debug)]
enum CState {
    Waiting(String, Option<String>),
    Running(Value),
    Terminated {
        exit: i32,
        reason: String,
        message: Option<String>,
        started: Value,
        finished: Value,
    },
}

impl CState {
    fn json(&self) -> Value {
        match self {
            CState::Waiting(reason, message) => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            CState::Running(t) => json!({"running": {"startedAt": t}}),
            CState::Terminated {
                exit,
                reason,
                message,
                started,
                finished,
            } => json!({"terminated": {"exitCode": exit, "reason": reason, "message": message,
                                        "startedAt": started, "finishedAt": finished}}),
        }
    }
}

#[derive(Clone, Debug)]
struct CStatus {
    name: String,
    image: String,
    restarts: i32,
    state: CState,
    last: Option<CState>,
}

impl CStatus {
    fn new(c: &Container, reason: &str) -> CStatus {
        CStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            restarts: 0,
            state: CState::Waiting(reason.into(), None),
            last: None,
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, CState::Running(_))
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": "",
            "ready": self.running(), "started": self.running(), "restartCount": self.restarts,
            "state": self.state.json(),
        });
        if let Some(last) = &self.last {
            v["lastState"] = last.json();
        }
        v
    }
}

struct Model {
    phase: &'static str,
    reason: Option<String>,
    message: Option<String>,
    pod_ip: Option<String>,
    host_ip: String,
    start: Value,
    initialized: bool,
    init: Vec<CStatus>,
    main: Vec<CStatus>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Init,
    Main,
}

/// How a container's run loop ended.
enum End {
    Succeeded,
    Failed,
    Stopped,
}

struct Ctx {
    state: Arc<State>,
    pod: Pod,
    model: Mutex<Model>,
    publish_lock: tokio::sync::Mutex<()>,
    groups: Arc<Mutex<Vec<i32>>>,
    netns: String,
    pod_dir: PathBuf,
    volumes: Mutex<HashMap<String, PathBuf>>,
    node: Mutex<NodeFacts>,
}

impl PodRun {
    pub async fn run(mut self) {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let pod_dir = self.state.dir.join("pods").join(&uid);
        let ctx = Arc::new(Ctx {
            state: self.state.clone(),
            pod: self.pod.clone(),
            model: Mutex::new(Model {
                phase: "Pending",
                reason: None,
                message: None,
                pod_ip: None,
                host_ip: self.state.apiserver.0.clone(),
                start: json!(now()),
                initialized: spec.init_containers.as_ref().is_none_or(|v| v.is_empty()),
                init: spec
                    .init_containers
                    .iter()
                    .flatten()
                    .map(|c| CStatus::new(c, "PodInitializing"))
                    .collect(),
                main: spec
                    .containers
                    .iter()
                    .map(|c| CStatus::new(c, "PodInitializing"))
                    .collect(),
            }),
            publish_lock: tokio::sync::Mutex::new(()),
            groups: self.groups.clone(),
            netns: self.netns.clone(),
            pod_dir: pod_dir.clone(),
            volumes: Mutex::new(HashMap::new()),
            node: Mutex::new(NodeFacts {
                host_ip: self.state.apiserver.0.clone(),
                pod_ip: String::new(),
                allocatable_cpu_millis: NODE_CPU_MILLIS,
                allocatable_memory: NODE_MEMORY,
            }),
        });

        let outcome = ctx.clone().lifecycle(&mut self.stop, &self.ip).await;

        // Tear down the sandbox: processes are gone, the network namespace goes too.
        if let Some(ip) = self.ip.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.state.network.detach(&self.netns, ip);
        }
        self.state
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone());
        self.state
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        if matches!(outcome, End::Stopped) {
            finalize_delete(self.state.client.clone(), self.pod.clone()).await;
        }
    }
}

impl Ctx {
    async fn lifecycle(
        self: Arc<Self>,
        stop: &mut watch::Receiver<Option<i64>>,
        ip_slot: &Arc<Mutex<Option<Ipv4Addr>>>,
    ) -> End {
        let dirs = ["logs", "term", "volumes"].map(|d| self.pod_dir.join(d));
        for d in &dirs {
            if let Err(e) = std::fs::create_dir_all(d) {
                return self
                    .fail(
                        "KubeletError",
                        &format!("cannot create {}: {e}", d.display()),
                    )
                    .await;
            }
        }
        let network = self.state.network.clone();
        let netns = self.netns.clone();
        match tokio::task::spawn_blocking(move || network.attach(&netns)).await {
            Ok(Ok(ip)) => {
                *ip_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
                self.model.lock().unwrap_or_else(|e| e.into_inner()).pod_ip = Some(ip.to_string());
                self.node.lock().unwrap_or_else(|e| e.into_inner()).pod_ip = ip.to_string();
            }
            Ok(Err(e)) => return self.fail("NetworkError", &e.to_string()).await,
            Err(e) => return self.fail("NetworkError", &e.to_string()).await,
        }
        self.publish().await;

        // Volumes: missing Secrets/ConfigMaps keep the pod in ContainerCreating until they appear.
        loop {
            if stop.borrow().is_some() {
                return End::Stopped;
            }
            let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match volumes::prepare(
                &self.state.client,
                &self.pod,
                &self.pod_dir.join("volumes"),
                &node,
            )
            .await
            {
                Ok(v) => {
                    *self.volumes.lock().unwrap_or_else(|e| e.into_inner()) = v;
                    break;
                }
                Err(e) if e.retryable() => {
                    self.set_all_waiting("ContainerCreating", Some(e.to_string()));
                    self.publish().await;
                    if wait_or_stop(stop, Duration::from_secs(2)).await {
                        return End::Stopped;
                    }
                }
                Err(e) => return self.fail("UnsupportedVolume", &e.to_string()).await,
            }
        }

        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            match self
                .clone()
                .container_loop(Kind::Init, i, c.clone(), &policy, stop.clone())
                .await
            {
                End::Succeeded => {}
                End::Failed => {
                    let name = &c.name;
                    return self
                        .fail("Failed", &format!("init container {name} failed"))
                        .await;
                }
                End::Stopped => return End::Stopped,
            }
        }
        {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            m.initialized = true;
            m.phase = "Running";
        }
        self.publish().await;

        let runs = spec.containers.iter().enumerate().map(|(i, c)| {
            self.clone()
                .container_loop(Kind::Main, i, c.clone(), &policy, stop.clone())
        });
        let ends = futures::future::join_all(runs).await;
        if ends.iter().any(|e| matches!(e, End::Stopped)) {
            return End::Stopped;
        }
        let failed = ends.iter().any(|e| matches!(e, End::Failed));
        self.model.lock().unwrap_or_else(|e| e.into_inner()).phase =
            if failed { "Failed" } else { "Succeeded" };
        self.publish().await;
        if failed { End::Failed } else { End::Succeeded }
    }

    async fn fail(&self, reason: &str, message: &str) -> End {
        {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            m.phase = "Failed";
            m.reason = Some(reason.into());
            m.message = Some(message.into());
        }
        self.publish().await;
        End::Failed
    }

    fn set_all_waiting(&self, reason: &str, message: Option<String>) {
        let mut guard = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let m = &mut *guard;
        for c in m.init.iter_mut().chain(m.main.iter_mut()) {
            if matches!(c.state, CState::Waiting(..)) {
                c.state = CState::Waiting(reason.into(), message.clone());
            }
        }
    }

    fn update(&self, kind: Kind, i: usize, f: impl FnOnce(&mut CStatus)) {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let list = match kind {
            Kind::Init => &mut m.init,
            Kind::Main => &mut m.main,
        };
        if let Some(c) = list.get_mut(i) {
            f(c);
        }
    }

    /// Runs one container until it is done per the restart policy, or the pod stops.
    async fn container_loop(
        self: Arc<Self>,
        kind: Kind,
        i: usize,
        c: Container,
        policy: &str,
        mut stop: watch::Receiver<Option<i64>>,
    ) -> End {
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.borrow().is_some() {
                return End::Stopped;
            }
            let prepared = self.prepare(&c).await;
            let (argv, envs, binds, workdir) = match prepared {
                Ok(p) => p,
                Err((reason, message)) => {
                    self.update(kind, i, |s| {
                        s.state = CState::Waiting(reason, Some(message))
                    });
                    self.publish().await;
                    if wait_or_stop(&mut stop, Duration::from_secs(2)).await {
                        return End::Stopped;
                    }
                    continue;
                }
            };
            let term = self.pod_dir.join("term").join(&c.name);
            let log = log_path(
                &self.state.dir,
                self.pod.metadata.uid.as_deref().unwrap_or(""),
                &c.name,
            );
            let started = json!(now());
            let spawned = self.spawn(&c, &argv, &envs, &binds, &workdir, &term, &log);
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    self.update(kind, i, |s| {
                        s.state = CState::Terminated {
                            exit: 128,
                            reason: "StartError".into(),
                            message: Some(e.to_string()),
                            started: started.clone(),
                            finished: json!(now()),
                        }
                    });
                    self.publish().await;
                    return End::Failed;
                }
            };
            let pgid = child.id().map(|p| p as i32).unwrap_or(0);
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pgid);
            self.update(kind, i, |s| s.state = CState::Running(started.clone()));
            self.publish().await;

            let exited = tokio::select! {
                s = child.wait() => Some(s),
                r = stop.wait_for(|v| v.is_some()) => { drop(r); None }
            };
            let (status, stopped) = match exited {
                Some(s) => (s, false),
                None => {
                    let grace = (*stop.borrow()).unwrap_or(0);
                    terminate(pgid, &mut child, grace).await;
                    (child.wait().await, true)
                }
            };
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|g| *g != pgid);
            let code = match &status {
                Ok(s) => s.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + s.signal().unwrap_or(9)
                }),
                Err(_) => 128,
            };
            let message = termination_message(&c, &term, &log, code);
            let reason = if code == 0 { "Completed" } else { "Error" };
            self.update(kind, i, |s| {
                s.state = CState::Terminated {
                    exit: code,
                    reason: reason.into(),
                    message,
                    started: started.clone(),
                    finished: json!(now()),
                }
            });
            self.publish().await;
            if stopped {
                return End::Stopped;
            }
            let restart = match (kind, policy) {
                (Kind::Init, "Never") => false,
                (Kind::Init, _) => code != 0,
                (Kind::Main, "Always") => true,
                (Kind::Main, "OnFailure") => code != 0,
                _ => false,
            };
            if !restart {
                return if code == 0 {
                    End::Succeeded
                } else {
                    End::Failed
                };
            }
            self.update(kind, i, |s| {
                s.restarts += 1;
                s.last = Some(s.state.clone());
                if code != 0 {
                    s.state = CState::Waiting(
                        "CrashLoopBackOff".into(),
                        Some(format!(
                            "back-off {}s restarting failed container={}",
                            backoff.as_secs(),
                            s.name
                        )),
                    );
                }
            });
            self.publish().await;
            if wait_or_stop(&mut stop, backoff).await {
                return End::Stopped;
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// argv, env, bind mounts and working directory, or a waiting (reason, message).
    #[allow(clippy::type_complexity)]
    async fn prepare(
        &self,
        c: &Container,
    ) -> Result<
        (
            Vec<String>,
            Vec<(String, String)>,
            Vec<(PathBuf, String, bool)>,
            String,
        ),
        (String, String),
    > {
        let image_ref = c.image.clone().unwrap_or_default();
        let Some(image) = self.state.images.get(&image_ref).cloned() else {
            return Err((
                "ErrImagePull".into(),
                format!("image \"{image_ref}\" is not in the test kubelet's image table"),
            ));
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        let uid = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user))
            .or(image.user)
            .unwrap_or(0);
        let gid = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_group)
            .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_group))
            .unwrap_or(uid);
        let non_root = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root)
            .or_else(|| {
                spec.security_context
                    .as_ref()
                    .and_then(|s| s.run_as_non_root)
            })
            .unwrap_or(false);
        if non_root && uid == 0 {
            return Err((
                "CreateContainerConfigError".into(),
                "container has runAsNonRoot and image will run as root".into(),
            ));
        }

        let mut path = image.path.clone();
        path.push(DEFAULT_PATH.into());
        let (host, port) = &self.state.apiserver;
        let mut base: Vec<(String, String)> = vec![
            ("PATH".into(), path.join(":")),
            (
                "HOSTNAME".into(),
                self.pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "HOME".into(),
                if uid == 0 { "/root".into() } else { "/".into() },
            ),
            ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
        ];
        for (k, v) in &image.env {
            base.retain(|(n, _)| n != k);
            base.push((k.clone(), v.clone()));
        }
        let sources = volumes::env_sources(&self.state.client, &self.pod).await;
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let envs = env::container_env(&self.pod, c, &sources, &node, &base)
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))?;

        let lookup = |n: &str| {
            envs.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let (command, args) = match (&c.command, &c.args) {
            (Some(cmd), args) => (cmd.clone(), args.clone().unwrap_or_default()),
            (None, Some(args)) => (image.entrypoint.clone(), args.clone()),
            (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
        };
        let mut argv: Vec<String> = command
            .iter()
            .chain(args.iter())
            .map(|a| env::expand(a, &lookup))
            .collect();
        if argv.is_empty() {
            return Err(("CreateContainerError".into(), "no command specified".into()));
        }
        if uid != 0 || gid != 0 {
            let mut wrapped = vec![
                "/usr/bin/setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ];
            wrapped.append(&mut argv);
            argv = wrapped;
        }

        let mut binds: Vec<(PathBuf, String, bool)> = image
            .binds
            .iter()
            .map(|(h, at)| (h.clone(), at.clone(), true))
            .chain(
                image
                    .rw_binds
                    .iter()
                    .map(|(h, at)| (h.clone(), at.clone(), false)),
            )
            .collect();
        let vols = self
            .volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for m in c.volume_mounts.iter().flatten() {
            let Some(dir) = vols.get(&m.name) else {
                return Err((
                    "CreateContainerConfigError".into(),
                    format!("volume {} of mount {} is not defined", m.name, m.mount_path),
                ));
            };
            let mut host = dir.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
                let _ = std::fs::create_dir_all(&host);
            }
            binds.push((host, m.mount_path.clone(), m.read_only.unwrap_or(false)));
        }
        let workdir = c
            .working_dir
            .clone()
            .or(image.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        Ok((argv, envs, binds, workdir))
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        c: &Container,
        argv: &[String],
        envs: &[(String, String)],
        binds: &[(PathBuf, String, bool)],
        workdir: &str,
        term: &Path,
        log: &Path,
    ) -> std::io::Result<tokio::process::Child> {
        std::fs::write(term, b"")?;
        std::fs::set_permissions(term, std::fs::Permissions::from_mode(0o666))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let hostname: String = self
            .pod
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(63)
            .collect();
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "bwrap"])
            .args([
                "--die-with-parent",
                "--as-pid-1",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
            ])
            .args(["--hostname", &hostname])
            .args(["--tmpfs", "/"])
            .args(["--ro-bind", "/usr", "/usr"])
            .args([
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
            ])
            .args([
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/sbin",
                "/sbin",
            ])
            .args(["--ro-bind", "/etc", "/etc"])
            .args(["--dev", "/dev", "--proc", "/proc"])
            .args(["--perms", "1777", "--tmpfs", "/tmp"]);
        // bubblewrap makes missing mount-point parents 0700; a non-root container must be able
        // to walk to its mounts (/var/run/secrets/...), as in a real image.
        let mut parents: Vec<String> = Vec::new();
        for (_, at, _) in binds {
            let mut p = std::path::Path::new(at.as_str()).parent();
            while let Some(dir) = p.filter(|d| d.components().count() > 1) {
                let d = dir.display().to_string();
                if !parents.contains(&d) {
                    parents.push(d);
                }
                p = dir.parent();
            }
        }
        parents.sort_by_key(|d| d.matches('/').count());
        for d in parents.iter().filter(|d| {
            ![
                "/usr", "/etc", "/dev", "/proc", "/tmp", "/bin", "/sbin", "/lib", "/lib64",
            ]
            .iter()
            .any(|sys| d.as_str() == *sys || d.starts_with(&format!("{sys}/")))
        }) {
            cmd.args(["--perms", "0755", "--dir", d]);
        }
        for (host, at, ro) in binds {
            let flag = if *ro { "--ro-bind" } else { "--bind" };
            cmd.arg(flag).arg(host).arg(at);
        }
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        cmd.arg("--bind").arg(term).arg(&term_path);
        cmd.args(["--dir", workdir, "--chdir", workdir, "--"])
            .args(argv);
        cmd.env_clear()
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Patches the pod's status from the model (serialised, so the last write wins in order).
    async fn publish(&self) {
        let _guard = self.publish_lock.lock().await;
        let body = {
            let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            let t = json!(now());
            let all_running = !m.main.is_empty() && m.main.iter().all(CStatus::running);
            let cond = |type_: &str, ok: bool| json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastTransitionTime": t});
            let mut status = json!({
                "phase": m.phase,
                "hostIP": m.host_ip, "hostIPs": [{"ip": m.host_ip}],
                "startTime": m.start,
                "conditions": [
                    cond("PodReadyToStartContainers", m.pod_ip.is_some()),
                    cond("Initialized", m.initialized),
                    cond("Ready", all_running),
                    cond("ContainersReady", all_running),
                    cond("PodScheduled", true),
                ],
                "initContainerStatuses": m.init.iter().map(CStatus::json).collect::<Vec<_>>(),
                "containerStatuses": m.main.iter().map(CStatus::json).collect::<Vec<_>>(),
                "reason": m.reason, "message": m.message,
            });
            if let Some(ip) = &m.pod_ip {
                status["podIP"] = json!(ip);
                status["podIPs"] = json!([{"ip": ip}]);
            }
            json!({"status": status})
        };
        let api = Api::<Pod>::namespaced(
            self.state.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await;
    }
}

/// Sleeps for `d`; true if the pod was told to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<Option<i64>>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|v| v.is_some()) => true,
    }
}

/// SIGTERM to the container's main process (PID 1 in its PID namespace, as a container
/// runtime does), `grace` seconds, then SIGKILL to the whole process group.
async fn terminate(pgid: i32, child: &mut tokio::process::Child, grace: i64) {
    let main = child.id().and_then(|bwrap| main_process(bwrap as i32));
    match main {
        // SAFETY: signalling a process this kubelet started.
        Some(pid) => unsafe {
            libc::kill(pid, libc::SIGTERM);
        },
        // SAFETY: signalling a process group this kubelet created.
        None if pgid > 0 => unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        },
        None => {}
    }
    let grace = Duration::from_secs(grace.max(0) as u64);
    if tokio::time::timeout(grace, child.wait()).await.is_err() && pgid > 0 {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// The container's main process: bubblewrap's child (with `--as-pid-1`, the command itself).
fn main_process(bwrap: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: i32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == bwrap).then_some(pid)
    })
}

/// The file at terminationMessagePath, or with FallbackToLogsOnError and a failure, the end of
/// the log; at most 4 KiB.
fn termination_message(c: &Container, term: &Path, log: &Path, code: i32) -> Option<String> {
    let mut text = std::fs::read(term).unwrap_or_default();
    if text.is_empty()
        && code != 0
        && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let log = std::fs::read(log).unwrap_or_default();
        let lines: Vec<&[u8]> = log.split(|b| *b == b'\n').collect();
        let start = lines.len().saturating_sub(81);
        text = lines[start..].join(&b'\n');
        if text.len() > 2048 {
            text = text[text.len() - 2048..].to_vec();
        }
    }
    text.truncate(MAX_TERMINATION_MESSAGE);
    if text.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(&text).into_owned())
    }
}

/// The kubelet's final delete: grace period 0, for this pod's UID only.
pub(super) async fn finalize_delete(client: Client, pod: Pod) {
    let api = Api::<Pod>::namespaced(
        client,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await;
}
