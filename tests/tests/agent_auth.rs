//! The agent's `kube` auth mode against a real apiserver, with the agent where users run it:
//! in a pod on a real node, started with the operator's own command line for the `pulumi`
//! container (`desired::agent_command`), the agent copied in by the operator image's
//! `bootstrap`, the Pulumi image from the cluster's registry, and the pod's service-account
//! token as its only credential. TokenReview with the workspace audience, SubjectAccessReview
//! for `use` on `workspaces/rpc` of that Workspace. The test calls the pods from the host
//! (pod IPs are routed to the node), from two host addresses when it needs two callers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;

use e2e::ControlPlane;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use operator::api::names::pod as layout;
use operator::api::workspace::Workspace;
use operator::controller::workspace::desired::agent_command;
use operator::proto::PulumiVersionRequest;
use operator::proto::automation_service_client::AutomationServiceClient;
use serde_json::json;
use tonic::transport::Channel;

use support::real_node::{self, RealCluster};

async fn token(cp: &ControlPlane, sa: &str, audience: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(cp.client(), "default");
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
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

/// A pod like a workspace pod for Workspace `default/<workspace>`: the operator image's
/// `bootstrap` puts the agent on the shared volume, an init container writes a Pulumi YAML
/// project there, and the `pulumi` container runs the agent as the operator would, under
/// service account `sa`.
fn agent_pod(rc: &RealCluster, name: &str, workspace: &str, sa: &str) -> Pod {
    let ws: Workspace = serde_json::from_value(json!({
        "apiVersion": "auto.pulumi.com/v1alpha1", "kind": "Workspace",
        "metadata": {"name": workspace, "namespace": "default"},
        "spec": {"image": rc.images.pulumi},
    }))
    .expect("a Workspace");
    let mounts = json!([{"name": layout::SHARE_VOLUME, "mountPath": layout::SHARE_PATH}]);
    let project = format!(
        "mkdir -p {dir} && printf 'name: auth\\nruntime: yaml\\n' > {dir}/Pulumi.yaml",
        dir = layout::WORKSPACE_PATH
    );
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 3,
            "volumes": [{"name": layout::SHARE_VOLUME, "emptyDir": {}}],
            "initContainers": [
                {"name": layout::BOOTSTRAP_CONTAINER, "image": rc.images.operator,
                 "command": ["/agent", "bootstrap", layout::AGENT_PATH], "volumeMounts": mounts},
                {"name": "project", "image": rc.images.pulumi,
                 "command": ["sh", "-c", project], "volumeMounts": mounts},
            ],
            "containers": [{
                "name": layout::PULUMI_CONTAINER, "image": rc.images.pulumi,
                "command": agent_command(&ws),
                "workingDir": layout::WORKSPACE_PATH,
                "env": [{"name": "PULUMI_SKIP_UPDATE_CHECK", "value": "true"}],
                "volumeMounts": mounts,
            }],
        },
    }))
    .expect("a valid pod")
}

/// Starts the agent pod and waits until its agent listens; its address.
async fn start_agent(rc: &mut RealCluster, name: &str, workspace: &str, sa: &str) -> SocketAddr {
    let pods: Api<Pod> = Api::namespaced(rc.cp.client(), "default");
    pods.create(&PostParams::default(), &agent_pod(rc, name, workspace, sa))
        .await
        .expect("create the agent pod");
    let client = rc.cp.client();
    let pod = rc
        .node
        .wait_pod_ready(&client, "default", name, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("agent pod {name}: {e}"));
    let ip: IpAddr = pod
        .status
        .and_then(|s| s.pod_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("the pod's IP");
    let addr = SocketAddr::new(ip, layout::GRPC_PORT as u16);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the agent in {name} never listened on {addr}:\n{}",
        agent_log(rc, name)
    );
}

fn agent_log(rc: &RealCluster, pod: &str) -> String {
    rc.kubectl(&["logs", "-n", "default", pod, "-c", layout::PULUMI_CONTAINER])
        .unwrap_or_else(|e| e)
}

async fn call(agent: SocketAddr, auth: Option<&str>) -> Result<String, tonic::Status> {
    call_from(None, agent, auth).await
}

