//! Our Helm chart (`config/helm/pulumi-operator`): `helm lint --strict` and `helm template`
//! check what it renders (the RBAC is exactly the operator's calls, as `config/rbac`; what
//! `config/default` installs is there; every key of PKO v2.9.0's `values.yaml` is accepted
//! and does what it did), and on a real node `helm install` brings the operator up and the
//! sample Stack to Ready, and `helm upgrade` with a changed value rolls the Deployment, whose
//! new pod carries on.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::cluster::tool_dir;
use e2e::control_plane::{documents, repo_root};
use e2e::in_cluster::wait_available;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use operator::api::names::operator as op;
use operator::rbac::Scope;
use serde_json::{Value, json};

use support::real_node::{self, RealCluster};
use support::{FluxFixture, helm, rbac};

const RELEASE: &str = "pulumi-kubernetes-operator";
const NAMESPACE: &str = "pulumi-kubernetes-operator";
/// The chart's full name for [`RELEASE`] (the release name contains the chart's name).
const FULLNAME: &str = "pulumi-kubernetes-operator";

fn chart() -> PathBuf {
    repo_root().join("config/helm/pulumi-operator")
}

/// A directory for helm's homes that lives as long as the test.
fn helm_home() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// `helm template` of the chart as release [`RELEASE`] in [`NAMESPACE`], with `args` added.
fn template(args: &[&str]) -> Vec<Value> {
    let home = helm_home();
    let chart = chart().display().to_string();
    let mut all = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE];
    all.extend_from_slice(args);
    let out = helm::run(home.path(), None, &all).unwrap_or_else(|e| panic!("{e}"));
    documents(&out, "helm template").unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in what the chart renders"))
}

fn manager(docs: &[Value]) -> &Value {
    let d = find(
        docs,
        "Deployment",
        &format!("{FULLNAME}-controller-manager"),
    );
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "manager"))
        .expect("the manager container")
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap_or_default().to_string())
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an argument").to_string())
        .collect()
}

/// PKO v2.9.0's chart, as the `pko` tool keeps it.
fn pko_chart() -> PathBuf {
    tool_dir("pko", "pulumi-kubernetes-agent")
        .expect("PKO's snapshot (tool pko)")
        .join("chart")
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_json::to_value(v).expect("JSON")
}

/// The key paths of a values tree, maps only (`a.b.c`).
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(path.clone());
            key_paths(child, &path, out);
        }
    }
}

#[test]
fn helm_lint_passes_strictly_with_our_values_and_with_pkos() {
    let home = helm_home();
    let chart = chart().display().to_string();
    let ours = helm::run(home.path(), None, &["lint", "--strict", &chart]);
    assert!(ours.is_ok(), "{}", ours.unwrap_or_else(|e| e));
    let pko_values = pko_chart().join("values.yaml").display().to_string();
    let theirs = helm::run(
        home.path(),
        None,
        &["lint", "--strict", &chart, "-f", &pko_values],
    );
    assert!(theirs.is_ok(), "{}", theirs.unwrap_or_else(|e| e));
}

#[test]
fn the_chart_grants_exactly_the_calls_the_operator_makes() {
    let docs = template(&[]);
    let sa = FULLNAME;
    find(&docs, "ServiceAccount", sa);
    let mut granted = rbac::grants(
        find(
            &docs,
            "ClusterRole",
            &format!("{FULLNAME}-controller-manager"),
        ),
        Scope::Cluster,
    );
    granted.extend(rbac::grants(
        find(&docs, "Role", &format!("{FULLNAME}-leader-election-role")),
        Scope::OperatorNamespace,
    ));
    rbac::assert_exact(&granted, &rbac::needed(sa), "the chart");
    for (kind, name) in [
        ("ClusterRoleBinding", FULLNAME.to_string()),
        (
            "RoleBinding",
            format!("{FULLNAME}-leader-election-rolebinding"),
        ),
    ] {
        let b = find(&docs, kind, &name);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}])
        );
    }
    // PKO's `rbac.extraRules` are added to the manager's role.
    let extra = template(&[
        "--set",
        "rbac.extraRules[0].apiGroups[0]=example.com",
        "--set",
        "rbac.extraRules[0].resources[0]=things",
        "--set",
        "rbac.extraRules[0].verbs[0]=get",
    ]);
    let role = find(
        &extra,
        "ClusterRole",
        &format!("{FULLNAME}-controller-manager"),
    );
    assert!(
        rbac::grants(role, Scope::Cluster).contains(&(
            "Cluster".into(),
            "example.com".into(),
            "things".into(),
            "get".into(),
            String::new()
        )),
        "{role:#}"
    );
}

