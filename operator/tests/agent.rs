//! The agent's RPCs against the real Pulumi CLI, a YAML program and a `file://` backend.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use operator::agent::config::from_json;
use operator::proto::{self as pb, config_item, config_value_from};
use serde_json::{Value, json};
use support::{Agent, Options};

const PROGRAM: &str = "name: agent-test
runtime: yaml
config:
  greeting:
    type: string
  token:
    type: string
    secret: true
  region:
    type: string
  motd:
    type: string
  tags:
    type: object
outputs:
  greeting: ${greeting}
  token: ${token}
  region: ${region}
  motd: ${motd}
  owner: ${tags.owner}
  size: ${tags.size}
";

fn literal(key: &str, v: Value, secret: bool) -> pb::ConfigItem {
    pb::ConfigItem {
        key: key.into(),
        path: None,
        v: Some(config_item::V::Value(from_json(&v))),
        secret: Some(secret),
    }
}

fn from(key: &str, f: config_value_from::F) -> pb::ConfigItem {
    pb::ConfigItem {
        key: key.into(),
        path: None,
        v: Some(config_item::V::ValueFrom(pb::ConfigValueFrom {
            f: Some(f),
            json: None,
        })),
        secret: None,
    }
}

type Client =
    operator::proto::automation_service_client::AutomationServiceClient<tonic::transport::Channel>;

/// Creates stack `dev` and selects it.
async fn create_dev(c: &mut Client) {
    c.select_stack(pb::SelectStackRequest {
        stack_name: "dev".into(),
        create: Some(true),
        secrets_provider: None,
    })
    .await
    .expect("stack");
}

async fn up(
    client: &mut Client,
    req: pb::UpRequest,
) -> (usize, Result<pb::UpResult, tonic::Status>) {
    let mut stream = match client.up(req).await {
        Ok(s) => s.into_inner(),
        Err(st) => return (0, Err(st)),
    };
    let mut events = 0;
    loop {
        match stream.message().await {
            Ok(Some(pb::UpStream {
                response: Some(pb::up_stream::Response::Event(_)),
            })) => events += 1,
            Ok(Some(pb::UpStream {
                response: Some(pb::up_stream::Response::Result(r)),
            })) => return (events, Ok(r)),
            Ok(Some(_)) => {}
            Ok(None) => {
                return (
                    events,
                    Err(tonic::Status::unknown("stream ended without a result")),
                );
            }
            Err(st) => return (events, Err(st)),
        }
    }
}

/// Reads an operation's stream to its end: the last message `result` picks, if any.
async fn last_result<M, R>(
    mut stream: tonic::Streaming<M>,
    what: &str,
    result: impl Fn(M) -> Option<R>,
) -> Option<R> {
    let mut last = None;
    while let Some(m) = stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("{what} stream: {e}"))
    {
        if let Some(r) = result(m) {
            last = Some(r);
        }
    }
    last
}

fn output(r: &pb::UpResult, name: &str) -> (Value, bool) {
    let o = r
        .outputs
        .get(name)
        .unwrap_or_else(|| panic!("output {name} in {:?}", r.outputs.keys()));
    (
        serde_json::from_slice(&o.value).expect("JSON output"),
        o.secret,
    )
}

