use super::*;
use crate::api::stack::StackSpecV1;
use crate::api::stack_spec::{
    BasicAuth, ConfigMapRef, LiteralRef, SecretSelector, StackSpec, WorkspaceApplyConfiguration,
};
use crate::api::workspace::WorkspaceSpec;

fn stack(spec: StackSpec) -> Stack {
    let mut s = Stack::new("app", StackSpecV1(spec));
    s.metadata.namespace = Some("team".into());
    s.metadata.uid = Some("s-uid".into());
    s
}

fn secret_ref(name: &str, key: &str, ns: Option<&str>) -> ResourceRef {
    ResourceRef {
        selector_type: ResourceSelectorType::Secret,
        secret: Some(SecretSelector {
            namespace: ns.map(str::to_string),
            name: name.into(),
            key: key.into(),
        }),
        ..Default::default()
    }
}

fn literal(v: &str) -> ResourceRef {
    ResourceRef {
        selector_type: ResourceSelectorType::Literal,
        literal: Some(LiteralRef { value: v.into() }),
        ..Default::default()
    }
}

fn artifact() -> Source {
    Source::Artifact {
        url: "http://sc/a.tar.gz".into(),
        digest: "sha256:ab".into(),
        dir: Some("infra".into()),
    }
}

fn spec_of(ws: &Workspace) -> &WorkspaceSpec {
    &ws.spec
}

#[test]
fn the_workspace_carries_identity_env_config_and_source() {
    let s = stack(StackSpec {
        stack: "org/app/dev".into(),
        backend: Some("file:///state".into()),
        access_token_secret: Some("tok".into()),
        service_account_name: Some("pulumi".into()),
        env_refs: Some(BTreeMap::from([
            ("B_LIT".into(), literal("b")),
            ("A_SECRET".into(), secret_ref("creds", "key", None)),
        ])),
        config: Some(json!({"region": "eu", "tags": {"a": 1}})),
        config_ref: Some(BTreeMap::from([(
            "fromcm".into(),
            ConfigMapRef {
                name: "cm".into(),
                key: "k".into(),
                json: Some(true),
            },
        )])),
        secrets_ref: Some(BTreeMap::from([
            ("pw".into(), secret_ref("db", "password", Some("team"))),
            ("lit".into(), literal("x")),
        ])),
        environment: Some(vec!["esc/env".into()]),
        secrets_provider: Some("passphrase".into()),
        use_local_stack_only: Some(true),
        ..Default::default()
    });
    let ws = desired_workspace(&s, &artifact()).expect("workspace");
    assert_eq!(ws.metadata.name.as_deref(), Some("app"));
    let labels = ws.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[label::STACK_NAME], "app");
    let owner = &ws.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Stack", Some(true))
    );
    let spec = spec_of(&ws);
    assert_eq!(spec.service_account_name.as_deref(), Some("pulumi"));
    let env: Vec<&str> = spec.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(
        env,
        [
            "PULUMI_BACKEND_URL",
            "PULUMI_ACCESS_TOKEN",
            "A_SECRET",
            "B_LIT"
        ],
        "envRefs sorted"
    );
    let flux = spec.flux.as_ref().expect("flux");
    assert_eq!(flux.dir.as_deref(), Some("infra"));
    let st = &spec.stacks.as_ref().expect("stacks")[0];
    assert_eq!(st.name, "org/app/dev");
    assert_eq!(st.create, Some(false));
    assert_eq!(st.secrets_provider.as_deref(), Some("passphrase"));
    let keys: Vec<(&str, Option<bool>)> = st
        .config
        .iter()
        .flatten()
        .map(|c| (c.key.as_str(), c.secret))
        .collect();
    assert_eq!(
        keys,
        [
            ("region", Some(false)),
            ("tags", Some(false)),
            ("fromcm", Some(false)),
            ("lit", Some(true)),
            ("pw", Some(true))
        ]
    );
    let pw = st
        .config
        .iter()
        .flatten()
        .find(|c| c.key == "pw")
        .expect("pw");
    assert_eq!(
        pw.value_from.as_ref().and_then(|v| v.path.as_deref()),
        Some("/var/run/secrets/stacks.pulumi.com/secrets/db/password")
    );
    let pod = spec
        .pod_template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .expect("pod");
    let vols: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(vols, ["configmap-cm", "secret-db"]);
    assert_eq!(
        pod.containers[0].volume_mounts.as_ref().map(Vec::len),
        Some(2)
    );
}

#[test]
fn env_and_fs_refs_and_foreign_secrets_are_refused_with_the_field() {
    let env_ref = ResourceRef {
        selector_type: ResourceSelectorType::Env,
        ..Default::default()
    };
    let s = stack(StackSpec {
        stack: "dev".into(),
        env_refs: Some(BTreeMap::from([("X".into(), env_ref)])),
        ..Default::default()
    });
    let e = desired_workspace(&s, &Source::None).unwrap_err();
    assert!(
        e.to_string().contains("spec.envRefs[X]") && e.to_string().contains("Env selectors"),
        "{e}"
    );
    let s = stack(StackSpec {
        stack: "dev".into(),
        secrets_ref: Some(BTreeMap::from([(
            "k".into(),
            secret_ref("s", "k", Some("other")),
        )])),
        ..Default::default()
    });
    let e = desired_workspace(&s, &Source::None).unwrap_err();
    assert!(matches!(e, SpecError::CrossNamespace { .. }), "{e}");
}