#[test]
fn the_chart_installs_what_config_default_installs() {
    let docs = template(&["--include-crds"]);
    // The CRDs are the generated files (crds/ is written by crdgen; operator/tests/crds.rs
    // keeps it equal to the types).
    let crds: BTreeSet<String> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let bases: BTreeSet<String> = std::fs::read_dir(repo_root().join("config/crd/bases"))
        .expect("config/crd/bases")
        .map(|e| {
            let v = yaml_file(&e.expect("entry").path());
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(crds, bases);

    // The same kinds of objects as config/rbac and config/manager (the namespace aside: helm
    // installs into one, `--create-namespace` makes it).
    let mut config_kinds = BTreeSet::new();
    for dir in ["rbac", "manager"] {
        for e in std::fs::read_dir(repo_root().join("config").join(dir)).expect("config") {
            let path = e.expect("entry").path();
            if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for d in documents(&text, "config").expect("YAML") {
                config_kinds.insert(d["kind"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let kinds: BTreeSet<String> = docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, config_kinds);

    // The operator runs as config/manager runs it.
    let c = manager(&docs);
    let a = args(c);
    for flag in [
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8383",
        "--metrics-secure=true",
        "--program-fs-addr=:9090",
        "--program-fs-adv-addr=pulumi-kubernetes-operator.$(POD_NAMESPACE):80",
    ] {
        assert!(a.iter().any(|x| x == flag), "{flag} in {a:?}");
    }
    for name in ["POD_NAME", "POD_NAMESPACE", "POD_SA_NAME"] {
        assert!(
            c["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == name),
            "{name}"
        );
    }
    let image = "ghcr.io/example/pulumi-flux-operator:0.1.0";
    assert_eq!(c["image"], image);
    assert_eq!(env(c, "AGENT_IMAGE").as_deref(), Some(image));
    assert_eq!(
        env(c, "FETCH_IMAGE").as_deref(),
        Some(image),
        "fetch runs from the operator image, which holds it"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let d = find(
        &docs,
        "Deployment",
        &format!("{FULLNAME}-controller-manager"),
    );
    let pod = &d["spec"]["template"];
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let (k, v) = op::POD_LABEL;
    assert_eq!(
        pod["metadata"]["labels"][k], v,
        "config/flux's NetworkPolicies select the operator by {k}={v}"
    );
    // PKO's selector: immutable, so a PKO release upgrades in place.
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "pulumi-kubernetes-operator",
               "app.kubernetes.io/instance": RELEASE})
    );
    let svc = find(&docs, "Service", FULLNAME);
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn every_key_of_pkos_values_is_accepted_and_does_what_it_did() {
    let pko = yaml_file(&pko_chart().join("values.yaml"));
    let ours = yaml_file(&chart().join("values.yaml"));
    let (mut theirs, mut mine) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&pko, "", &mut theirs);
    key_paths(&ours, "", &mut mine);
    // Free-form maps in both (their example content differs, not their meaning).
    let free_form = ["resources.", "securityContext.", "podSecurityContext."];
    let missing: Vec<&String> = theirs
        .difference(&mine)
        .filter(|k| !free_form.iter().any(|f| k.starts_with(f)))
        .collect();
    assert!(missing.is_empty(), "PKO's values we lack: {missing:?}");

    // PKO's values.yaml as a user's values file renders, and its settings land where PKO's
    // chart puts them.
    let pko_values = pko_chart().join("values.yaml").display().to_string();
    let docs = template(&["-f", &pko_values]);
    let c = manager(&docs);
    assert_eq!(
        c["image"], "docker.io/pulumi/pulumi-kubernetes-operator:0.1.0",
        "PKO's image keys"
    );
    assert_eq!(c["resources"], pko["resources"]);
    let docs = template(&[
        "--set",
        "controller.logLevel=debug",
        "--set",
        "controller.logFormat=json",
        "--set",
        "controller.metricsSecure=false",
        "--set",
        "controller.advertisedAddress=ops.example",
        "--set",
        "flux.maxUntarSizeBytes=-1",
        "--set",
        "leaderElection.leaseDuration=120s",
        "--set",
        "kubeAPI.timeout=60s",
        "--set",
        "extraEnv[0].name=PULUMI_K8S_EXTRA,extraEnv[0].value=x",
        "--set",
        "serviceAccount.name=ops",
        "--set",
        "replicaCount=2",
        "--set",
        "podLabels.team=infra",
        "--set",
        "deploymentStrategy=Recreate",
        "--set",
        "terminationGracePeriodSeconds=30",
        "--set",
        "rbac.createClusterAggregationRoles=false",
        "--set",
        "image.tag=v9",
        "--set",
        "image.pullPolicy=Always",
    ]);
    let c = manager(&docs);
    let a = args(c);
    for flag in [
        "--zap-log-level=debug",
        "--zap-encoder=json",
        "--metrics-secure=false",
        "--program-fs-adv-addr=ops.example:80",
    ] {
        assert!(a.iter().any(|x| x == flag), "{flag} in {a:?}");
    }
    assert_eq!(env(c, "FLUX_MAX_UNTAR_SIZE_BYTES").as_deref(), Some("-1"));
    assert_eq!(
        env(c, "LEADER_ELECTION_LEASE_DURATION").as_deref(),
        Some("120s")
    );
    assert_eq!(env(c, "KUBE_API_TIMEOUT").as_deref(), Some("60s"));
    assert_eq!(env(c, "PULUMI_K8S_EXTRA").as_deref(), Some("x"));
    assert_eq!(env(c, "AGENT_IMAGE_PULL_POLICY").as_deref(), Some("Always"));
    assert_eq!(
        env(c, "AGENT_IMAGE").as_deref(),
        Some("ghcr.io/example/pulumi-flux-operator:v9")
    );
    let d = find(
        &docs,
        "Deployment",
        &format!("{FULLNAME}-controller-manager"),
    );
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], "ops");
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["team"], "infra");
    find(&docs, "ServiceAccount", "ops");
    let token = find(&docs, "Role", &format!("{FULLNAME}-leader-election-role"));
    assert!(
        rbac::grants(token, Scope::OperatorNamespace)
            .iter()
            .any(|g| g.2 == "serviceaccounts/token" && g.4 == "ops"),
        "the operator may mint a token for the account it runs as: {token:#}"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == format!("{FULLNAME}-view")),
        "rbac.createClusterAggregationRoles=false"
    );

    // Ours: the fetch image.
    let docs = template(&["--set", "fetch.image=reg.example/fetch:1"]);
    assert_eq!(
        env(manager(&docs), "FETCH_IMAGE").as_deref(),
        Some("reg.example/fetch:1")
    );
}

#[test]
fn watch_namespaces_turn_the_cluster_role_into_roles_in_those_namespaces() {
    // A namespace-scoped install: nothing cluster-wide (the CRDs aside, from crds/).
    let docs = template(&[
        "--set",
        "controller.watchNamespaces={team-a,team-b}",
        "--set",
        "rbac.createClusterRole=false",
        "--set",
        "rbac.createClusterAggregationRoles=false",
        "--set",
        "controller.metricsSecure=false",
    ]);
    let cluster_wide: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
        .map(|d| d["metadata"]["name"].to_string())
        .collect();
    assert!(cluster_wide.is_empty(), "{cluster_wide:?}");
    let needed = rbac::in_a_namespace(&rbac::needed(FULLNAME));
    for ns in ["team-a", "team-b"] {
        let in_ns: Vec<&Value> = docs
            .iter()
            .filter(|d| d["metadata"]["namespace"] == ns)
            .collect();
        let role = in_ns
            .iter()
            .find(|d| d["kind"] == "Role")
            .unwrap_or_else(|| panic!("a Role in {ns}"));
        rbac::assert_exact(&rbac::grants(role, Scope::Cluster), &needed, ns);
        let binding = in_ns
            .iter()
            .find(|d| d["kind"] == "RoleBinding")
            .unwrap_or_else(|| panic!("a RoleBinding in {ns}"));
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
        );
    }
    find(&docs, "Role", &format!("{FULLNAME}-leader-election-role"));
    let a = args(manager(&docs));
    for flag in ["--watch-namespace=team-a,team-b", "--metrics-secure=false"] {
        assert!(a.iter().any(|x| x == flag), "{flag} in {a:?}");
    }

    // With secure metrics (the default), the one cluster-wide grant left is theirs.
    let docs = template(&["--set", "controller.watchNamespaces={team-a}"]);
    let role = find(
        &docs,
        "ClusterRole",
        &format!("{FULLNAME}-controller-manager"),
    );
    let groups: BTreeSet<String> = rbac::grants(role, Scope::Cluster)
        .into_iter()
        .map(|g| g.1)
        .collect();
    assert_eq!(
        groups,
        ["authentication.k8s.io", "authorization.k8s.io"]
            .map(String::from)
            .into()
    );

    // The other tenancy values are the operator's flags.
    let docs = template(&[
        "--set",
        "controller.watchLabelSelector=sharding.fluxcd.io/key=shard1",
        "--set",
        "controller.defaultServiceAccount=pulumi",
        "--set",
        "controller.noCrossNamespaceRefs=true",
    ]);
    let a = args(manager(&docs));
    for flag in [
        "--watch-label-selector=sharding.fluxcd.io/key=shard1",
        "--default-service-account=pulumi",
        "--no-cross-namespace-refs",
    ] {
        assert!(a.iter().any(|x| x == flag), "{flag} in {a:?}");
    }
    assert!(
        !a.iter().any(|x| x.starts_with("--watch-namespace")),
        "{a:?}"
    );
}

