//! The NetworkPolicies of `config/flux`, enforced for real, on paths that cross nodes: two real
//! nodes, each running kube-router's firewall controller; CoreDNS, source-controller (with the
//! policies `flux install` puts in `flux-system`: ingress from `flux-system` only) and this
//! operator installed on the first node, which is then cordoned, so every pod the test starts
//! (workspace pods, probes) runs on the second. What config/flux/README.md promises is checked
//! the way it tells users to check it: a pod `wget`s the artifact URL. And what a user sees when
//! a policy keeps the operator from the agent: the Workspace's `ConnectionFailed`.

mod support;

use std::time::{Duration, Instant};

use e2e::cluster::{Cluster, ClusterOptions};
use e2e::in_cluster::{FLUX_NAMESPACE, OPERATOR_NAMESPACE};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use support::operator::{self, flux_ref, stack_yaml_with};
use support::real_node;
use support::{FluxFixture, condition, events_for, get_json, stacks, wait_for, workspaces};

/// What a connection attempt from a pod came to.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Reach {
    /// The TCP connection was made (whatever the server answered then).
    Connected,
    /// Refused at once: kube-router rejects what no policy admits (icmp port-unreachable).
    Refused,
    /// No answer within the probe's limit: what enforcers that drop (not reject) give.
    TimedOut,
}

/// `exit=<code>` and wget's stderr, as the probe pod prints them.
fn classify(log: &str) -> Option<Reach> {
    let code = log
        .lines()
        .find_map(|l| l.strip_prefix("exit="))?
        .trim()
        .to_string();
    Some(if log.contains("Connection refused") {
        Reach::Refused
    } else if code == "143" {
        // busybox `timeout` ends wget with SIGTERM.
        Reach::TimedOut
    } else if log.contains("can't connect") || log.contains("bad address") {
        return None;
    } else {
        Reach::Connected
    })
}

/// `wget`s `$URL` (15 s limit per try), again every second for 30 s while refused, timed
/// out or unresolved. Refused: a new pod is admitted only once the enforcer on the
/// destination's node has seen its address, as a real client's retries (fetch's) cover; a
/// connection that stays refused for 30 s is refused. Timed out or unresolved ("bad
/// address"): the name is resolved through cluster DNS (UDP through kube-proxy to CoreDNS on
/// the other node), where lost queries (the conntrack race of a resolver's parallel A and
/// AAAA queries) fail a lookup now and then; a name still unresolved after 30 s fails the test
/// with the log, since DNS is not what the policies decide.
const PROBE: &str = r#"end=$(( $(date +%s) + 30 ))
while :; do
  timeout 15 wget -q -O /dev/null "$URL" 2>/tmp/err; rc=$?
  grep -q -e "Connection refused" -e "bad address" /tmp/err || [ "$rc" = 143 ] || break
  [ "$(date +%s)" -lt "$end" ] || break
  sleep 1
done
echo "exit=$rc"; cat /tmp/err"#;

struct Probes<'a> {
    rc: &'a Cluster,
    node: String,
    count: usize,
}

