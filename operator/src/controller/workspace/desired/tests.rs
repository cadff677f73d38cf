use super::*;
use crate::api::workspace::{
    EmbeddedObjectMeta, EmbeddedPodTemplateSpec, EmbeddedServiceTemplate, FluxSource, GitAuth,
    GitSource, LocalSource, ProjectInfo,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};

fn workspace(spec: WorkspaceSpec) -> Workspace {
    let mut ws = Workspace::new("app", spec);
    ws.metadata.namespace = Some("team".into());
    ws.metadata.uid = Some("uid-1".into());
    ws.metadata.generation = Some(3);
    ws
}

fn flux() -> WorkspaceSpec {
    WorkspaceSpec {
        flux: Some(FluxSource {
            url: Some("http://sc/a.tar.gz".into()),
            digest: Some("sha256:abc".into()),
            dir: Some("infra".into()),
        }),
        ..Default::default()
    }
}

fn pod_spec(ws: &Workspace) -> PodSpec {
    statefulset(ws, &Settings::default())
        .expect("statefulset")
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
}

fn container<'a>(cs: &'a [Container], name: &str) -> &'a Container {
    cs.iter().find(|c| c.name == name).expect("container")
}

#[test]
fn a_flux_workspace_gets_bootstrap_fetch_and_the_agent() {
    let ws = workspace(flux());
    let sts = statefulset(&ws, &Settings::default()).expect("statefulset");
    assert_eq!(sts.metadata.name.as_deref(), Some("app-workspace"));
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.service_name.as_deref(), Some("app-workspace"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.replicas, Some(1));
    let owner = &sts.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Workspace", Some(true))
    );

    let p = pod_spec(&ws);
    let init = p.init_containers.as_ref().expect("init");
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["bootstrap", "fetch"]
    );
    assert_eq!(
        init[0].command.as_deref(),
        Some(
            &[
                "/agent".to_string(),
                "bootstrap".into(),
                "/share/agent".into()
            ][..]
        )
    );
    let fetch = &init[1];
    assert_eq!(
        fetch.image.as_deref(),
        Some(crate::controller::settings::DEFAULT_AGENT_IMAGE),
        "the agent's image carries /fetch too"
    );
    assert_eq!(fetch.args.as_ref().expect("args")[0], "flux");
    let env = env_map(fetch.env.as_deref().unwrap_or_default());
    assert_eq!(env["FLUX_URL"].as_deref(), Some("http://sc/a.tar.gz"));
    assert_eq!(env["FLUX_DIGEST"].as_deref(), Some("sha256:abc"));
    assert_eq!(env["FLUX_DIR"].as_deref(), Some("infra"));
    assert_eq!(env["PULUMI_ENV"].as_deref(), Some("/share/.env"));

    let main = container(&p.containers, "pulumi");
    assert_eq!(main.image.as_deref(), Some("pulumi/pulumi:latest-nonroot"));
    assert_eq!(main.working_dir.as_deref(), Some("/share/workspace"));
    let cmd = main.command.as_ref().expect("command").join(" ");
    assert!(
        cmd.starts_with("/share/agent serve --workspace /share/workspace --skip-install"),
        "{cmd}"
    );
    assert!(cmd.contains("--kube-audience app.team"), "{cmd}");
    assert!(!cmd.contains("--pulumi-log-level"), "{cmd}");
    let requests = main
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["memory"].0, "64Mi");
    assert_eq!(p.service_account_name.as_deref(), Some("default"));
    assert_eq!(p.termination_grace_period_seconds, Some(600));
    let sc = p.security_context.as_ref().expect("pod security");
    assert_eq!(
        (sc.run_as_non_root, sc.run_as_user),
        (Some(true), Some(1000))
    );
    for c in init.iter().chain(p.containers.iter()) {
        let csc = c.security_context.as_ref().expect("container security");
        assert_eq!(csc.allow_privilege_escalation, Some(false), "{}", c.name);
    }
}

