//! Both directions of interoperability with Go peers, built by tests/tools/build.sh:
//! - a Go gRPC client (grpcurl, grpc-go) drives our agent through the protocol file alone:
//!   service and message names, field numbers, streaming, and the `PulumiErrorInfo` status
//!   detail as grpc-go decodes it;
//! - this operator's own client code (the Workspace controller's calls and the Update
//!   controller's `run_operation`, outcome and outputs Secret) drives PKO's Go agent, v2.9.0,
//!   through a full update and a destroy.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use operator::api::update::{Update, UpdateSpec, UpdateType};
use operator::controller::runtime::connect::dial;
use operator::controller::update::outcome::{Draft, outputs_secret};
use operator::controller::update::run_operation;
use operator::proto as pb;

use support::{Agent, Options};

fn grpcurl() -> PathBuf {
    let dirs = e2e::tools::dirs(&["grpcurl"]).expect("grpcurl is built by tests/tools/build.sh");
    e2e::tools::find(&dirs, "grpcurl").expect("grpcurl binary")
}

fn run(agent: &Agent, method: &str, body: &str) -> (bool, String, String) {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let out = Command::new(grpcurl())
        .args(["-plaintext", "-import-path"])
        .arg(&proto)
        .args(["-proto", "agent.proto", "-d", body])
        .arg(format!("127.0.0.1:{}", agent.port))
        .arg(format!("agent.AutomationService/{method}"))
        .output()
        .expect("grpcurl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_go_client_selects_updates_streams_and_reads_error_details() {
    let agent = Agent::start(Options {
        program: "name: interop\nruntime: yaml\noutputs:\n  greeting: hello\n  secret:\n    fn::secret: shh\n",
        ..Default::default()
    });

    let (ok, out, err) = run(&agent, "PulumiVersion", "{}");
    assert!(ok, "{err}");
    assert!(out.contains("\"version\": \"3.259.0\""), "{out}");

    let (ok, out, err) = run(
        &agent,
        "SelectStack",
        r#"{"stackName": "dev", "create": true}"#,
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"name\": \"dev\""), "{out}");

    let (ok, out, err) = run(
        &agent,
        "SetAllConfig",
        r#"{"config": [{"key": "a", "value": "b"}, {"key": "n", "value": 3}]}"#,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "{}");

    let (ok, out, err) = run(&agent, "Up", r#"{"message": "from go"}"#);
    assert!(ok, "{err}");
    let messages = out.matches("\n{").count() + 1;
    assert!(
        messages > 3,
        "events then a result ({messages} messages):\n{out}"
    );
    let result = &out[out.rfind("\"result\"").expect("a result message")..];
    assert!(result.contains("\"result\": \"succeeded\""), "{result}");
    assert!(result.contains("\"message\": \"from go\""), "{result}");
    // bytes fields are base64 in JSON: "hello" → ImhlbGxvIg==
    assert!(result.contains("ImhlbGxvIg=="), "{result}");
    assert!(result.contains("\"secret\": true"), "{result}");

    // A lock: the status detail is a PulumiErrorInfo that grpc-go resolves by type URL.
    let locks = agent
        .state_dir()
        .join(".pulumi/locks/organization/interop/dev");
    std::fs::create_dir_all(&locks).expect("locks");
    std::fs::write(
        locks.join("8a1e3c8e-0000-4000-8000-000000000002.json"),
        r#"{"pid":1,"username":"u","hostname":"h","timestamp":"2026-11-25T10:00:00Z"}"#,
    )
    .expect("lock");
    let (ok, _out, err) = run(&agent, "Up", "{}");
    assert!(!ok);
    assert!(err.contains("Code: Unknown"), "{err}");
    assert!(err.contains("agent.PulumiErrorInfo"), "{err}");
    assert!(
        err.contains("UpdateConflict") && err.contains("409"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_operator_drives_pkos_go_agent_through_an_update_and_a_destroy() {
    let dirs = e2e::tools::dirs(&["pko"]).expect("PKO's agent is built by tests/tools/build.sh");
    let pko = e2e::tools::find(&dirs, "pulumi-kubernetes-agent").expect("PKO's agent binary");
    let agent = Agent::start(Options {
        program: "name: pko-interop\nruntime: yaml\noutputs:\n  greeting: hello\n  secret:\n    fn::secret: shh\n",
        binary: Some(pko),
        ..Default::default()
    });
    let addr = format!("127.0.0.1:{}", agent.port);
    let mut client = dial(&addr, "unused-in-auth-mode-none", Duration::from_secs(10))
        .await
        .expect("dial PKO's agent");

    // What the Workspace controller asks of every new pod.
    let version = client
        .pulumi_version(pb::PulumiVersionRequest {})
        .await
        .expect("PulumiVersion")
        .into_inner()
        .version;
    assert_eq!(
        version, "3.259.0",
        "the CLI's version, as our agent reports it"
    );
    let selected = client
        .select_stack(pb::SelectStackRequest {
            stack_name: "dev".into(),
            create: Some(true),
            secrets_provider: None,
        })
        .await
        .expect("SelectStack")
        .into_inner();
    assert_eq!(selected.summary.map(|s| s.name), Some("dev".into()));

    // What the Update controller does with an Update of type up.
    let update = |name: &str, kind: UpdateType| Update {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: UpdateSpec {
            workspace_name: Some("interop".into()),
            update_type: Some(kind),
            message: Some(format!("{name} from the Rust operator")),
            ..Default::default()
        },
        status: None,
    };
    let up = update("interop-up", UpdateType::Up);
    let mut seen = operator::controller::update::Observed::default();
    let result = run_operation(&mut client, &up, None, &mut seen)
        .await
        .unwrap_or_else(|st| {
            panic!(
                "up through PKO's agent: {st:?}\nagent log:\n{}",
                agent.log_text()
            )
        });
    let mut draft = Draft::new(&up);
    let succeeded = draft.result(
        result.summary.as_ref(),
        result.permalink.clone(),
        result.project.as_ref(),
        "2026-11-29T00:00:00Z",
    );
    assert!(succeeded, "{:?}", result.summary);
    // The engine events PKO's agent streams are read as ours are: the stack resource created.
    let changes = seen.changes.resources();
    assert!(
        changes
            .iter()
            .any(|c| c.resource_type == "pulumi:pulumi:Stack" && c.operation == "create"),
        "{changes:?}"
    );
    assert!(draft.conditions.is_true("Complete"));
    assert_eq!(draft.conditions.reason("Failed"), Some("UpdateSucceeded"));
    // PKO's agent reports the message JSON-quoted (ours does not); it is recorded as given.
    assert!(
        draft
            .message
            .as_deref()
            .is_some_and(|m| m.contains("interop-up from the Rust operator")),
        "{:?}",
        draft.message
    );
    assert_eq!(
        draft.project_info.as_ref().map(|p| p.name.as_str()),
        Some("pko-interop")
    );
    let outputs = result.outputs.expect("an up has outputs");
    let secret = outputs_secret(&up, Default::default(), &outputs);
    let data = secret.data.expect("data");
    assert_eq!(data["greeting"].0, br#""hello""#.to_vec());
    assert_eq!(
        secret.metadata.annotations.expect("annotations")["pulumi.com/secrets"],
        r#"["secret"]"#
    );

    let destroy = update("interop-destroy", UpdateType::Destroy);
    let result = run_operation(&mut client, &destroy, None, &mut Default::default())
        .await
        .expect("destroy through PKO's agent");
    let mut draft = Draft::new(&destroy);
    assert!(draft.result(
        result.summary.as_ref(),
        result.permalink,
        result.project.as_ref(),
        "2026-11-29T00:00:00Z"
    ));
    assert_eq!(
        result.summary.map(|s| s.result),
        Some("succeeded".to_string())
    );
}
