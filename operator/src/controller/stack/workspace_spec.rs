//! The Workspace a Stack runs in (pure): identity, environment, stack configuration, the
//! resolved source, then the user's `workspaceTemplate` merged over it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, PodSpec, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::names::label;
use crate::api::stack::Stack;
use crate::api::stack_spec::{GitAuthConfig, ResourceRef, ResourceSelectorType};
use crate::api::workspace::{
    ConfigItem, ConfigValueFrom, EmbeddedPodTemplateSpec, FluxSource, GitAuth, GitHubAppAuth,
    GitSource, ProjectInfo, Workspace, WorkspaceSpec, WorkspaceStack,
};
use crate::controller::runtime::merge;

pub const CONFIGMAP_ROOT: &str = "/var/run/configmaps/stacks.pulumi.com/configmaps";
pub const SECRET_ROOT: &str = "/var/run/secrets/stacks.pulumi.com/secrets";

/// Where the program comes from, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// From the workspace template (a `local` dir or a custom init container).
    None,
    Git {
        url: String,
        commit: String,
        dir: Option<String>,
        shallow: bool,
        auth: Option<Box<GitAuth>>,
    },
    /// A Flux artifact or a Program's.
    Artifact {
        url: String,
        digest: String,
        dir: Option<String>,
    },
    /// Only a project file: destroying a stack whose source is gone.
    ProjectInfo(ProjectInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "{field}: {kind} selectors are no longer supported in v2, please use a secret reference instead"
    )]
    Unsupported { field: String, kind: &'static str },
    #[error(
        "{field}: cross-namespace refs are not allowed (Secret {namespace}/{name}); use a Secret in the Stack's namespace"
    )]
    CrossNamespace {
        field: String,
        namespace: String,
        name: String,
    },
    #[error("{field}: type {kind} needs the `{needs}` field")]
    Incomplete {
        field: String,
        kind: &'static str,
        needs: &'static str,
    },
    #[error("{0}: {UNSUPPORTED_TYPE}", UNSUPPORTED_TYPE = crate::api::stack_spec::UNSUPPORTED_TYPE)]
    UnknownType(String),
    #[error(
        "spec.config must map config keys to values (strings or JSON), not be {0}; move the \
         values under their keys"
    )]
    ConfigShape(&'static str),
    #[error("{0}")]
    GitAuth(String),
    #[error("spec.workspaceTemplate does not merge into a valid Workspace: {0}")]
    Template(String),
}

/// How a Secret-or-literal reference reaches the workspace.
enum Resolved<'a> {
    Literal(&'a str),
    Secret { name: &'a str, key: &'a str },
}

fn resolve<'a>(stack_ns: &str, field: &str, r: &'a ResourceRef) -> Result<Resolved<'a>, SpecError> {
    match r.selector_type {
        ResourceSelectorType::Env => Err(SpecError::Unsupported {
            field: field.into(),
            kind: "Env",
        }),
        ResourceSelectorType::Fs => Err(SpecError::Unsupported {
            field: field.into(),
            kind: "FS",
        }),
        ResourceSelectorType::Unsupported => Err(SpecError::UnknownType(field.into())),
        ResourceSelectorType::Literal => {
            let lit = r.literal.as_ref().ok_or(SpecError::Incomplete {
                field: field.into(),
                kind: "Literal",
                needs: "literal",
            })?;
            Ok(Resolved::Literal(&lit.value))
        }
        ResourceSelectorType::Secret => {
            let s = r.secret.as_ref().ok_or(SpecError::Incomplete {
                field: field.into(),
                kind: "Secret",
                needs: "secret",
            })?;
            if let Some(ns) = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty() && *n != stack_ns)
            {
                return Err(SpecError::CrossNamespace {
                    field: field.into(),
                    namespace: ns.into(),
                    name: s.name.clone(),
                });
            }
            Ok(Resolved::Secret {
                name: &s.name,
                key: &s.key,
            })
        }
    }
}

fn selector(name: &str, key: &str, optional: bool) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        optional: optional.then_some(true),
    }
}