/// A call from a chosen host address (the agent tells callers apart by address).
async fn call_from(
    from: Option<IpAddr>,
    agent: SocketAddr,
    auth: Option<&str>,
) -> Result<String, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{agent}"))
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
    let mut rc = real_node::start().await;
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
    rc.cp
        .apply_yaml(rbac, "rbac", "default")
        .await
        .expect("rbac");

    let ws1 = start_agent(&mut rc, "ws1-workspace-0", "ws1", "agent").await;
    let ws2 = start_agent(&mut rc, "ws2-workspace-0", "ws2", "agent").await;
    let cp = &rc.cp;

    let good = format!("Bearer {}", token(cp, "operator", "ws1.default").await);
    assert_eq!(call(ws1, Some(&good)).await.expect("allowed"), "3.259.0");
    // Cached: a second call works without new reviews.
    assert!(call(ws1, Some(&good)).await.is_ok());

    // Tokens that cannot pass a review are refused without one: not a JWT, expired, or for
    // another audience.
    let issuer = claims_of(good.trim_start_matches("Bearer "))["iss"].clone();
    assert!(
        issuer.is_string(),
        "service-account tokens name their issuer"
    );
    let later = now_unix() + 600;
    let reviews = token_reviews(cp).await;
    let none = call(ws1, None).await.expect_err("no token");
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let malformed = call(ws1, Some("Bearer")).await.expect_err("malformed");
    assert_eq!(malformed.code(), tonic::Code::Unauthenticated);
    for junk in [
        "not-a-token".to_string(),
        forged(serde_json::json!({"aud": ["ws1.default"], "iss": issuer, "exp": 1000})),
        forged(serde_json::json!({"aud": ["ws2.default"], "iss": issuer, "exp": later})),
    ] {
        let e = call(ws1, Some(&format!("Bearer {junk}")))
            .await
            .expect_err("junk");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    assert_eq!(
        token_reviews(cp).await,
        reviews,
        "no TokenReview was sent for tokens that cannot pass one"
    );

    // A flood of forgeries that do need a review (our audience and issuer, a bad signature)
    // from one address spends that address's budget only: the operator's next token, from
    // another address, still gets through.
    let attacker = IpAddr::V4(
        rc.network
            .add_host_address(200)
            .expect("a second host address"),
    );
    let mut refused_unreviewed = 0;
    for i in 0..30 {
        let fake = forged(serde_json::json!({
            "aud": ["ws1.default"], "iss": issuer, "exp": later, "sub": format!("system:serviceaccount:default:x{i}"),
        }));
        let e = call_from(Some(attacker), ws1, Some(&format!("Bearer {fake}")))
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
    let fresh = format!("Bearer {}", token(cp, "operator", "ws1.default").await);
    assert_ne!(fresh, good, "a token the agent has not seen");
    assert_eq!(
        call(ws1, Some(&fresh))
            .await
            .expect("the operator is not locked out"),
        "3.259.0"
    );

    let wrong_audience = format!("Bearer {}", token(cp, "operator", "ws2.default").await);
    let e = call(ws1, Some(&wrong_audience))
        .await
        .expect_err("wrong audience");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let stranger = format!("Bearer {}", token(cp, "stranger", "ws1.default").await);
    let e = call(ws1, Some(&stranger)).await.expect_err("no grant");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // The grant names ws1 only: the same caller may not drive ws2's agent.
    let for_ws2 = format!("Bearer {}", token(cp, "operator", "ws2.default").await);
    let e = call(ws2, Some(&for_ws2))
        .await
        .expect_err("grant is per workspace");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // An agent whose own account may not review tokens says so.
    let weak = start_agent(
        &mut rc,
        "weak-workspace-0",
        "ws1",
        "agent-without-delegation",
    )
    .await;
    let e = call(weak, Some(&good)).await.expect_err("no TokenReview");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(e.message(), "TokenReview API is unavailable");
    let log = agent_log(&rc, "weak-workspace-0");
    assert!(
        log.contains("system:auth-delegator"),
        "the log says how to fix it:\n{log}"
    );
    assert!(
        !log.contains(good.trim_start_matches("Bearer ")),
        "tokens are never logged"
    );
}