#[test]
fn the_default_account_is_for_stacks_that_name_none() {
    let account = |spec: StackSpec, default: Option<&str>| {
        let s = stack(spec);
        let mut ws = desired_workspace(&s, &Source::None).expect("workspace");
        with_default_account(&s, &mut ws, default);
        ws.spec.service_account_name
    };
    let none = StackSpec {
        stack: "dev".into(),
        ..Default::default()
    };
    assert_eq!(account(none.clone(), None).as_deref(), Some("default"));
    assert_eq!(
        account(none.clone(), Some("tenant")).as_deref(),
        Some("tenant")
    );
    let named = StackSpec {
        service_account_name: Some("own".into()),
        ..none.clone()
    };
    assert_eq!(account(named, Some("tenant")).as_deref(), Some("own"));
    let in_template = StackSpec {
        workspace_template: Some(WorkspaceApplyConfiguration {
            spec: Some(json!({"serviceAccountName": "templated"})),
            ..Default::default()
        }),
        ..none
    };
    assert_eq!(
        account(in_template, Some("tenant")).as_deref(),
        Some("templated")
    );
}

#[test]
fn the_template_merges_and_the_stack_log_level_wins() {
    let s = stack(StackSpec {
        stack: "dev".into(),
        pulumi_log_level: Some(10),
        envs: Some(vec!["cm-env".into()]),
        workspace_template: Some(WorkspaceApplyConfiguration {
            metadata: Some(json!({"labels": {"extra": "1", "pulumi.com/stack-name": "hijack"}})),
            spec: Some(json!({
                "image": "pulumi/pulumi:3.200.0-nonroot",
                "pulumiLogLevel": 3,
                "local": {"dir": "/app"},
                "env": [{"name": "EXTRA", "value": "1"}],
                "podTemplate": {"spec": {"containers": [{"name": "pulumi", "workingDir": "/w"}]}},
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ws = desired_workspace(&s, &Source::None).expect("workspace");
    let spec = spec_of(&ws);
    assert_eq!(spec.image.as_deref(), Some("pulumi/pulumi:3.200.0-nonroot"));
    assert_eq!(spec.pulumi_log_level, Some(10));
    assert_eq!(
        spec.local.as_ref().and_then(|l| l.dir.as_deref()),
        Some("/app")
    );
    assert_eq!(spec.env_from.as_ref().map(Vec::len), Some(1));
    let labels = ws.metadata.labels.as_ref().expect("labels");
    assert_eq!(
        (labels["extra"].as_str(), labels[label::STACK_NAME].as_str()),
        ("1", "app")
    );
    let pod = spec
        .pod_template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .expect("pod");
    assert_eq!(pod.containers[0].working_dir.as_deref(), Some("/w"));
}

#[test]
fn project_info_destroys_never_bring_a_source_back() {
    let s = stack(StackSpec {
        stack: "dev".into(),
        workspace_template: Some(WorkspaceApplyConfiguration {
            spec: Some(json!({"local": {"dir": "/app"}})),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ws = desired_workspace(
        &s,
        &Source::ProjectInfo(ProjectInfo {
            name: "p".into(),
            runtime: "yaml".into(),
        }),
    )
    .expect("workspace");
    assert!(ws.spec.local.is_none());
    assert_eq!(
        ws.spec.project_info.as_ref().map(|p| p.name.as_str()),
        Some("p")
    );
}

#[test]
fn git_auth_becomes_secret_selectors() {
    let s = stack(StackSpec {
        stack: "dev".into(),
        git_auth_secret: Some("legacy".into()),
        ..Default::default()
    });
    let a = workspace_git_auth(&s).expect("ok").expect("auth");
    assert_eq!(
        a.token.as_ref().map(|t| (t.key.as_str(), t.optional)),
        Some(("accessToken", Some(true)))
    );
    let s = stack(StackSpec {
        stack: "dev".into(),
        git_auth: Some(GitAuthConfig {
            basic_auth: Some(BasicAuth {
                user_name: secret_ref("git", "user", None),
                password: secret_ref("git", "pass", None),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let a = workspace_git_auth(&s).expect("ok").expect("auth");
    assert_eq!(a.username.as_ref().map(|u| u.key.as_str()), Some("user"));
    assert!(a.token.is_none());
    let s = stack(StackSpec {
        stack: "dev".into(),
        git_auth: Some(GitAuthConfig::default()),
        ..Default::default()
    });
    assert!(matches!(workspace_git_auth(&s), Err(SpecError::GitAuth(_))));
    let s = stack(StackSpec {
        stack: "dev".into(),
        git_auth: Some(GitAuthConfig {
            access_token: Some(literal("plain")),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(matches!(
        workspace_git_auth(&s),
        Err(SpecError::Unsupported {
            kind: "Literal",
            ..
        })
    ));
}

#[test]
fn what_pkos_schema_admits_and_means_nothing_is_refused_with_the_field() {
    // PKO's CRD takes any string as a reference's type and any JSON as config.
    let s: Stack = serde_json::from_value(json!({
        "apiVersion": "pulumi.com/v1", "kind": "Stack",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"stack": "dev", "envRefs": {"X": {"type": "secret", "secret": {"name": "s", "key": "k"}}}},
    }))
    .expect("read");
    let e = desired_workspace(&s, &Source::None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.envRefs[X]") && e.contains("type must be Secret or Literal"),
        "{e}"
    );
    for (config, kind) in [(json!("region=eu"), "a string"), (json!([1]), "a list")] {
        let s = stack(StackSpec {
            stack: "dev".into(),
            config: Some(config),
            ..Default::default()
        });
        let e = desired_workspace(&s, &Source::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.config") && e.contains(kind), "{e}");
    }
}