impl Probes<'_> {
    /// Runs a pod in `namespace` with `labels` that `wget`s `url` ([`PROBE`]) and says what
    /// came of it; checks that it ran on the second node.
    async fn probe(&mut self, namespace: &str, labels: Value, url: &str) -> Reach {
        self.count += 1;
        let name = format!("probe-{}", self.count);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                // Admitted where Pod Security is `restricted` (the operator's namespace).
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "probe", "image": self.rc.images.pulumi,
                                "command": ["sh", "-c", PROBE],
                                "env": [{"name": "URL", "value": url}],
                                "securityContext": {"allowPrivilegeEscalation": false,
                                                    "capabilities": {"drop": ["ALL"]}}}],
            },
        }))
        .expect("a valid pod");
        let pods: Api<Pod> = Api::namespaced(self.rc.cp.client(), namespace);
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create the probe");
        let deadline = Instant::now() + Duration::from_secs(90);
        let done = loop {
            let p = pods.get(&name).await.expect("the probe pod");
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "probe {namespace}/{name} did not finish: {:?}\n{}",
                p.status,
                self.rc.diagnose()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let node = done.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(
            node.as_deref(),
            Some(self.node.as_str()),
            "probes run on the second node"
        );
        let log = self
            .rc
            .kubectl(&["logs", "-n", namespace, &name])
            .unwrap_or_else(|e| e);
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        classify(&log).unwrap_or_else(|| {
            panic!(
                "probe {namespace}/{name} of {url}: {log}\n{}{}",
                self.dns_diagnosis(),
                self.rc.diagnose()
            )
        })
    }

    /// What decides a lookup from a pod: kube-dns's endpoints as the apiserver has them, and
    /// each node's iptables rules for the kube-dns address and kube-router's rejects.
    fn dns_diagnosis(&self) -> String {
        let mut out = self
            .rc
            .kubectl(&[
                "get",
                "endpointslices,pods",
                "-n",
                "kube-system",
                "-o",
                "wide",
            ])
            .unwrap_or_else(|e| e);
        for node in std::iter::once(&self.rc.node).chain(&self.rc.more_nodes) {
            let rules = ["nat", "filter"]
                .iter()
                .map(|t| node.iptables(t).unwrap_or_else(|e| e.to_string()))
                .collect::<Vec<_>>()
                .join("\n");
            let relevant: Vec<&str> = rules
                .lines()
                .filter(|l| l.contains(e2e::in_cluster::DNS_IP) || l.contains("REJECT"))
                .take(60)
                .collect();
            out.push_str(&format!(
                "\n--- {} iptables (kube-dns, REJECT):\n{}",
                node.name(),
                relevant.join("\n")
            ));
        }
        out
    }

    /// Probes until the outcome is `want` (a policy change takes effect when kube-router has
    /// seen it, a moment later) or 120 s have passed; fails with the last outcome.
    async fn expect(&mut self, what: &str, namespace: &str, labels: Value, url: &str, want: Reach) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.probe(namespace, labels.clone(), url).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {namespace} → {url} was {got:?}, not {want:?}\n{}",
                self.rc.diagnose()
            );
        }
    }
}

fn workspace_labels() -> Value {
    json!({"auto.pulumi.com/component": "workspace"})
}

fn no_labels() -> Value {
    json!({"app": "curious"})
}