/// A Secret-only reference (git credentials).
fn secret_only(
    stack_ns: &str,
    field: &str,
    r: &ResourceRef,
) -> Result<SecretKeySelector, SpecError> {
    match resolve(stack_ns, field, r)? {
        Resolved::Secret { name, key } => Ok(selector(name, key, false)),
        Resolved::Literal(_) => Err(SpecError::Unsupported {
            field: field.into(),
            kind: "Literal",
        }),
    }
}

/// The fetch container's credentials, as Secret references (values never leave Secrets).
pub fn workspace_git_auth(stack: &Stack) -> Result<Option<GitAuth>, SpecError> {
    let ns = stack.namespace().unwrap_or_default();
    let spec = &stack.spec.0;
    if let Some(secret) = spec.git_auth_secret.as_deref().filter(|s| !s.is_empty()) {
        return Ok(Some(GitAuth {
            ssh_private_key: Some(selector(secret, "sshPrivateKey", true)),
            password: Some(selector(secret, "password", true)),
            username: Some(selector(secret, "username", true)),
            token: Some(selector(secret, "accessToken", true)),
            known_hosts: Some(selector(secret, "knownHosts", true)),
            github_app: None,
        }));
    }
    let Some(auth) = &spec.git_auth else {
        return Ok(None);
    };
    let mut out = GitAuth::default();
    let GitAuthConfig {
        ssh_auth,
        access_token,
        basic_auth,
        github_app,
    } = auth;
    if let Some(ssh) = ssh_auth {
        out.ssh_private_key = Some(secret_only(
            &ns,
            "spec.gitAuth.sshAuth.sshPrivateKey",
            &ssh.ssh_private_key,
        )?);
        if let Some(p) = &ssh.password {
            out.password = Some(secret_only(&ns, "spec.gitAuth.sshAuth.password", p)?);
        }
        if let Some(k) = &ssh.known_hosts {
            out.known_hosts = Some(secret_only(&ns, "spec.gitAuth.sshAuth.knownHosts", k)?);
        }
    } else if let Some(t) = access_token {
        out.token = Some(secret_only(&ns, "spec.gitAuth.accessToken", t)?);
    } else if let Some(app) = github_app {
        out.github_app = Some(GitHubAppAuth {
            app_id: Some(secret_only(
                &ns,
                "spec.gitAuth.githubApp.appID",
                &app.app_id,
            )?),
            installation_id: Some(secret_only(
                &ns,
                "spec.gitAuth.githubApp.installationID",
                &app.installation_id,
            )?),
            private_key: Some(secret_only(
                &ns,
                "spec.gitAuth.githubApp.privateKey",
                &app.private_key,
            )?),
        });
    } else if let Some(basic) = basic_auth {
        out.username = Some(secret_only(
            &ns,
            "spec.gitAuth.basicAuth.userName",
            &basic.user_name,
        )?);
        out.password = Some(secret_only(
            &ns,
            "spec.gitAuth.basicAuth.password",
            &basic.password,
        )?);
    } else {
        return Err(SpecError::GitAuth(
            "gitAuth config must specify exactly one of 'personalAccessToken', 'sshPrivateKey', 'basicAuth', or 'githubApp'".into(),
        ));
    }
    Ok(Some(out))
}

/// The pulumi container's environment from the Stack: backend, access token, `envRefs`.
fn stack_env(stack: &Stack, ns: &str) -> Result<Vec<EnvVar>, SpecError> {
    let spec = &stack.spec.0;
    let secret = |name: &str, s: &str, key: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..Default::default()
        }),
        value: None,
    };
    let literal = |name: &str, v: &str| EnvVar {
        name: name.to_string(),
        value: Some(v.to_string()),
        value_from: None,
    };
    let mut env = Vec::new();
    if let Some(b) = spec.backend.as_deref().filter(|b| !b.is_empty()) {
        env.push(literal("PULUMI_BACKEND_URL", b));
    }
    if let Some(s) = spec
        .access_token_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        env.push(secret("PULUMI_ACCESS_TOKEN", s, "accessToken"));
    }
    for (name, r) in spec.env_refs.iter().flatten() {
        let field = format!("spec.envRefs[{name}]");
        env.push(match resolve(ns, &field, r)? {
            Resolved::Literal(v) => literal(name, v),
            Resolved::Secret { name: s, key } => secret(name, s, key),
        });
    }
    Ok(env)
}

