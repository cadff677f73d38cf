//! `agent.AutomationService`: the operator's calls, carried out with the Pulumi CLI in the
//! workspace directory.

mod replies;
mod slot;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::plan::PlanFile;

use crate::agent::auth::Authenticator;
use crate::agent::config::{self, Host};
use crate::agent::operation::{self, Kind};
use crate::agent::process::Children;
use crate::agent::project::Project;
use crate::agent::pulumi::{self, CliError, Output, Pulumi};
use crate::agent::recovery;
use crate::proto as pb;
use crate::proto::automation_service_server::AutomationService;
use replies::{
    HistoryEntry, StackListEntry, WhoAmI, config_error, is_no_such_stack, normalize_version, now,
    operation_failed, preview_summary, timestamp, with_known_error,
};
use slot::OneAtATime;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What an operation does first about an update cut off earlier ([`recovery`]), and how it
/// tells the caller what it did.
struct Recover<T> {
    policy: pb::PendingOperationsPolicy,
    stack: String,
    wrap: fn(pb::Recovery) -> T,
}

impl<T> Recover<T> {
    /// Tells the caller what was done, before the operation runs.
    async fn report(
        &self,
        tx: &mpsc::Sender<Result<T, Status>>,
        released_locks: Vec<String>,
        pending_operations: Vec<pb::PendingOperation>,
    ) {
        let done = pb::Recovery {
            released_locks,
            pending_operations,
        };
        let _ = tx.send(Ok((self.wrap)(done))).await;
    }
}

pub struct AgentServer {
    pulumi: Pulumi,
    project: Project,
    auth: Authenticator,
    children: Arc<Children>,
    /// The stack the calls work on, set by SelectStack (or `--stack`).
    stack: Mutex<Option<String>>,
    /// The operation running, if one is: one at a time, so that a retry never runs beside an
    /// operation whose caller went away and which is still stopping, and so that a lock taken
    /// on this pod's hostname is known to be left by a process that is gone (recovery.rs).
    running: OneAtATime,
}

impl AgentServer {
    pub fn new(
        pulumi: Pulumi,
        project: Project,
        auth: Authenticator,
        children: Arc<Children>,
    ) -> AgentServer {
        AgentServer {
            pulumi,
            project,
            auth,
            children,
            stack: Mutex::new(None),
            running: OneAtATime::default(),
        }
    }

    async fn selected(&self) -> Result<String, Status> {
        self.stack
            .lock()
            .await
            .clone()
            .ok_or_else(|| Status::failed_precondition("no stack is selected"))
    }