/// What the operator pod of the release runs: (pod name, its args), of the one pod that is
/// Ready and not being deleted.
async fn operator_pod(rc: &RealCluster) -> Option<(String, Vec<String>)> {
    let pods: Api<Pod> = Api::namespaced(rc.cp.client(), NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .ok()?;
    let ready: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    if list.items.len() != 1 || ready.len() != 1 {
        return None;
    }
    let p = ready[0];
    let args = p
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "manager")?
        .args
        .clone()?;
    Some((p.metadata.name.clone()?, args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_sample_stack_and_helm_upgrade_rolls_the_operator() {
    let mut rc = real_node::start_with_dependencies().await;
    let chart = chart();
    helm::install(&rc, RELEASE, &chart, NAMESPACE, &[]).unwrap_or_else(|e| panic!("{e}"));
    let deployment = format!("{FULLNAME}-controller-manager");
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    wait_available(
        &rc.cp,
        &mut rc.node,
        NAMESPACE,
        &deployment,
        &selector,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("our chart: {e}"));

    // The sample Stack (config/samples), its source and image made local.
    let samples = repo_root().join("config/samples");
    rc.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &samples.join("service_account.yaml").display().to_string(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(samples.join("flux_source_stack.yaml")).expect("sample");
    let mut stack = documents(&text, "flux_source_stack.yaml")
        .expect("YAML")
        .into_iter()
        .find(|d| d["kind"] == "Stack")
        .expect("the sample's Stack");
    let name = stack["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let dir = stack["spec"]["fluxSource"]["dir"]
        .as_str()
        .expect("dir")
        .to_string();
    let fx = FluxFixture::in_cluster(&rc.cp, "chart-sample", rc.network.gateway()).await;
    let program =
        |greeting: &str| format!("name: sample\nruntime: yaml\noutputs:\n  greeting: {greeting}\n");
    let first = fx
        .repo
        .commit(
            &[(&format!("{dir}/Pulumi.yaml"), &program("installed by helm"))],
            "sample",
        )
        .expect("commit");
    fx.apply_git_repository(&rc.cp).await;
    fx.wait_revision(&rc.cp, &first).await;
    stack["spec"]["fluxSource"]["sourceRef"]["name"] = json!("chart-sample");
    stack["spec"]["workspaceTemplate"]["spec"]["image"] = json!(rc.images.pulumi);
    rc.cp
        .apply_yaml(&stack.to_string(), "the sample Stack", "default")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = real_node::wait_ready_after_success(&rc, &name).await;
    assert_eq!(
        s["status"]["outputs"]["greeting"], "installed by helm",
        "{s:#}"
    );

    // A changed value rolls the Deployment: a new pod with the new command line replaces the
    // old one, and it carries on (the next revision deploys).
    let (before, args_before) = operator_pod(&rc).await.expect("one Ready operator pod");
    assert!(
        args_before.iter().any(|a| a == "--zap-log-level=info"),
        "{args_before:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(rc.cp.client(), NAMESPACE);
    let generation = deployments
        .get(&deployment)
        .await
        .expect("Deployment")
        .metadata
        .generation;
    helm::on(
        &rc,
        &[
            "upgrade",
            RELEASE,
            &chart.display().to_string(),
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "controller.logLevel=debug",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let after = deployments
        .get(&deployment)
        .await
        .expect("Deployment")
        .metadata
        .generation;
    assert!(
        after > generation,
        "the upgrade changed the pod template: {generation:?} → {after:?}"
    );
    let (now, args_now) = support::wait_for(
        Duration::from_secs(120),
        "the rolled operator pod",
        || async { operator_pod(&rc).await.filter(|(pod, _)| *pod != before) },
    )
    .await;
    assert!(
        args_now.iter().any(|a| a == "--zap-log-level=debug"),
        "{now}: {args_now:?}"
    );
    let second = fx
        .repo
        .commit(
            &[(&format!("{dir}/Pulumi.yaml"), &program("upgraded by helm"))],
            "next",
        )
        .expect("commit");
    fx.request_reconcile(&rc.cp).await;
    fx.wait_revision(&rc.cp, &second).await;
    let s = real_node::wait_stack(
        &rc,
        &name,
        Duration::from_secs(240),
        "the next revision deployed",
        |s| s["status"]["outputs"]["greeting"] == "upgraded by helm",
    )
    .await;
    assert_eq!(
        s["status"]["lastUpdate"]["lastSuccessfulCommit"],
        format!("main@sha1:{second}"),
        "{s:#}"
    );
    let log = rc
        .kubectl(&["logs", "-n", NAMESPACE, &format!("deploy/{deployment}")])
        .unwrap_or_else(|e| e);
    let forbidden: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC covers every call:\n{}",
        forbidden.join("\n")
    );
}
