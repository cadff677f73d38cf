//! The agent's `kube` auth mode against a real apiserver: TokenReview with the workspace
//! audience, SubjectAccessReview for `use` on `workspaces/rpc` of that Workspace.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use e2e::ControlPlane;
use e2e::process::Process;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use operator::proto::PulumiVersionRequest;
use operator::proto::automation_service_client::AutomationServiceClient;
use tonic::transport::Channel;

async fn token(cp: &ControlPlane, sa: &str, audience: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(cp.client(), "default");
    let req = TokenRequest {
        spec: TokenRequestSpec {
            // "" = the apiserver's own audience (a token for talking to the API).
            audiences: if audience.is_empty() {
                vec![]
            } else {
                vec![audience.to_string()]
            },
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create_token_request(sa, &PostParams::default(), &req)
        .await
        .expect("token")
        .status
        .expect("status")
        .token
}

fn kubeconfig(cp: &ControlPlane, token: &str, name: &str) -> PathBuf {
    let ca = cp.dir().join("auth-ca.crt");
    std::fs::write(&ca, cp.ca_pem()).expect("ca");
    let path = cp.dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
             users:\n- name: u\n  user: {{token: '{token}'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            cp.url(),
            ca.display()
        ),
    )
    .expect("kubeconfig");
    path
}

fn start_agent(
    cp: &ControlPlane,
    kubeconfig: &Path,
    workspace: &str,
    program: &Path,
) -> (Process, u16) {
    let port = e2e::process::free_port();
    let agent = support::fetch_binary().with_file_name("agent");
    let pulumi = support::operator::pulumi_dir();
    let mut cmd = std::process::Command::new(agent);
    cmd.args([
        "serve",
        "--skip-install",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ])
    .arg("--workspace")
    .arg(program)
    .args([
        "--auth-mode",
        "kube",
        "--kube-audience",
        &format!("{workspace}.default"),
    ])
    .args([
        "--kube-workspace-namespace",
        "default",
        "--kube-workspace-name",
        workspace,
    ])
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .env("PATH", format!("{}:/usr/bin:/bin", pulumi.display()))
    .env("HOME", program.parent().expect("dir"))
    .env("PULUMI_SKIP_UPDATE_CHECK", "true");
    let p = Process::spawn(&format!("agent-{workspace}-{port}"), cmd, cp.dir()).expect("agent");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (p, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the agent never listened:\n{}",
        e2e::process::tail(p.log_path(), 30)
    );
}

async fn call(port: u16, auth: Option<&str>) -> Result<String, tonic::Status> {
    call_from(None, port, auth).await
}

/// A call from a chosen loopback address (the agent tells callers apart by address).
async fn call_from(
    from: Option<IpAddr>,
    port: u16,
    auth: Option<&str>,
) -> Result<String, tonic::Status> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .local_address(from)
        .connect()
        .await
        .expect("connect");
    let mut client = AutomationServiceClient::new(channel);
    let mut req = tonic::Request::new(PulumiVersionRequest {});
    if let Some(a) = auth {
        req.metadata_mut()
            .insert("authorization", a.parse().expect("ascii"));
    }
    client
        .pulumi_version(req)
        .await
        .map(|r| r.into_inner().version)
}

/// TokenReviews the apiserver has answered so far (all clients).
async fn token_reviews(cp: &ControlPlane) -> f64 {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = cp.client().request_text(req).await.expect("metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"tokenreviews\"")
                && l.contains("verb=\"POST\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A JWT with these claims and a signature nobody made.
fn forged(claims: serde_json::Value) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.{}",
        enc(br#"{"alg":"RS256","kid":"forged"}"#),
        enc(claims.to_string().as_bytes()),
        enc(b"not a signature")
    )
}

/// The claims of a real token.
fn claims_of(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("a JWT");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("base64");
    serde_json::from_slice(&raw).expect("claims")
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_with_the_audience_and_the_rpc_grant_get_through() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let rbac = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: agent}\n---\n\
        apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: agent-without-delegation}\n---\n\
        apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: operator}\n---\n\
        apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: stranger}\n---\n\
        apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: agent-auth-delegator}\n\
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:auth-delegator'}\n\
        subjects: [{kind: ServiceAccount, name: agent, namespace: default}]\n---\n\
        apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: use-ws1}\n\
        rules: [{apiGroups: [auto.pulumi.com], resources: [workspaces/rpc], resourceNames: [ws1], verbs: [use]}]\n---\n\
        apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: operator-uses-ws1}\n\
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: use-ws1}\n\
        subjects: [{kind: ServiceAccount, name: operator, namespace: default}]\n";
    cp.apply_yaml(rbac, "rbac", "default").await.expect("rbac");
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("program");
    std::fs::create_dir_all(&program).expect("dir");
    std::fs::write(program.join("Pulumi.yaml"), "name: auth\nruntime: yaml\n").expect("program");

    let agent_kc = kubeconfig(&cp, &token(&cp, "agent", "").await, "agent");
    let (_ws1, port1) = start_agent(&cp, &agent_kc, "ws1", &program);
    let (_ws2, port2) = start_agent(&cp, &agent_kc, "ws2", &program);

    let good = format!("Bearer {}", token(&cp, "operator", "ws1.default").await);
    assert_eq!(call(port1, Some(&good)).await.expect("allowed"), "3.259.0");
    // Cached: a second call works without new reviews.
    assert!(call(port1, Some(&good)).await.is_ok());

    // Tokens that cannot pass a review are refused without one: not a JWT, expired, or for
    // another audience.
    let issuer = claims_of(good.trim_start_matches("Bearer "))["iss"].clone();
    assert!(
        issuer.is_string(),
        "service-account tokens name their issuer"
    );
    let later = now_unix() + 600;
    let reviews = token_reviews(&cp).await;
    let none = call(port1, None).await.expect_err("no token");
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let malformed = call(port1, Some("Bearer")).await.expect_err("malformed");
    assert_eq!(malformed.code(), tonic::Code::Unauthenticated);
    for junk in [
        "not-a-token".to_string(),
        forged(serde_json::json!({"aud": ["ws1.default"], "iss": issuer, "exp": 1000})),
        forged(serde_json::json!({"aud": ["ws2.default"], "iss": issuer, "exp": later})),
    ] {
        let e = call(port1, Some(&format!("Bearer {junk}")))
            .await
            .expect_err("junk");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    assert_eq!(
        token_reviews(&cp).await,
        reviews,
        "no TokenReview was sent for tokens that cannot pass one"
    );

    // A flood of forgeries that do need a review (our audience and issuer, a bad signature)
    // from one address spends that address's budget only: the operator's next token, from
    // another address, still gets through.
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut refused_unreviewed = 0;
    for i in 0..30 {
        let fake = forged(serde_json::json!({
            "aud": ["ws1.default"], "iss": issuer, "exp": later, "sub": format!("system:serviceaccount:default:x{i}"),
        }));
        let e = call_from(Some(attacker), port1, Some(&format!("Bearer {fake}")))
            .await
            .expect_err("forged");
        match e.code() {
            tonic::Code::Unauthenticated => {}
            tonic::Code::Unavailable => refused_unreviewed += 1,
            other => panic!("{other:?}: {e:?}"),
        }
    }
    assert!(
        refused_unreviewed >= 5,
        "the address ran out of reviews ({refused_unreviewed} refused unreviewed)"
    );
    let fresh = format!("Bearer {}", token(&cp, "operator", "ws1.default").await);
    assert_ne!(fresh, good, "a token the agent has not seen");
    assert_eq!(
        call(port1, Some(&fresh))
            .await
            .expect("the operator is not locked out"),
        "3.259.0"
    );

    let wrong_audience = format!("Bearer {}", token(&cp, "operator", "ws2.default").await);
    let e = call(port1, Some(&wrong_audience))
        .await
        .expect_err("wrong audience");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let stranger = format!("Bearer {}", token(&cp, "stranger", "ws1.default").await);
    let e = call(port1, Some(&stranger)).await.expect_err("no grant");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // The grant names ws1 only: the same caller may not drive ws2's agent.
    let for_ws2 = format!("Bearer {}", token(&cp, "operator", "ws2.default").await);
    let e = call(port2, Some(&for_ws2))
        .await
        .expect_err("grant is per workspace");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // An agent whose own account may not review tokens says so.
    let weak_kc = kubeconfig(
        &cp,
        &token(&cp, "agent-without-delegation", "").await,
        "weak",
    );
    let (weak, port3) = start_agent(&cp, &weak_kc, "ws1", &program);
    let e = call(port3, Some(&good)).await.expect_err("no TokenReview");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(e.message(), "TokenReview API is unavailable");
    let log = std::fs::read_to_string(weak.log_path()).unwrap_or_default();
    assert!(
        log.contains("system:auth-delegator"),
        "the log says how to fix it:\n{log}"
    );
    assert!(
        !log.contains(good.trim_start_matches("Bearer ")),
        "tokens are never logged"
    );
}
