//! The command line as PKO's manifests pass it, addresses, and the lease names.

use super::election::{lease_identity, lease_name};
use super::flags::{Flags, advertised, bind_addr, pko_argv};
use crate::controller::runtime::scope::Scope;

/// PKO v2.9.0's manager arguments: its chart (`deploy/helm/pulumi-operator`), its
/// kustomize base (`operator/config/manager`) and its quickstart install.yaml.
#[test]
fn pko_s_deployment_arguments_are_taken() {
    let chart = [
        "/operator",
        "/manager",
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8383",
        "--metrics-secure=false",
        "--program-fs-adv-addr=pulumi-kubernetes-operator.ns:80",
        "--zap-log-level=info",
        "--zap-encoder=json",
        "--zap-time-encoding=iso8601",
    ];
    let f = Flags::try_parse_pko(chart).expect("the chart's arguments parse");
    assert!(f.leader_elect());
    assert_eq!(f.metrics_bind_address, ":8383");
    assert_eq!(f.metrics_secure, Some(false));
    assert_eq!(f.program_fs_adv_addr, "pulumi-kubernetes-operator.ns:80");
    assert_eq!(f.zap_encoder.as_deref(), Some("json"));
    let quickstart = [
        "/operator",
        "/manager",
        "--metrics-bind-address=:8443",
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--enable-http2",
        "--metrics-secure",
        "--zap-devel=false",
        "--zap-stacktrace-level=error",
    ];
    let f = Flags::try_parse_pko(quickstart).expect("the quickstart's arguments parse");
    assert_eq!(
        (f.leader_elect(), f.metrics_secure, f.enable_http2),
        (true, Some(true), Some(true))
    );
    let go_style = [
        "/operator",
        "-leader-elect=false",
        "-leader-election-lease-duration",
        "1m30s",
    ];
    let f = Flags::try_parse_pko(go_style).expect("Go's single-dash flags parse");
    assert!(!f.leader_elect());
    assert_eq!(f.leader_election_lease_duration, "1m30s");
    let f = Flags::try_parse_pko(["/operator"]).expect("no arguments");
    assert!(!f.leader_elect());
}

#[test]
fn only_a_leading_program_name_is_dropped() {
    let argv = |a: &[&str]| {
        pko_argv(a.iter().copied())
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        argv(&["/operator", "/manager", "--leader-elect"]),
        ["/operator", "--leader-elect"]
    );
    assert_eq!(argv(&["/operator", "manager"]), ["/operator"]);
    assert_eq!(
        argv(&["/operator", "--leader-elect", "/manager"]),
        ["/operator", "--leader-elect", "/manager"]
    );
    assert_eq!(argv(&["/operator", "-h"]), ["/operator", "-h"]);
    let stray = Flags::try_parse_pko(["/operator", "/bin/sh"]).unwrap_err();
    assert_eq!(stray.kind(), clap::error::ErrorKind::UnknownArgument);
    let typo = Flags::try_parse_pko(["/operator", "--leader-elct"]).unwrap_err();
    assert_eq!(typo.kind(), clap::error::ErrorKind::UnknownArgument);
}

#[test]
fn the_tenancy_flags_take_fluxs_spellings() {
    let f = Flags::try_parse_pko([
        "/operator",
        "--watch-namespace=team-a,team-b",
        "--watch-namespace",
        "team-c",
        "--watch-label-selector=sharding.fluxcd.io/key=shard1",
        "--no-cross-namespace-refs",
        "--default-service-account=pulumi",
    ])
    .expect("parse");
    let scope = f.scope("ops").expect("scope");
    assert_eq!(
        scope.namespaces(),
        Some(&["team-a", "team-b", "team-c"].map(String::from)[..])
    );
    assert_eq!(scope.selector(), Some("sharding.fluxcd.io/key=shard1"));
    assert_eq!(f.no_cross_namespace_refs, Some(true));
    assert_eq!(f.default_service_account.as_deref(), Some("pulumi"));
    assert_ne!(lease_name(&scope), lease_name(&Scope::default()));
    assert_eq!(lease_name(&Scope::default()), "operator.pulumi.com");

    let own = Flags::try_parse_pko(["/operator", "-watch-all-namespaces=false"]).expect("parse");
    assert_eq!(
        own.scope("ops").expect("scope").namespaces(),
        Some(&["ops".to_string()][..])
    );
    let bad = Flags::try_parse_pko(["/operator", "--watch-namespace=Team"]).expect("parse");
    assert!(
        bad.scope("ops")
            .unwrap_err()
            .to_string()
            .contains("--watch-namespace")
    );
    let bad = Flags::try_parse_pko(["/operator", "--watch-label-selector=a b"]).expect("parse");
    assert!(
        bad.scope("ops")
            .unwrap_err()
            .to_string()
            .contains("--watch-label-selector")
    );
}

#[test]
fn lease_identities_differ_for_one_host_name() {
    let a = lease_identity(Some("pod".into()));
    let b = lease_identity(Some("pod".into()));
    assert!(a.starts_with("pod_") && b.starts_with("pod_"), "{a} {b}");
    assert_ne!(a, b);
    assert!(lease_identity(None).starts_with("operator_"));
}

#[test]
fn addresses_are_derived_as_pko_does() {
    assert_eq!(advertised("svc.ns:80", ":9090"), "svc.ns:80");
    assert_eq!(advertised("", ":9090"), "localhost:9090");
    assert_eq!(advertised("", "10.0.0.1:9090"), "10.0.0.1:9090");
    assert_eq!(
        bind_addr("f", ":8081").expect("ok"),
        Some("0.0.0.0:8081".parse().expect("addr"))
    );
    assert_eq!(bind_addr("f", "0").expect("ok"), None);
    assert!(bind_addr("f", "nonsense").is_err());
}