#[test]
fn baseline_profile_keeps_only_seccomp_and_the_root_image() {
    let ws = workspace(WorkspaceSpec {
        security_profile: Some(SecurityProfile::Baseline),
        ..flux()
    });
    let p = pod_spec(&ws);
    let sc = p.security_context.as_ref().expect("pod security");
    assert_eq!(sc.run_as_non_root, None);
    assert!(sc.seccomp_profile.is_some());
    assert!(p.containers[0].security_context.is_none());
    assert_eq!(
        p.containers[0].image.as_deref(),
        Some("pulumi/pulumi:latest")
    );
}

#[test]
fn git_credentials_come_from_secret_refs_never_values() {
    let sel = |key: &str| {
        Some(SecretKeySelector {
            name: "creds".into(),
            key: key.into(),
            optional: Some(true),
        })
    };
    let ws = workspace(WorkspaceSpec {
        git: Some(GitSource {
            url: Some("https://git.example.com/r.git".into()),
            git_ref: Some("a".repeat(40)),
            dir: Some("stack".into()),
            shallow: Some(true),
            auth: Some(GitAuth {
                token: sel("accessToken"),
                ..Default::default()
            }),
        }),
        ..Default::default()
    });
    let p = pod_spec(&ws);
    let fetch = container(p.init_containers.as_deref().unwrap_or_default(), "fetch");
    assert_eq!(fetch.args.as_ref().expect("args")[0], "git");
    let env = fetch.env.as_ref().expect("env");
    let token = env
        .iter()
        .find(|e| e.name == "GIT_TOKEN")
        .expect("token env");
    assert!(token.value.is_none());
    let r = token
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("ref");
    assert_eq!((r.name.as_str(), r.key.as_str()), ("creds", "accessToken"));
    let env = env_map(env);
    assert_eq!(env["GIT_SHALLOW"].as_deref(), Some("true"));
    assert_eq!(env["GIT_DIR"].as_deref(), Some("stack"));
    assert!(!env.contains_key("GIT_USERNAME"));
}

#[test]
fn local_and_project_info_sources_use_the_agent_image() {
    let ws = workspace(WorkspaceSpec {
        local: Some(LocalSource {
            dir: Some("/app/infra".into()),
        }),
        ..Default::default()
    });
    let p = pod_spec(&ws);
    let fetch = container(p.init_containers.as_deref().unwrap_or_default(), "fetch");
    assert_eq!(
        fetch.command.as_ref().expect("cmd")[..2],
        ["/agent", "link"]
    );
    let ws = workspace(WorkspaceSpec {
        project_info: Some(ProjectInfo {
            name: "app".into(),
            runtime: "yaml".into(),
        }),
        flux: flux().flux,
        ..Default::default()
    });
    let p = pod_spec(&ws);
    let fetch = container(p.init_containers.as_deref().unwrap_or_default(), "fetch");
    assert_eq!(
        fetch.command.as_ref().expect("cmd")[1],
        "init-project",
        "projectInfo wins"
    );
}

