//! A Go gRPC client (grpcurl, grpc-go, built from its module by tests/tools/build.sh) drives
//! the agent through the protocol file alone: service and message names, field numbers,
//! streaming, and the `PulumiErrorInfo` status detail as grpc-go decodes it.

mod support;

use std::path::PathBuf;
use std::process::Command;

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