#[test]
fn probe_logs_are_classified() {
    assert_eq!(classify("exit=0\n"), Some(Reach::Connected));
    assert_eq!(
        classify("exit=1\nwget: server returned error: HTTP/1.1 404 Not Found\n"),
        Some(Reach::Connected)
    );
    assert_eq!(
        classify("exit=1\nwget: can't connect to remote host (10.0.0.5): Connection refused\n"),
        Some(Reach::Refused)
    );
    assert_eq!(classify("exit=143\nTerminated\n"), Some(Reach::TimedOut));
    assert_eq!(classify("exit=1\nwget: bad address 'x'\n"), None);
    assert_eq!(classify("no exit line"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_flux_policies_hold_under_a_real_enforcer_across_nodes() {
    let mut rc = Cluster::start_with(ClusterOptions {
        enforce_network_policy: true,
    })
    .await
    .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    rc.install_in_cluster()
        .await
        .unwrap_or_else(|e| panic!("installing in the cluster: {e}"));
    let second = rc.add_node().await.expect("the second node");
    rc.kubectl(&["cordon", rc.node.name()]).expect("cordon");
    for ns in ["team-a", "team-b"] {
        rc.cp.create_namespace(ns).await.expect("namespace");
    }
    let policies = rc
        .kubectl(&["get", "networkpolicy", "-n", FLUX_NAMESPACE, "-o", "name"])
        .expect("policies");
    for p in [
        "allow-egress",
        "allow-scraping",
        "allow-webhooks",
        "allow-pulumi-fetch-flux-artifacts",
    ] {
        assert!(
            policies.contains(&format!("networkpolicy.networking.k8s.io/{p}")),
            "{policies}"
        );
    }

    let cp = &rc.cp;
    let fx = FluxFixture::in_cluster(cp, "npflux", rc.network.gateway()).await;
    let program = "name: e2e-np\nruntime: yaml\noutputs:\n  greeting: hello\n";
    let sha = fx
        .repo
        .commit(&[("app/Pulumi.yaml", program)], "one")
        .expect("commit");
    fx.apply_git_repository(cp).await;
    let artifact = fx.wait_revision(cp, &sha).await;
    let url = artifact["url"].as_str().expect("artifact url").to_string();
    assert!(
        url.starts_with("http://source-controller.flux-system.svc.cluster.local."),
        "{url}"
    );
    let mut probes = Probes {
        rc: &rc,
        node: second.clone(),
        count: 0,
    };

    // config/flux (every namespace): workspace pods anywhere get the artifact; other pods are
    // turned away by Flux's own policy.
    probes
        .expect(
            "a workspace pod in another namespace",
            "team-b",
            workspace_labels(),
            &url,
            Reach::Connected,
        )
        .await;
    assert_eq!(
        probes.probe("team-b", no_labels(), &url).await,
        Reach::Refused,
        "a pod without the workspace label"
    );

    // The Stack's namespace denies ingress by default, with config/flux/workspace-rpc applied
    // as the README says: the operator (first node) still drives the agent (second node),
    // which fetched from source-controller (first node).
    cp.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: default-deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
        "default deny",
        "default",
    )
    .await
    .expect("default deny");
    let rpc = e2e::control_plane::repo_root()
        .join("config/flux/workspace-rpc")
        .display()
        .to_string();
    let rpc_policy = |verb: &str| {
        let mut args = vec![verb, "-n", "default", "-k", &rpc];
        if verb == "apply" {
            args.push("--server-side");
        }
        rc.kubectl(&args)
            .unwrap_or_else(|e| panic!("kubectl {verb} workspace-rpc: {e}"));
    };
    rpc_policy("apply");
    let state = operator::shared_state();
    cp.apply_yaml(
        &stack_yaml_with(
            "app",
            (&rc.images.pulumi, state.path()),
            flux_ref("npflux", "app"),
        ),
        "stack",
        "default",
    )
    .await
    .expect("stack");
    let stack = real_node::wait_ready_after_success(&rc, "app").await;
    assert_eq!(stack["status"]["outputs"], json!({"greeting": "hello"}));
    let node_of = |ns: &str, selector: &str| {
        rc.kubectl(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .expect("pods")
    };
    assert_eq!(
        node_of("default", "auto.pulumi.com/component=workspace"),
        second
    );
    assert_eq!(
        node_of(OPERATOR_NAMESPACE, "control-plane=controller-manager"),
        rc.node.name()
    );
    assert_eq!(
        node_of(FLUX_NAMESPACE, "app=source-controller"),
        rc.node.name()
    );

    // Nobody else reaches the agent: not a pod of the Stack's namespace, not a pod of the
    // operator's namespace without the operator's labels.
    let ip = rc
        .kubectl(&[
            "get",
            "pod",
            "app-workspace-0",
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .expect("the workspace pod's IP");
    let agent = format!("http://{ip}:50051/");
    for ns in ["default", OPERATOR_NAMESPACE] {
        assert_eq!(
            probes.probe(ns, no_labels(), &agent).await,
            Reach::Refused,
            "a pod in {ns} reaching the agent"
        );
    }

    // Without config/flux/workspace-rpc, the namespace's default deny keeps the operator from
    // the agent too: the Workspace says so (ConnectionFailed, a ConnectionFailure event each
    // time) and the next revision waits; with the policy back, it is deployed.
    rpc_policy("delete");
    let second_sha = fx
        .repo
        .commit(
            &[("app/Pulumi.yaml", &program.replace("hello", "bonjour"))],
            "two",
        )
        .expect("commit");
    fx.request_reconcile(cp).await;
    fx.wait_revision(cp, &second_sha).await;
    let refused = wait_for(
        Duration::from_secs(180),
        "the Workspace to say the agent cannot be reached",
        || async {
            let ws = get_json(cp, &workspaces(), "default", "app").await?;
            let ready = condition(&ws, "Ready")?;
            let events = events_for(cp, "default", "Workspace", "app").await;
            (ready["reason"] == "ConnectionFailed"
                && events
                    .iter()
                    .any(|(t, r, _)| t == "Warning" && r == "ConnectionFailure"))
            .then_some(ready)
        },
    )
    .await;
    assert_eq!(refused["status"], "False", "{refused:#}");
    let stack = get_json(cp, &stacks(), "default", "app")
        .await
        .expect("the Stack");
    assert_eq!(stack["status"]["outputs"], json!({"greeting": "hello"}));
    rpc_policy("apply");
    real_node::wait_stack(
        &rc,
        "app",
        Duration::from_secs(240),
        "the second revision deployed",
        |s| s["status"]["outputs"] == json!({"greeting": "bonjour"}),
    )
    .await;

    // The restricted variant admits only the namespaces it lists (default and team-a).
    let flux = e2e::control_plane::repo_root().join("config/flux");
    rc.kubectl(&["delete", "-k", &flux.display().to_string()])
        .expect("delete config/flux");
    rc.kubectl(&[
        "apply",
        "--server-side",
        "-k",
        &flux.join("selected-namespaces").display().to_string(),
    ])
    .expect("selected-namespaces");
    probes
        .expect(
            "a workspace pod in a namespace not listed",
            "team-b",
            workspace_labels(),
            &url,
            Reach::Refused,
        )
        .await;
    assert_eq!(
        probes.probe("team-a", workspace_labels(), &url).await,
        Reach::Connected,
        "a workspace pod in a listed namespace"
    );
}
