//! The Workspace a Stack runs in (pure): identity, environment, stack configuration, the
//! resolved source, then the user's `workspaceTemplate` merged over it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::names::label;
use crate::api::stack::Stack;
use crate::api::stack_spec::{GitAuthConfig, ResourceRef, ResourceSelectorType};
use crate::api::workspace::{GitAuth, GitHubAppAuth, ProjectInfo, Workspace};
use crate::controller::merge;

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

/// The Workspace for `stack` with `source`.
pub fn desired_workspace(stack: &Stack, source: &Source) -> Result<Workspace, SpecError> {
    let ns = stack.namespace().unwrap_or_default();
    let spec = &stack.spec.0;
    let mut env: Vec<Value> = Vec::new();
    if let Some(b) = spec.backend.as_deref().filter(|b| !b.is_empty()) {
        env.push(json!({"name": "PULUMI_BACKEND_URL", "value": b}));
    }
    if let Some(s) = spec
        .access_token_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        env.push(json!({"name": "PULUMI_ACCESS_TOKEN", "valueFrom": {"secretKeyRef": {"name": s, "key": "accessToken"}}}));
    }
    for (name, r) in spec.env_refs.iter().flatten() {
        let field = format!("spec.envRefs[{name}]");
        env.push(match resolve(&ns, &field, r)? {
            Resolved::Literal(v) => json!({"name": name, "value": v}),
            Resolved::Secret { name: s, key } => {
                json!({"name": name, "valueFrom": {"secretKeyRef": {"name": s, "key": key}}})
            }
        });
    }

    let mut config: Vec<Value> = Vec::new();
    let mut volumes: BTreeMap<String, Value> = BTreeMap::new();
    let mut mounts: BTreeMap<String, Value> = BTreeMap::new();
    for (key, v) in spec.config.iter().flatten() {
        config.push(json!({"key": key, "value": v, "secret": false}));
    }
    for (key, r) in spec.config_ref.iter().flatten() {
        let dir = format!("{CONFIGMAP_ROOT}/{}", r.name);
        let mut item =
            json!({"key": key, "valueFrom": {"path": format!("{dir}/{}", r.key)}, "secret": false});
        if let Some(j) = r.json {
            item["valueFrom"]["json"] = json!(j);
        }
        config.push(item);
        let vol = format!("configmap-{}", r.name);
        volumes.insert(
            vol.clone(),
            json!({"name": vol, "configMap": {"name": r.name}}),
        );
        mounts.insert(
            dir.clone(),
            json!({"name": vol, "mountPath": dir, "readOnly": true}),
        );
    }
    for (key, v) in spec.secrets.iter().flatten() {
        config.push(json!({"key": key, "value": v, "secret": true}));
    }
    for (key, r) in spec.secrets_ref.iter().flatten() {
        let field = format!("spec.secretsRef[{key}]");
        match resolve(&ns, &field, r)? {
            Resolved::Literal(v) => config.push(json!({"key": key, "value": v, "secret": true})),
            Resolved::Secret { name, key: skey } => {
                let dir = format!("{SECRET_ROOT}/{name}");
                config.push(json!({"key": key, "valueFrom": {"path": format!("{dir}/{skey}")}, "secret": true}));
                let vol = format!("secret-{name}");
                volumes.insert(
                    vol.clone(),
                    json!({"name": vol, "secret": {"secretName": name}}),
                );
                mounts.insert(
                    dir.clone(),
                    json!({"name": vol, "mountPath": dir, "readOnly": true}),
                );
            }
        }
    }

    let mut ws_stack = json!({
        "name": spec.stack,
        "create": !spec.use_local_stack_only.unwrap_or(false),
    });
    if let Some(envs) = spec.environment.as_ref().filter(|e| !e.is_empty()) {
        ws_stack["environment"] = json!(envs);
    }
    if let Some(sp) = spec.secrets_provider.as_deref().filter(|s| !s.is_empty()) {
        ws_stack["secretsProvider"] = json!(sp);
    }
    if !config.is_empty() {
        ws_stack["config"] = json!(config);
    }

    let mut pulumi = json!({"name": crate::api::names::pod::PULUMI_CONTAINER});
    if !mounts.is_empty() {
        pulumi["volumeMounts"] = json!(mounts.values().collect::<Vec<_>>());
    }
    let mut pod_spec = json!({"containers": [pulumi]});
    if !volumes.is_empty() {
        pod_spec["volumes"] = json!(volumes.values().collect::<Vec<_>>());
    }
    let mut ws_spec = json!({
        "podTemplate": {"spec": pod_spec},
        "stacks": [ws_stack],
    });
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        ws_spec["serviceAccountName"] = json!(sa);
    }
    if !env.is_empty() {
        ws_spec["env"] = json!(env);
    }
    match source {
        Source::None => {}
        Source::Git {
            url,
            commit,
            dir,
            shallow,
            auth,
        } => {
            let mut g = json!({"url": url, "ref": commit});
            if let Some(d) = dir.as_deref().filter(|d| !d.is_empty()) {
                g["dir"] = json!(d);
            }
            if *shallow {
                g["shallow"] = json!(true);
            }
            if let Some(a) = auth {
                g["auth"] = json!(a.as_ref());
            }
            ws_spec["git"] = g;
        }
        Source::Artifact { url, digest, dir } => {
            let mut f = json!({"url": url, "digest": digest});
            if let Some(d) = dir.as_deref().filter(|d| !d.is_empty()) {
                f["dir"] = json!(d);
            }
            ws_spec["flux"] = f;
        }
        Source::ProjectInfo(p) => ws_spec["projectInfo"] = json!(p),
    }

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