/// The stack's config items, and the volumes (by name) and mounts (by path) that carry the
/// ConfigMaps and Secrets they read from files.
#[derive(Default)]
struct StackConfig {
    items: Vec<ConfigItem>,
    volumes: BTreeMap<String, Volume>,
    mounts: BTreeMap<String, VolumeMount>,
}

impl StackConfig {
    /// `key` read from `dir/file`, `dir` the read-only mount of the volume `vol`.
    fn file(&mut self, key: &str, dir: String, file: &str, secret: bool, vol: Volume) {
        self.items.push(ConfigItem {
            key: key.to_string(),
            value_from: Some(ConfigValueFrom {
                path: Some(format!("{dir}/{file}")),
                ..Default::default()
            }),
            secret: Some(secret),
            ..Default::default()
        });
        self.mounts.insert(
            dir.clone(),
            VolumeMount {
                name: vol.name.clone(),
                mount_path: dir,
                read_only: Some(true),
                ..Default::default()
            },
        );
        self.volumes.insert(vol.name.clone(), vol);
    }

    fn literal(&mut self, key: &str, value: serde_json::Value, secret: bool) {
        self.items.push(ConfigItem {
            key: key.to_string(),
            value: Some(value),
            secret: Some(secret),
            ..Default::default()
        });
    }
}

/// "a string", "a list", ...: what a JSON value is, for a message.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

/// `config`, `configRef`, `secrets` and `secretsRef`, in that order (PKO's).
fn stack_config(stack: &Stack, ns: &str) -> Result<StackConfig, SpecError> {
    let spec = &stack.spec.0;
    let mut c = StackConfig::default();
    match &spec.config {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) => {
            for (key, v) in m {
                c.literal(key, json!(v), false);
            }
        }
        Some(other) => return Err(SpecError::ConfigShape(json_kind(other))),
    }
    for (key, r) in spec.config_ref.iter().flatten() {
        let vol = Volume {
            name: format!("configmap-{}", r.name),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.file(
            key,
            format!("{CONFIGMAP_ROOT}/{}", r.name),
            &r.key,
            false,
            vol,
        );
        if let Some(j) = r.json
            && let Some(from) = c.items.last_mut().and_then(|i| i.value_from.as_mut())
        {
            from.json = Some(j);
        }
    }
    for (key, v) in spec.secrets.iter().flatten() {
        c.literal(key, json!(v), true);
    }
    for (key, r) in spec.secrets_ref.iter().flatten() {
        let field = format!("spec.secretsRef[{key}]");
        match resolve(ns, &field, r)? {
            Resolved::Literal(v) => c.literal(key, json!(v), true),
            Resolved::Secret { name, key: file } => {
                let vol = Volume {
                    name: format!("secret-{name}"),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                c.file(key, format!("{SECRET_ROOT}/{name}"), file, true, vol);
            }
        }
    }
    Ok(c)
}

/// The source fields of the Workspace: `git`, `flux` or `projectInfo`.
fn source_spec(source: &Source, spec: &mut WorkspaceSpec) {
    let non_empty = |d: &Option<String>| d.clone().filter(|d| !d.is_empty());
    match source {
        Source::None => {}
        Source::Git {
            url,
            commit,
            dir,
            shallow,
            auth,
        } => {
            spec.git = Some(GitSource {
                url: Some(url.clone()),
                git_ref: Some(commit.clone()),
                dir: non_empty(dir),
                auth: auth.as_deref().cloned(),
                shallow: shallow.then_some(true),
            });
        }
        Source::Artifact { url, digest, dir } => {
            spec.flux = Some(FluxSource {
                url: Some(url.clone()),
                digest: Some(digest.clone()),
                dir: non_empty(dir),
            });
        }
        Source::ProjectInfo(p) => spec.project_info = Some(p.clone()),
    }
}

/// The Workspace for `stack` with `source`: built from typed parts, then the user's
/// `workspaceTemplate` merged over it (as JSON: PKO's merge is by field and list key), then
/// what the template may not change.
/// `--default-service-account` applied to `ws` when the Stack names no account, neither in
/// `serviceAccountName` nor in its `workspaceTemplate` (the Workspace type itself cannot tell:
/// its CRD, as PKO's, defaults the field to `default`).
pub fn with_default_account(stack: &Stack, ws: &mut Workspace, account: Option<&str>) {
    let spec = &stack.spec.0;
    let named = spec
        .service_account_name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
        || spec
            .workspace_template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s["serviceAccountName"].as_str())
            .is_some_and(|n| !n.is_empty());
    if let (false, Some(account)) = (named, account) {
        ws.spec.service_account_name = Some(account.to_string());
    }
}