#[test]
fn no_source_is_an_error_unless_the_template_brings_an_init_container() {
    let ws = workspace(WorkspaceSpec::default());
    assert!(matches!(
        statefulset(&ws, &Settings::default()),
        Err(DesiredError::NoSource)
    ));
    let ws = workspace(WorkspaceSpec {
        pod_template: Some(EmbeddedPodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                init_containers: Some(vec![Container {
                    name: "custom-fetch".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }),
        ..Default::default()
    });
    let p = pod_spec(&ws);
    let init = p.init_containers.expect("init");
    assert_eq!(init[1].name, "custom-fetch");
    assert_eq!(
        env_map(init[1].env.as_deref().unwrap_or_default())["PULUMI_ENV"].as_deref(),
        Some("/share/.env"),
        "the user's containers get PULUMI_ENV too"
    );
}

#[test]
fn the_pod_template_merges_but_system_labels_and_the_hash_win() {
    let ws = workspace(WorkspaceSpec {
        pulumi_log_level: Some(10),
        pod_template: Some(EmbeddedPodTemplateSpec {
            metadata: Some(EmbeddedObjectMeta {
                labels: Some(BTreeMap::from([
                    ("team".into(), "a".into()),
                    (label::WORKSPACE_NAME.into(), "evil".into()),
                ])),
                annotations: None,
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "pulumi".into(),
                    image: Some("my/pulumi:3".into()),
                    env: Some(vec![EnvVar {
                        name: "EXTRA".into(),
                        value: Some("1".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }),
        ..flux()
    });
    let sts = statefulset(&ws, &Settings::default()).expect("sts");
    let tpl = sts.spec.expect("spec").template;
    let labels_ = tpl
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert_eq!(labels_["team"], "a");
    assert_eq!(labels_[label::WORKSPACE_NAME], "app");
    let p = tpl.spec.expect("pod");
    let main = container(&p.containers, "pulumi");
    assert_eq!(main.image.as_deref(), Some("my/pulumi:3"));
    let env = env_map(main.env.as_deref().unwrap_or_default());
    assert!(
        env.contains_key("EXTRA") && env.contains_key("POD_NAMESPACE"),
        "{env:?}"
    );
    assert!(
        main.command
            .as_ref()
            .expect("cmd")
            .join(" ")
            .ends_with("--pulumi-log-level 10")
    );
}

#[test]
fn the_revision_hash_follows_the_source_not_the_configuration() {
    let a = workspace(flux());
    let mut b = a.clone();
    assert_eq!(revision_hash(&a), revision_hash(&b));
    b.spec.flux.as_mut().expect("flux").digest = Some("sha256:def".into());
    assert_ne!(revision_hash(&a), revision_hash(&b));
    // A config change (a new generation) is applied to the running pod: same hash, same pod.
    let mut c = a.clone();
    c.metadata.generation = Some(4);
    c.spec.stacks = Some(vec![crate::api::workspace::WorkspaceStack {
        name: "dev".into(),
        config: Some(vec![crate::api::workspace::ConfigItem {
            key: "k".into(),
            value: Some(serde_json::json!("v2")),
            ..Default::default()
        }]),
        ..Default::default()
    }]);
    assert_eq!(revision_hash(&a), revision_hash(&c));
    assert_eq!(
        statefulset(&a, &Settings::default()).expect("sts").spec,
        statefulset(&c, &Settings::default()).expect("sts").spec,
        "the pod template does not carry the configuration"
    );
}

#[test]
fn the_service_is_headless_with_template_labels_under_system_ones() {
    let ws = workspace(WorkspaceSpec {
        service_template: Some(EmbeddedServiceTemplate {
            metadata: Some(EmbeddedObjectMeta {
                labels: Some(BTreeMap::from([
                    ("x".into(), "y".into()),
                    (label::AUTO_COMPONENT.into(), "nope".into()),
                ])),
                annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
            }),
        }),
        ..flux()
    });
    let svc = service(&ws);
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ports.as_ref().expect("ports")[0].port, 50051);
    let l = svc.metadata.labels.as_ref().expect("labels");
    assert_eq!(
        (l["x"].as_str(), l[label::AUTO_COMPONENT].as_str()),
        ("y", "workspace")
    );
    assert_eq!(svc.metadata.annotations.as_ref().expect("ann")["a"], "b");
}

#[test]
fn the_share_volume_is_size_limited_and_a_template_can_change_the_limit() {
    let share = |p: &PodSpec| {
        p.volumes
            .iter()
            .flatten()
            .find(|v| v.name == pod::SHARE_VOLUME)
            .and_then(|v| v.empty_dir.clone())
            .expect("share emptyDir")
    };
    let limit = |p: &PodSpec| share(p).size_limit.map(|q| q.0);
    assert_eq!(
        limit(&pod_spec(&workspace(flux()))).as_deref(),
        Some(crate::controller::settings::DEFAULT_SHARE_SIZE_LIMIT)
    );
    let unlimited = Settings {
        share_size_limit: None,
        ..Settings::default()
    };
    let p = statefulset(&workspace(flux()), &unlimited)
        .expect("sts")
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    assert_eq!(limit(&p), None);
    let ws = workspace(WorkspaceSpec {
        pod_template: Some(EmbeddedPodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                volumes: Some(vec![k8s_openapi::api::core::v1::Volume {
                    name: pod::SHARE_VOLUME.into(),
                    empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource {
                        size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                            "20Gi".into(),
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }),
        ..flux()
    });
    assert_eq!(limit(&pod_spec(&ws)).as_deref(), Some("20Gi"));
}