#[tokio::test]
async fn a_stack_is_created_configured_updated_previewed_refreshed_and_destroyed() {
    let agent = Agent::start(Options {
        program: PROGRAM,
        env: &[("AGENT_TEST_REGION", "eu-west-1")],
        ..Default::default()
    });
    std::fs::write(agent.dir.path().join("motd"), "hello from a file").expect("motd");
    let mut c = agent.client().await;

    let v = c
        .pulumi_version(pb::PulumiVersionRequest {})
        .await
        .expect("version")
        .into_inner();
    assert_eq!(v.version, "3.259.0");

    let missing = c
        .select_stack(pb::SelectStackRequest {
            stack_name: "dev".into(),
            create: Some(false),
            secrets_provider: None,
        })
        .await
        .expect_err("no such stack yet");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let no_stack = c
        .info(pb::InfoRequest {})
        .await
        .expect_err("nothing selected");
    assert_eq!(no_stack.code(), tonic::Code::FailedPrecondition);
    let sel = c
        .select_stack(pb::SelectStackRequest {
            stack_name: "dev".into(),
            create: Some(true),
            secrets_provider: Some("passphrase".into()),
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(sel.summary.expect("summary").name, "dev");

    // Plain values (path mode): a secret, one from the environment, one from a file.
    c.set_all_config(pb::SetAllConfigRequest {
        config: vec![
            literal("greeting", json!("hello"), false),
            literal("token", json!("hunter2"), true),
            from(
                "region",
                config_value_from::F::Env("AGENT_TEST_REGION".into()),
            ),
            from(
                "motd",
                config_value_from::F::Path(agent.dir.path().join("motd").display().to_string()),
            ),
        ],
    })
    .await
    .expect("plain config");
    // A structured value (JSON mode).
    c.set_all_config(pb::SetAllConfigRequest {
        config: vec![literal(
            "tags",
            json!({"owner": "team-a", "size": 3}),
            false,
        )],
    })
    .await
    .expect("structured config");
    let stored = String::from_utf8(agent.pulumi(&["config", "--json", "--stack", "dev"]).stdout)
        .expect("utf8");
    assert!(
        !stored.contains("hunter2"),
        "secrets are stored encrypted: {stored}"
    );
    let bad = c
        .set_all_config(pb::SetAllConfigRequest {
            config: vec![from(
                "x",
                config_value_from::F::Env("NO_SUCH_VARIABLE".into()),
            )],
        })
        .await
        .expect_err("a missing variable is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("NO_SUCH_VARIABLE"),
        "{}",
        bad.message()
    );

    let (events, result) = up(
        &mut c,
        pb::UpRequest {
            message: Some("first".into()),
            ..Default::default()
        },
    )
    .await;
    let r = result.unwrap_or_else(|st| panic!("up failed: {st:?}\n{}", agent.log_text()));
    assert!(events > 3, "engine events are streamed ({events})");
    let summary = r.summary.clone().expect("summary");
    assert_eq!(summary.result, "succeeded");
    assert_eq!(summary.message, "first");
    assert!(summary.start_time.is_some() && summary.end_time.is_some());
    assert_eq!(output(&r, "greeting"), (json!("hello"), false));
    assert_eq!(output(&r, "token"), (json!("hunter2"), true));
    assert_eq!(output(&r, "region"), (json!("eu-west-1"), false));
    assert_eq!(output(&r, "motd"), (json!("hello from a file"), false));
    assert_eq!(output(&r, "owner"), (json!("team-a"), false));
    assert_eq!(output(&r, "size"), (json!(3), false));
    assert_eq!(
        r.project_info,
        Some(pb::ProjectInfo {
            name: "agent-test".into(),
            runtime: "yaml".into()
        })
    );
    assert_eq!(r.permalink, None, "a file backend has no permalink");
    let log = agent.log_text();
    assert!(!log.contains("hunter2"), "the secret never reaches the log");
    // `up` prints every output on stdout; at the level the workspace pod runs the agent
    // (info, no AGENT_LOG), none of it is logged.
    assert!(
        !log.contains("hello from a file") && !log.contains("team-a"),
        "values the CLI prints on stdout are not logged at info:\n{log}"
    );

    let info = c
        .info(pb::InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .summary
        .expect("summary");
    assert_eq!(info.name, "dev");
    assert_eq!(info.resource_count, Some(1));
    assert!(info.last_update.is_some());

    let preview = c
        .preview(pb::PreviewRequest::default())
        .await
        .expect("preview")
        .into_inner();
    let preview_result = last_result(preview, "preview", |m| match m.response {
        Some(pb::preview_stream::Response::Result(r)) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        preview_result.and_then(|r| r.summary).map(|s| s.result),
        Some("succeeded".into())
    );

    let refresh = c
        .refresh(pb::RefreshRequest::default())
        .await
        .expect("refresh")
        .into_inner();
    let refreshed = last_result(refresh, "refresh", |m| match m.response {
        Some(pb::refresh_stream::Response::Result(r)) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        refreshed.and_then(|r| r.summary).map(|s| s.result),
        Some("succeeded".into())
    );

    let destroy = c
        .destroy(pb::DestroyRequest {
            remove: Some(true),
            ..Default::default()
        })
        .await
        .expect("destroy")
        .into_inner();
    let destroyed = last_result(destroy, "destroy", |m| match m.response {
        Some(pb::destroy_stream::Response::Result(r)) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        destroyed.and_then(|r| r.summary).map(|s| s.result),
        Some("succeeded".into())
    );
    let gone = c
        .select_stack(pb::SelectStackRequest {
            stack_name: "dev".into(),
            create: Some(false),
            secrets_provider: None,
        })
        .await
        .expect_err("removed with the destroy");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_failing_program_is_an_error_that_says_why() {
    let agent = Agent::start(Options {
        program: "name: broken\nruntime: yaml\noutputs:\n  x: ${nosuchvariable}\n",
        ..Default::default()
    });
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    let (_, result) = up(&mut c, pb::UpRequest::default()).await;
    let st = result.expect_err("the program cannot run");
    assert_eq!(st.code(), tonic::Code::Unknown);
    assert!(st.message().starts_with("up failed:"), "{}", st.message());
    assert!(
        st.message().contains("nosuchvariable"),
        "names the problem: {}",
        st.message()
    );
    assert!(
        st.message().len() < 2200,
        "a bounded message: {} bytes",
        st.message().len()
    );
    assert!(pb::error_info(&st).is_none());
}

#[tokio::test]
async fn a_locked_stack_is_reported_as_an_update_conflict() {
    let agent = Agent::start(Options {
        program: "name: locked\nruntime: yaml\noutputs:\n  x: 1\n",
        ..Default::default()
    });
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    let locks = agent
        .state_dir()
        .join(".pulumi/locks/organization/locked/dev");
    std::fs::create_dir_all(&locks).expect("locks dir");
    std::fs::write(
        locks.join("8a1e3c8e-0000-4000-8000-000000000001.json"),
        r#"{"pid":4242,"username":"someone","hostname":"elsewhere","timestamp":"2026-11-25T10:00:00Z"}"#,
    )
    .expect("lock");
    let (_, result) = up(&mut c, pb::UpRequest::default()).await;
    let st = result.expect_err("locked");
    let info = pb::error_info(&st).expect("a PulumiErrorInfo detail");
    assert_eq!((info.code, info.reason.as_str()), (409, "UpdateConflict"));

    let cancel = agent.pulumi(&["cancel", "--yes", "--stack", "dev"]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let (_, result) = up(&mut c, pb::UpRequest::default()).await;
    assert_eq!(
        result.expect("unlocked").summary.map(|s| s.result),
        Some("succeeded".into())
    );
}

#[tokio::test]
async fn a_log_level_puts_the_engine_log_in_the_agent_output() {
    let agent = Agent::start(Options {
        program: "name: verbose\nruntime: yaml\noutputs:\n  x: 1\n",
        args: &["--pulumi-log-level", "10"],
        ..Default::default()
    });
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    let (_, result) = up(&mut c, pb::UpRequest::default()).await;
    assert!(result.is_ok(), "{result:?}");
    let log = agent.log_text();
    // The engine's structured log (`-v=N --logtostderr`): JSON lines with a verbosity.
    let glog = log
        .lines()
        .filter(|l| l.contains(r#"{"time":"#) && l.contains(r#""v":"#))
        .count();
    assert!(
        glog > 20,
        "verbose engine log lines in the agent output ({glog}):\n{}",
        &log[..log.len().min(3000)]
    );
}

/// A named pipe `gate` in the agent's program directory: a program that reads it
/// (`fn::readFile: ./gate`) waits there, mid-update, until the test writes to it.
fn gate(agent: &Agent) -> std::path::PathBuf {
    let gate = agent.program_dir().join("gate");
    let c_path = std::ffi::CString::new(gate.display().to_string()).expect("path");
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
    gate
}

#[tokio::test]
async fn sigterm_interrupts_the_update_which_saves_its_state_and_unlocks() {
    let agent_program = "name: slow\nruntime: yaml\nvariables:\n  gate:\n    fn::readFile: ./gate\noutputs:\n  gate: ${gate}\n";
    let mut agent = Agent::start(Options {
        program: agent_program,
        ..Default::default()
    });
    let gate = gate(&agent);
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    let running = tokio::spawn(async move { up(&mut c, pb::UpRequest::default()).await });
    // The program is now blocked reading the gate, in the middle of the update.
    tokio::time::sleep(Duration::from_secs(5)).await;
    agent.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "the agent waits for the update"
    );
    std::fs::write(&gate, "open\n").expect("release the gate");
    let (_, result) = running.await.expect("joined");
    let st = result.expect_err("the update was interrupted");
    assert_eq!(st.code(), tonic::Code::Aborted, "{st:?}");
    assert!(st.message().contains("shutting down"), "{}", st.message());
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "a clean exit: {status}\n{}",
        agent.log_text()
    );
    // Nothing left locked: the same stack updates at once with the CLI.
    std::fs::remove_file(&gate).expect("rm fifo");
    std::fs::write(&gate, "open\n").expect("plain file");
    let out = agent.pulumi(&["up", "--yes", "--skip-preview", "--stack", "dev"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn as_pid_1_the_agent_reaps_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A fake CLI that leaves an orphan behind: a background child that outlives it.
    let fake = dir.path().join("pulumi");
    std::fs::write(&fake, "#!/bin/sh\nsleep 0.3 &\necho v3.999.0\n").expect("fake");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent = Agent::start(Options {
        program: "name: reaper\nruntime: yaml\n",
        wrapper: &[
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            "--unshare-pid",
            "--proc",
            "/proc",
            "--as-pid-1",
            "--die-with-parent",
            "--",
        ],
        pulumi: Some(fake),
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for _ in 0..3 {
        let v = rt.block_on(async {
            let mut c = agent.client().await;
            c.pulumi_version(pb::PulumiVersionRequest {}).await
        });
        assert_eq!(v.expect("version").into_inner().version, "3.999.0");
    }
    std::thread::sleep(Duration::from_secs(2));
    // The agent is the process whose parent is bwrap (our child).
    let bwrap = agent.child.id() as i32;
    let agent_pid = children_of(bwrap)
        .into_iter()
        .next()
        .expect("the agent under bwrap");
    let zombies: Vec<i32> = children_of(agent_pid)
        .into_iter()
        .filter(|p| state_of(*p) == Some('Z'))
        .collect();
    assert!(
        zombies.is_empty(),
        "zombies left under the agent: {zombies:?}\n{}",
        agent.log_text()
    );
}

fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    Some((f.next()?.chars().next()?, f.next()?.parse().ok()?))
}

fn state_of(pid: i32) -> Option<char> {
    stat(pid).map(|s| s.0)
}

fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| stat(*p).is_some_and(|(_, pp)| pp == parent))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn outputs_larger_than_a_mebibyte_come_back_whole_with_their_secrets_marked() {
    // 120k numbers: the CLI prints them one per indented line, ~1.3 MiB of `stack output`
    // JSON, more than the agent keeps of an ordinary command's output.
    let numbers: Vec<String> = (0..120_000).map(|i| (100_000 + i).to_string()).collect();
    let program = format!(
        "name: big\nruntime: yaml\nconfig:\n  token:\n    type: string\n    secret: true\n\
         outputs:\n  token: ${{token}}\n  numbers: [{}]\n",
        numbers.join(", ")
    );
    let agent = Agent::start(Options {
        program: &program,
        ..Default::default()
    });
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    c.set_all_config(pb::SetAllConfigRequest {
        config: vec![literal("token", json!("hunter2-big-output"), true)],
    })
    .await
    .expect("config");
    let (_, result) = up(&mut c, pb::UpRequest::default()).await;
    let r = result.expect("an update with large outputs succeeds");
    let (all, secret) = output(&r, "numbers");
    assert!(!secret);
    let all = all.as_array().expect("the list");
    assert_eq!(all.len(), 120_000);
    assert_eq!(all[119_999], json!(219_999));
    assert_eq!(output(&r, "token"), (json!("hunter2-big-output"), true));
    let logs = agent.log_text();
    assert!(
        !logs.contains("hunter2-big-output"),
        "the secret output is never logged"
    );
}

/// A TCP relay in front of the agent that can go silent: both connections stay open, nothing
/// passes, as when a network path is dropped (no FIN, no RST).
struct Relay {
    port: u16,
    silent: Arc<AtomicBool>,
}

async fn relay(target: u16) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&silent);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pass(ri, wo, Arc::clone(&flag)));
            tokio::spawn(pass(ro, wi, Arc::clone(&flag)));
        }
    });
    Relay { port, silent }
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if silent.load(Ordering::SeqCst) => {
                let _ = n;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_caller_gone_silent_is_dropped_its_update_interrupted_and_none_runs_beside_it() {
    let program = "name: silent\nruntime: yaml\nvariables:\n  gate:\n    fn::readFile: ./gate\noutputs:\n  gate: ${gate}\n";
    let agent = Agent::start(Options {
        program,
        ..Default::default()
    });
    let gate = gate(&agent);
    let relay = relay(agent.port).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", relay.port))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects through the relay");
    let mut far = operator::proto::automation_service_client::AutomationServiceClient::new(channel);
    far.select_stack(pb::SelectStackRequest {
        stack_name: "dev".into(),
        create: Some(true),
        secrets_provider: None,
    })
    .await
    .expect("stack");
    let running = tokio::spawn(async move { up(&mut far, pb::UpRequest::default()).await });
    // The update is now blocked reading the gate, in its middle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Another caller's update does not run beside it.
    let mut near = agent.client().await;
    let (_, second) = up(&mut near, pb::UpRequest::default()).await;
    let refused = second.expect_err("refused while one runs");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("another operation (up, started "),
        "{}",
        refused.message()
    );

    // The path goes silent: the agent's pings go unanswered, it drops the caller and
    // interrupts the update (Pulumi stops at the next step: once the gate opens).
    relay.silent.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !agent
        .log_text()
        .contains("the caller went away; interrupting the operation")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent caller was never dropped:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    std::fs::write(&gate, "open\n").expect("release the gate");

    // Once the interrupted update has stopped, the next one runs.
    std::fs::remove_file(&gate).expect("rm fifo");
    std::fs::write(&gate, "open\n").expect("plain file");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, next) = up(&mut near, pb::UpRequest::default()).await;
        match next {
            Ok(r) => {
                assert_eq!(
                    r.summary.map(|s| s.result),
                    Some("succeeded".into()),
                    "{}",
                    agent.log_text()
                );
                break;
            }
            Err(st)
                if st.code() == tonic::Code::Aborted && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(st) => panic!("{st:?}\n{}", agent.log_text()),
        }
    }
    running.abort();
}

/// A program whose one resource takes its value from config: what the plan fixes.
const PLANNED: &str = "name: planned
runtime: yaml
config:
  value:
    type: string
resources:
  thing:
    type: gate:index:Resource
    properties:
      value: ${value}
outputs:
  value: ${thing.value}
";

#[tokio::test]
async fn a_saved_plan_constrains_the_up_and_a_deviation_fails_with_the_clis_reason() {
    let agent = Agent::start(Options {
        program: PLANNED,
        ..Default::default()
    });
    let mut c = agent.client().await;
    create_dev(&mut c).await;
    let set = |v: &str| pb::SetAllConfigRequest {
        config: vec![literal("value", json!(v), false)],
    };
    c.set_all_config(set("one")).await.expect("config");
    let stream = c
        .preview(pb::PreviewRequest {
            save_plan: Some(true),
            ..Default::default()
        })
        .await
        .expect("preview")
        .into_inner();
    let plan = last_result(stream, "preview", |m| match m.response {
        Some(pb::preview_stream::Response::Result(r)) => r.plan,
        _ => None,
    })
    .await
    .expect("the preview returns its plan");
    let text = String::from_utf8_lossy(&plan);
    assert!(
        text.contains("resourcePlans")
            && text.contains("urn:pulumi:dev::planned::gate:index:Resource::thing"),
        "{text}"
    );
    // The agent's TMPDIR is the test's own.
    let leftover = std::fs::read_dir(agent.dir.path().join("tmp"))
        .expect("the agent's tmp")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pulumi-agent-plan-")
        })
        .count();
    assert_eq!(leftover, 0, "the plan's file is removed once returned");

    // The world changes between the plan and its approval: the up refuses to deviate.
    c.set_all_config(set("two")).await.expect("config");
    let (_, result) = up(
        &mut c,
        pb::UpRequest {
            plan: Some(plan.clone()),
            ..Default::default()
        },
    )
    .await;
    let st = result.expect_err("a deviation from the plan fails the up");
    assert!(
        st.message().contains("violates plan") && st.message().contains("thing"),
        "{}",
        st.message()
    );

    // As planned: applied.
    c.set_all_config(set("one")).await.expect("config");
    let (_, result) = up(
        &mut c,
        pb::UpRequest {
            plan: Some(plan),
            ..Default::default()
        },
    )
    .await;
    let r = result.expect("the planned up");
    assert_eq!(output(&r, "value"), (json!("one"), false));
}