    /// Selects `name`, creating it when asked; shared by SelectStack and `--stack`.
    pub async fn select(
        &self,
        name: &str,
        create: bool,
        secrets_provider: Option<&str>,
    ) -> Result<(), Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("invalid stack name"));
        }
        let select = args(&["stack", "select", "--stack", name]);
        match self.pulumi.run(&select).await {
            Ok(_) => {}
            Err(e) if is_no_such_stack(&e) => {
                if !create {
                    return Err(Status::not_found("stack not found"));
                }
                let mut init = args(&["stack", "init", name]);
                if let Some(sp) = secrets_provider.filter(|s| !s.is_empty()) {
                    init.push("--secrets-provider".into());
                    init.push(sp.to_string());
                }
                self.pulumi.run(&init).await.map_err(|e| {
                    Status::unknown(format!("failed to create stack {name:?}: {e}"))
                })?;
                info!(stack = name, "created the stack");
            }
            Err(e) => {
                return Err(Status::unknown(format!(
                    "failed to select stack {name:?}: {e}"
                )));
            }
        }
        *self.stack.lock().await = Some(name.to_string());
        Ok(())
    }

    async fn summary(&self) -> Result<pb::StackSummary, Status> {
        let name = self.selected().await?;
        let list: Vec<StackListEntry> = self
            .pulumi
            .run_json(&args(&["stack", "ls", "--json"]))
            .await
            .map_err(|e| Status::unknown(format!("failed to list stacks: {e}")))?;
        let entry = list
            .into_iter()
            .find(|s| s.current || s.name == name)
            .ok_or_else(|| Status::not_found("stack not found"))?;
        Ok(pb::StackSummary {
            name: entry.name,
            last_update: entry.last_update.as_deref().and_then(timestamp),
            update_in_progress: entry.update_in_progress,
            resource_count: entry.resource_count,
            url: Some(entry.url.unwrap_or_default()),
        })
    }

    fn project_info(&self) -> pb::ProjectInfo {
        pb::ProjectInfo {
            name: self.project.name.clone(),
            runtime: self.project.runtime.clone(),
        }
    }

    fn refuse_when_stopping(&self) -> Result<(), Status> {
        if self.children.is_stopping() {
            return Err(Status::unavailable("the agent is shutting down"));
        }
        Ok(())
    }

    /// `stack history` (newest entry) as the protocol's summary.
    async fn last_summary(&self, stack: &str) -> Option<pb::UpdateSummary> {
        let history: Vec<HistoryEntry> = match self
            .pulumi
            .run_json(&args(&[
                "stack",
                "history",
                "--json",
                "--page-size",
                "1",
                "--page",
                "1",
                "--stack",
                stack,
            ]))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "cannot read the stack's history for the update summary");
                return None;
            }
        };
        let h = history.into_iter().next()?;
        Some(pb::UpdateSummary {
            start_time: h.start_time.as_deref().and_then(timestamp),
            end_time: h.end_time.as_deref().and_then(timestamp),
            result: h.result.unwrap_or_default(),
            message: h.message.unwrap_or_default(),
        })
    }

    /// Both views of the outputs; an output is secret when its masked JSON shows `[secret]`.
    async fn outputs(
        &self,
        stack: &str,
    ) -> Result<std::collections::HashMap<String, pb::OutputValue>, Status> {
        let masked: serde_json::Map<String, Value> = self
            .pulumi
            .run_json(&args(&["stack", "output", "--json", "--stack", stack]))
            .await
            .map_err(|e| Status::unknown(format!("failed to read the stack outputs: {e}")))?;
        let plain: serde_json::Map<String, Value> = self
            .pulumi
            .run_json(&args(&[
                "stack",
                "output",
                "--json",
                "--show-secrets",
                "--stack",
                stack,
            ]))
            .await
            .map_err(|e| Status::unknown(format!("failed to read the stack outputs: {e}")))?;
        Ok(plain
            .into_iter()
            .map(|(k, v)| {
                let secret = masked
                    .get(&k)
                    .is_some_and(|m| m.to_string().contains("[secret]"));
                let value = serde_json::to_vec(&v).unwrap_or_default();
                (k, pb::OutputValue { value, secret })
            })
            .collect())
    }

    /// What every operation checks first: the caller, that the pod is not stopping, and the
    /// selected stack. Returns that stack and the request.
    async fn start_operation<R>(&self, request: Request<R>) -> Result<(String, R), Status> {
        self.auth.check(&request).await?;
        self.refuse_when_stopping()?;
        let stack = self.selected().await?;
        Ok((stack, request.into_inner()))
    }

    /// Runs an operation on a task and streams it: its engine events as `event(e)`, then what
    /// `finish` makes of the finished run (the result message or the failure). Refused while
    /// another runs.
    fn stream<T, F, Fut>(
        self: &Arc<Self>,
        kind: Kind,
        argv: Vec<String>,
        event: fn(prost_types::Struct) -> T,
        recover: Option<Recover<T>>,
        finish: F,
    ) -> Result<BoxStream<T>, Status>
    where
        T: Send + 'static,
        F: FnOnce(Arc<AgentServer>, Output, Vec<Value>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    {
        let slot = self.running.claim(kind)?;
        let me = Arc::clone(self);
        Ok(spawn_stream(move |tx| async move {
            let ran = match recover {
                Some(r) => me.recover_and_operate(kind, argv, &tx, event, r).await,
                None => me.operate(kind, argv, &tx, event).await,
            };
            let result = match ran {
                Ok((out, seen)) => finish(me, out, seen).await,
                Err(st) => Err(st),
            };
            drop(slot);
            let _ = tx.send(result).await;
        }))
    }

    /// `destroy --remove`: the stack goes once its resources have.
    async fn remove_stack(&self, stack: &str) -> Result<(), Status> {
        self.pulumi
            .run(&args(&["stack", "rm", "--yes", stack]))
            .await
            .map_err(|e| Status::unknown(format!("destroy failed: removing the stack: {e}")))?;
        *self.stack.lock().await = None;
        Ok(())
    }

    /// Runs an operation, forwarding engine events into `tx` as `wrap(event)`; the CLI's
    /// own failure.
    async fn operate_cli<T: Send + 'static>(
        &self,
        argv: Vec<String>,
        tx: &mpsc::Sender<Result<T, Status>>,
        wrap: fn(prost_types::Struct) -> T,
    ) -> Result<(Output, Vec<Value>), CliError> {
        let (events_tx, mut events_rx) = mpsc::channel::<Value>(256);
        let out_tx = tx.clone();
        let forward = tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = events_rx.recv() => {
                        let Some(ev) = ev else { break };
                        let Value::Object(map) = ev else { continue };
                        if out_tx.send(Ok(wrap(config::to_struct(&map)))).await.is_err() {
                            break;
                        }
                    }
                    _ = out_tx.closed() => break,
                }
            }
            // Dropping the receiver here tells the run the caller is gone.
        });
        let result = self.pulumi.run_operation(&argv, events_tx).await;
        let _ = forward.await;
        result
    }

    /// Runs an operation, forwarding engine events into `tx` as `wrap(event)`.
    async fn operate<T: Send + 'static>(
        &self,
        kind: Kind,
        argv: Vec<String>,
        tx: &mpsc::Sender<Result<T, Status>>,
        wrap: fn(prost_types::Struct) -> T,
    ) -> Result<(Output, Vec<Value>), Status> {
        self.operate_cli(argv, tx, wrap)
            .await
            .map_err(|e| self.failure(kind, &e))
    }

    fn failure(&self, kind: Kind, e: &CliError) -> Status {
        if self.children.is_stopping() {
            Status::aborted(format!(
                "{} was interrupted because the workspace pod is shutting down; Pulumi \
                 stopped it cleanly and saved the stack's state ({e})",
                kind.verb()
            ))
        } else {
            operation_failed(kind, e)
        }
    }

    /// [`Self::operate`], after dealing with what an update cut off earlier left behind
    /// ([`recovery`]): pending operations first, refused or resolved by a refresh as
    /// `r.policy` says, then the stack's lock when the operation finds one this workspace
    /// took (under either policy: that is always safe). What was done is sent to the caller
    /// before the operation runs.
    async fn recover_and_operate<T: Send + 'static>(
        &self,
        kind: Kind,
        argv: Vec<String>,
        tx: &mpsc::Sender<Result<T, Status>>,
        wrap: fn(prost_types::Struct) -> T,
        r: Recover<T>,
    ) -> Result<(Output, Vec<Value>), Status> {
        use pb::PendingOperationsPolicy as Policy;
        if r.policy == Policy::Unspecified {
            return self.operate(kind, argv, tx, wrap).await;
        }
        let export: recovery::Export = self
            .pulumi
            .run_json(&args(&["stack", "export", "--stack", &r.stack]))
            .await
            .map_err(|e| {
                Status::unknown(format!(
                    "cannot read the stack's state for pending operations: {e}"
                ))
            })?;
        let pending = export.pending();
        if !pending.is_empty() && r.policy == Policy::Fail {
            let message = recovery::refusal(&r.stack, &pending);
            warn!(stack = %r.stack, pending = %pb::describe_pending(&pending), "refusing to run over pending operations");
            return Err(pb::status_with_error_info(
                tonic::Code::FailedPrecondition,
                message.clone(),
                &pb::PulumiErrorInfo {
                    code: 409,
                    reason: "PendingOperations".into(),
                    message,
                },
            ));
        }
        if !pending.is_empty() {
            let refresh = recovery::refresh_args(&r.stack, &self.pulumi.debug_args());
            warn!(stack = %r.stack, pending = %pb::describe_pending(&pending), "an interrupted update left pending operations; refreshing to resolve them");
            let mut released_locks = Vec::new();
            let refreshed = match self.pulumi.run(&refresh).await {
                Err(e) => match self.release_own_lock(&r.stack, &e).await? {
                    Some(holders) => {
                        released_locks = holders;
                        self.pulumi.run(&refresh).await
                    }
                    None => Err(e),
                },
                done => done,
            };
            refreshed.map_err(|e| {
                with_known_error(
                    tonic::Code::Unknown,
                    format!(
                        "the refresh that resolves the pending operations of an interrupted \
                         update ({}) failed: {e}",
                        pb::describe_pending(&pending)
                    ),
                    &e,
                )
            })?;
            r.report(tx, released_locks, pending).await;
        }
        match self.operate_cli(argv.clone(), tx, wrap).await {
            Ok(done) => Ok(done),
            Err(e) => match self.release_own_lock(&r.stack, &e).await? {
                Some(released_locks) => {
                    r.report(tx, released_locks, vec![]).await;
                    self.operate(kind, argv, tx, wrap).await
                }
                None => Err(self.failure(kind, &e)),
            },
        }
    }

    /// When `e` is the failure of a stack locked only by this pod's hostname (a process of an
    /// earlier incarnation of the pod, or a CLI killed in it: the agent runs nothing else),
    /// releases the lock (`pulumi cancel`) and returns the holders released; `None` when the
    /// failure is not that.
    async fn release_own_lock(
        &self,
        stack: &str,
        e: &CliError,
    ) -> Result<Option<Vec<String>>, Status> {
        let Some(holders) = recovery::lock_holders(&e.full_text()) else {
            return Ok(None);
        };
        let Some(me) = recovery::hostname() else {
            return Ok(None);
        };
        if !recovery::all_ours(&holders, &me) {
            return Ok(None);
        }
        let described: Vec<String> = holders.into_iter().map(|h| h.described).collect();
        warn!(stack, locks = ?described, "releasing the lock an interrupted update of this workspace left");
        self.pulumi
            .run(&args(&["cancel", "--yes", "--stack", stack]))
            .await
            .map_err(|e| {
                Status::unknown(format!(
                    "cannot release the lock an interrupted update of this workspace left on \
                     the stack: {e}"
                ))
            })?;
        Ok(Some(described))
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Runs `body` on a task and streams what it sends; the final item is its result or error.
fn spawn_stream<T, F, Fut>(body: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(body(tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tonic::async_trait]
impl AutomationService for Arc<AgentServer> {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResult>, Status> {
        self.auth.check(&request).await?;
        let who: WhoAmI = self
            .pulumi
            .run_json(&args(&["whoami", "--json"]))
            .await
            .map_err(|e| {
                with_known_error(tonic::Code::Unknown, format!("whoami failed: {e}"), &e)
            })?;
        Ok(Response::new(pb::WhoAmIResult {
            user: who.user,
            organizations: who.organizations.unwrap_or_default(),
            url: who.url,
        }))
    }

    async fn select_stack(
        &self,
        request: Request<pb::SelectStackRequest>,
    ) -> Result<Response<pb::SelectStackResult>, Status> {
        self.auth.check(&request).await?;
        let r = request.into_inner();
        self.select(
            &r.stack_name,
            r.create.unwrap_or(false),
            r.secrets_provider.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::SelectStackResult {
            summary: Some(self.summary().await?),
        }))
    }

    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResult>, Status> {
        self.auth.check(&request).await?;
        Ok(Response::new(pb::InfoResult {
            summary: Some(self.summary().await?),
        }))
    }

    async fn set_all_config(
        &self,
        request: Request<pb::SetAllConfigRequest>,
    ) -> Result<Response<pb::SetAllConfigResult>, Status> {
        self.auth.check(&request).await?;
        let stack = self.selected().await?;
        let items = request.into_inner().config;
        if items.is_empty() {
            return Ok(Response::new(pb::SetAllConfigResult {}));
        }
        let source = Host {
            extra_env: self.pulumi.env(),
        };
        let tail =
            config::set_all_args(&self.project.name, &items, &source).map_err(config_error)?;
        let mut argv = args(&["config", "set-all", "--stack", &stack]);
        argv.extend(tail);
        self.pulumi
            .run(&argv)
            .await
            .map_err(|e| Status::unknown(format!("failed to set the stack configuration: {e}")))?;
        Ok(Response::new(pb::SetAllConfigResult {}))
    }

    async fn add_environments(
        &self,
        request: Request<pb::AddEnvironmentsRequest>,
    ) -> Result<Response<pb::AddEnvironmentsResult>, Status> {
        self.auth.check(&request).await?;
        let stack = self.selected().await?;
        let envs = request.into_inner().environment;
        if envs.is_empty() {
            return Ok(Response::new(pb::AddEnvironmentsResult {}));
        }
        let mut argv = args(&["config", "env", "add"]);
        argv.extend(envs);
        argv.extend(args(&["--yes", "--stack", &stack]));
        self.pulumi
            .run(&argv)
            .await
            .map_err(|e| Status::unknown(format!("failed to add environments: {e}")))?;
        Ok(Response::new(pb::AddEnvironmentsResult {}))
    }

    async fn install(
        &self,
        request: Request<pb::InstallRequest>,
    ) -> Result<Response<pb::InstallResult>, Status> {
        self.auth.check(&request).await?;
        self.pulumi
            .run(&args(&["install"]))
            .await
            .map_err(|e| Status::aborted(e.to_string()))?;
        Ok(Response::new(pb::InstallResult {}))
    }

    type PreviewStream = BoxStream<pb::PreviewStream>;

    async fn preview(
        &self,
        request: Request<pb::PreviewRequest>,
    ) -> Result<Response<Self::PreviewStream>, Status> {
        use pb::preview_stream::Response as R;
        let (stack, r) = self.start_operation(request).await?;
        let mut argv = operation::preview(&r, &stack, &self.pulumi.debug_args());
        let plan_file = match r.save_plan {
            Some(true) => {
                let f = PlanFile::for_preview().map_err(|e| Status::internal(e.to_string()))?;
                f.flag(&mut argv, "save-plan");
                Some(f)
            }
            _ => None,
        };
        let started = now();
        let event = |e| pb::PreviewStream {
            response: Some(R::Event(e)),
        };
        Ok(Response::new(self.stream(
            Kind::Preview,
            argv,
            event,
            None,
            move |me, out, seen| async move {
                let plan = plan_file
                    .map(|f| f.read())
                    .transpose()
                    .map_err(|e| Status::resource_exhausted(format!("preview failed: {e}")))?;
                Ok(pb::PreviewStream {
                    response: Some(R::Result(pb::PreviewResult {
                        summary: Some(preview_summary(started, &seen, r.message)),
                        permalink: pulumi::permalink(&out.stdout),
                        project_info: Some(me.project_info()),
                        stdout: out.stdout,
                        stderr: out.stderr,
                        plan,
                    })),
                })
            },
        )?))
    }

    type RefreshStream = BoxStream<pb::RefreshStream>;

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<Self::RefreshStream>, Status> {
        use pb::refresh_stream::Response as R;
        let (stack, r) = self.start_operation(request).await?;
        let argv = operation::refresh(&r, &stack, &self.pulumi.debug_args());
        let event = |e| pb::RefreshStream {
            response: Some(R::Event(e)),
        };
        Ok(Response::new(self.stream(
            Kind::Refresh,
            argv,
            event,
            None,
            move |me, out, _| async move {
                Ok(pb::RefreshStream {
                    response: Some(R::Result(pb::RefreshResult {
                        summary: me.last_summary(&stack).await,
                        permalink: pulumi::permalink(&out.stdout),
                        project_info: Some(me.project_info()),
                        stdout: out.stdout,
                        stderr: out.stderr,
                    })),
                })
            },
        )?))
    }

    type UpStream = BoxStream<pb::UpStream>;

    async fn up(
        &self,
        request: Request<pb::UpRequest>,
    ) -> Result<Response<Self::UpStream>, Status> {
        use pb::up_stream::Response as R;
        let (stack, r) = self.start_operation(request).await?;
        let mut argv = operation::up(&r, &stack, &self.pulumi.debug_args());
        // Held until the `up` is done with it.
        let plan_file = match r.plan.as_deref() {
            Some(plan) => {
                let f = PlanFile::holding(plan).map_err(|e| Status::internal(e.to_string()))?;
                f.flag(&mut argv, "plan");
                Some(f)
            }
            None => None,
        };
        let event = |e| pb::UpStream {
            response: Some(R::Event(e)),
        };
        let recover = Recover {
            policy: r.pending_operations(),
            stack: stack.clone(),
            wrap: |done| pb::UpStream {
                response: Some(R::Recovery(done)),
            },
        };
        Ok(Response::new(self.stream(
            Kind::Up,
            argv,
            event,
            Some(recover),
            move |me, out, _| async move {
                drop(plan_file);
                let outputs = me.outputs(&stack).await?;
                Ok(pb::UpStream {
                    response: Some(R::Result(pb::UpResult {
                        summary: me.last_summary(&stack).await,
                        permalink: pulumi::permalink(&out.stdout),
                        outputs,
                        project_info: Some(me.project_info()),
                        stdout: out.stdout,
                        stderr: out.stderr,
                    })),
                })
            },
        )?))
    }

    type DestroyStream = BoxStream<pb::DestroyStream>;

    async fn destroy(
        &self,
        request: Request<pb::DestroyRequest>,
    ) -> Result<Response<Self::DestroyStream>, Status> {
        use pb::destroy_stream::Response as R;
        let (stack, r) = self.start_operation(request).await?;
        let remove = r.remove.unwrap_or(false);
        let argv = operation::destroy(&r, &stack, &self.pulumi.debug_args());
        let event = |e| pb::DestroyStream {
            response: Some(R::Event(e)),
        };
        let recover = Recover {
            policy: r.pending_operations(),
            stack: stack.clone(),
            wrap: |done| pb::DestroyStream {
                response: Some(R::Recovery(done)),
            },
        };
        Ok(Response::new(self.stream(
            Kind::Destroy,
            argv,
            event,
            Some(recover),
            move |me, out, _| async move {
                let summary = me.last_summary(&stack).await;
                let succeeded = summary
                    .as_ref()
                    .is_none_or(|s| s.result == pb::RESULT_SUCCEEDED);
                if remove && succeeded {
                    me.remove_stack(&stack).await?;
                }
                Ok(pb::DestroyStream {
                    response: Some(R::Result(pb::DestroyResult {
                        summary,
                        permalink: pulumi::permalink(&out.stdout),
                        project_info: Some(me.project_info()),
                        stdout: out.stdout,
                        stderr: out.stderr,
                    })),
                })
            },
        )?))
    }

    async fn pulumi_version(
        &self,
        request: Request<pb::PulumiVersionRequest>,
    ) -> Result<Response<pb::PulumiVersionResult>, Status> {
        self.auth.check(&request).await?;
        let out = self
            .pulumi
            .run(&args(&["version"]))
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        Ok(Response::new(pb::PulumiVersionResult {
            version: normalize_version(&out.stdout),
        }))
    }
}