pub fn desired_workspace(stack: &Stack, source: &Source) -> Result<Workspace, SpecError> {
    let ns = stack.namespace().unwrap_or_default();
    let spec = &stack.spec.0;
    let env = stack_env(stack, &ns)?;
    let config = stack_config(stack, &ns)?;
    let ws_stack = WorkspaceStack {
        name: spec.stack.clone(),
        create: Some(!spec.use_local_stack_only.unwrap_or(false)),
        secrets_provider: spec.secrets_provider.clone().filter(|s| !s.is_empty()),
        config: (!config.items.is_empty()).then_some(config.items),
        environment: spec.environment.clone().filter(|e| !e.is_empty()),
    };
    let pulumi = Container {
        name: crate::api::names::pod::PULUMI_CONTAINER.into(),
        volume_mounts: (!config.mounts.is_empty()).then(|| config.mounts.into_values().collect()),
        ..Default::default()
    };
    let mut typed = WorkspaceSpec {
        pod_template: Some(EmbeddedPodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![pulumi],
                volumes: (!config.volumes.is_empty())
                    .then(|| config.volumes.into_values().collect()),
                ..Default::default()
            }),
        }),
        stacks: Some(vec![ws_stack]),
        service_account_name: spec.service_account_name.clone().filter(|s| !s.is_empty()),
        env: (!env.is_empty()).then_some(env),
        ..Default::default()
    };
    source_spec(source, &mut typed);
    let ws_spec = serde_json::to_value(&typed).map_err(|e| SpecError::Template(e.to_string()))?;

    let mut doc = json!({
        "metadata": {
            "labels": {
                label::PULUMI_COMPONENT: label::COMPONENT_STACK,
                label::STACK_NAME: stack.name_any(),
            },
        },
        "spec": ws_spec,
    });
    if let Some(t) = &spec.workspace_template {
        let mut patch = json!({});
        if let Some(m) = &t.metadata {
            patch["metadata"] = m.clone();
        }
        if let Some(s) = &t.spec {
            patch["spec"] = s.clone();
        }
        merge::merge(&mut doc, &patch, merge::workspace_key);
    }
    if matches!(source, Source::ProjectInfo(_)) {
        // Destroying without the source: nothing from the template may bring one back.
        for k in ["git", "flux", "local"] {
            if let Some(o) = doc["spec"].as_object_mut() {
                o.remove(k);
            }
        }
    }
    let mut env_from: Vec<Value> = doc["spec"]["envFrom"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for cm in spec.envs.iter().flatten() {
        env_from.push(json!({"configMapRef": {"name": cm}}));
    }
    for s in spec.env_secrets.iter().flatten() {
        env_from.push(json!({"secretRef": {"name": s}}));
    }
    if !env_from.is_empty() {
        doc["spec"]["envFrom"] = json!(env_from);
    }
    if let Some(level) = spec.pulumi_log_level {
        doc["spec"]["pulumiLogLevel"] = json!(level);
    }

    let mut ws: Workspace = serde_json::from_value(json!({
        "apiVersion": "auto.pulumi.com/v1alpha1",
        "kind": "Workspace",
        "metadata": doc["metadata"],
        "spec": doc["spec"],
    }))
    .map_err(|e| SpecError::Template(e.to_string()))?;
    // Identity is not the template's to change.
    ws.metadata.name = Some(stack.name_any());
    ws.metadata.namespace = Some(ns);
    let labels = ws.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        label::PULUMI_COMPONENT.into(),
        label::COMPONENT_STACK.into(),
    );
    labels.insert(label::STACK_NAME.into(), stack.name_any());
    ws.metadata.owner_references = stack.controller_owner_ref(&()).map(|o| vec![o]);
    ws.metadata.resource_version = None;
    ws.metadata.uid = None;
    ws.status = None;
    if ws.meta().generation.is_some() {
        ws.metadata.generation = None;
    }
    Ok(ws)
}

#[cfg(test)]
mod tests;
