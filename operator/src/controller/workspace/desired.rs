//! What a Workspace should run: its Service and StatefulSet `<ws>-workspace`, computed from the
//! Workspace and the operator's settings alone (pure, so every rule is unit-tested).
//!
//! The pod: init container `bootstrap` copies the agent into the shared volume; init
//! container `fetch` puts the program there (the fetch image for Flux artifacts and Git; the
//! agent for a directory in the image or a bare project file); container `pulumi` runs the
//! agent in the user's Pulumi image.

use std::collections::BTreeMap;

use fetch::vars;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{EnvVar, SecretKeySelector, Service};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::names::{label, pod};
use crate::api::workspace::{SecurityProfile, Workspace, WorkspaceSpec};
use crate::controller::runtime::merge;
use crate::controller::settings::Settings;

/// Where the operator dials the agent, and the audience its tokens are minted for.
pub fn audience(ws: &Workspace) -> String {
    format!("{}.{}", ws.name_any(), ws.namespace().unwrap_or_default())
}

pub fn object_name(ws: &Workspace) -> String {
    format!("{}{}", ws.name_any(), pod::WORKSPACE_SUFFIX)
}

/// The first (only) pod of the StatefulSet.
pub fn pod_name(ws: &Workspace) -> String {
    format!("{}-0", object_name(ws))
}

/// The service address reported in status (what a person would dial in the cluster).
pub fn service_address(ws: &Workspace) -> String {
    format!(
        "{}.{}:{}",
        object_name(ws),
        ws.namespace().unwrap_or_default(),
        pod::GRPC_PORT
    )
}

pub fn labels(ws: &Workspace) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            label::AUTO_COMPONENT.to_string(),
            label::COMPONENT_WORKSPACE.to_string(),
        ),
        (label::WORKSPACE_NAME.to_string(), ws.name_any()),
    ])
}

/// The in-controller defaults PKO's webhook would set (not persisted).
pub fn with_defaults(spec: &WorkspaceSpec) -> WorkspaceSpec {
    let mut s = spec.clone();
    let profile = s.security_profile.unwrap_or_default();
    s.security_profile = Some(profile);
    if s.image.as_deref().is_none_or(str::is_empty) {
        s.image = Some(
            match profile {
                SecurityProfile::Restricted => "pulumi/pulumi:latest-nonroot",
                SecurityProfile::Baseline => "pulumi/pulumi:latest",
            }
            .into(),
        );
    }
    if s.service_account_name.as_deref().is_none_or(str::is_empty) {
        s.service_account_name = Some("default".into());
    }
    let mut resources = s.resources.take().unwrap_or_default();
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    requests
        .entry("memory".into())
        .or_insert_with(|| k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Mi".into()));
    requests
        .entry("cpu".into())
        .or_insert_with(|| k8s_openapi::apimachinery::pkg::api::resource::Quantity("100m".into()));
    s.resources = Some(resources);
    s
}

/// Hash of what the pod fetches. Any other change to the pod changes its template anyway; a
/// change of the stacks' configuration alone is applied to the running pod
/// ([`super::reconfigure`]), so the generation is not in it.
pub fn revision_hash(ws: &Workspace) -> String {
    let spec = &ws.spec;
    let source = json!({
        "git": spec.git,
        "flux": spec.flux,
        "local": spec.local,
        "projectInfo": spec.project_info,
    });
    crate::controller::short_digest(source.to_string().as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("spec.podTemplate does not merge into a valid pod template: {0}")]
    PodTemplate(String),
    #[error(
        "the Workspace has no program source: set one of spec.git, spec.flux, spec.local, spec.projectInfo, or add your own init container that fills /share/workspace"
    )]
    NoSource,
}

pub fn service(ws: &Workspace) -> Service {
    let mut labels_ = ws
        .spec
        .service_template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels_.extend(labels(ws));
    let annotations = ws
        .spec
        .service_template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone());
    let mut svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": object_name(ws),
            "namespace": ws.namespace(),
            "labels": labels_,
            "annotations": annotations,
        },
        "spec": {
            "clusterIP": "None",
            "selector": labels(ws),
            "ports": [{"name": pod::GRPC_PORT_NAME, "port": pod::GRPC_PORT, "targetPort": pod::GRPC_PORT_NAME}],
        },
    }))
    .unwrap_or_default();
    svc.metadata.owner_references = ws.controller_owner_ref(&()).map(|o| vec![o]);
    svc
}

fn secret_env(name: &str, sel: &Option<SecretKeySelector>) -> Option<Value> {
    sel.as_ref()
        .map(|s| json!({"name": name, "valueFrom": {"secretKeyRef": s}}))
}

fn plain_env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// The `fetch` init container for the Workspace's source (none if it has none).
fn fetch_container(spec: &WorkspaceSpec, settings: &Settings) -> Option<Value> {
    let mount = json!([{"name": pod::SHARE_VOLUME, "mountPath": pod::SHARE_PATH}]);
    if let Some(info) = &spec.project_info {
        return Some(json!({
            "name": pod::FETCH_CONTAINER,
            "image": settings.agent_image,
            "imagePullPolicy": settings.agent_image_pull_policy,
            "command": ["/agent", "init-project", "--target-dir", pod::WORKSPACE_PATH,
                        "--project-name", "$(PROJECT_NAME)", "--project-runtime", "$(PROJECT_RUNTIME)"],
            "env": [plain_env("PROJECT_NAME", info.name.clone()), plain_env("PROJECT_RUNTIME", info.runtime.clone())],
            "volumeMounts": mount,
        }));
    }
    if let Some(git) = &spec.git {
        let mut env = vec![
            plain_env(vars::GIT_URL, git.url.clone().unwrap_or_default()),
            plain_env(vars::GIT_REVISION, git.git_ref.clone().unwrap_or_default()),
            plain_env(vars::GIT_DIR, git.dir.clone().unwrap_or_default()),
        ];
        if git.shallow == Some(true) {
            env.push(plain_env(vars::GIT_SHALLOW, "true"));
        }
        if let Some(auth) = &git.auth {
            env.extend(secret_env(vars::GIT_SSH_PRIVATE_KEY, &auth.ssh_private_key));
            env.extend(secret_env(vars::GIT_USERNAME, &auth.username));
            env.extend(secret_env(vars::GIT_PASSWORD, &auth.password));
            env.extend(secret_env(vars::GIT_TOKEN, &auth.token));
            env.extend(secret_env(vars::GIT_SSH_KNOWN_HOSTS, &auth.known_hosts));
            if let Some(app) = &auth.github_app {
                env.extend(secret_env(vars::GIT_GITHUB_APP_ID, &app.app_id));
                env.extend(secret_env(
                    vars::GIT_GITHUB_APP_INSTALLATION_ID,
                    &app.installation_id,
                ));
                env.extend(secret_env(
                    vars::GIT_GITHUB_APP_PRIVATE_KEY,
                    &app.private_key,
                ));
                if let Some(api) = &settings.github_api_url {
                    env.push(plain_env(vars::GITHUB_API_URL, api.clone()));
                }
            }
        }
        return Some(json!({
            "name": pod::FETCH_CONTAINER,
            "image": settings.fetch_image,
            "imagePullPolicy": settings.fetch_image_pull_policy,
            "command": ["/fetch"],
            "args": ["git", "--target-dir", pod::SOURCE_PATH, "--link", pod::WORKSPACE_PATH],
            "env": env,
            "volumeMounts": mount,
        }));
    }
    if let Some(flux) = &spec.flux {
        let mut env = vec![
            plain_env(vars::FLUX_URL, flux.url.clone().unwrap_or_default()),
            plain_env(vars::FLUX_DIGEST, flux.digest.clone().unwrap_or_default()),
            plain_env(vars::FLUX_DIR, flux.dir.clone().unwrap_or_default()),
        ];
        if let Some(max) = &settings.flux_max_untar_size {
            env.push(plain_env(vars::FLUX_MAX_UNTAR_SIZE_BYTES, max.clone()));
        }
        return Some(json!({
            "name": pod::FETCH_CONTAINER,
            "image": settings.fetch_image,
            "imagePullPolicy": settings.fetch_image_pull_policy,
            "command": ["/fetch"],
            "args": ["flux", "--target-dir", pod::SOURCE_PATH, "--link", pod::WORKSPACE_PATH],
            "env": env,
            "volumeMounts": mount,
        }));
    }
    if let Some(local) = &spec.local {
        return Some(json!({
            "name": pod::FETCH_CONTAINER,
            "image": settings.agent_image,
            "imagePullPolicy": settings.agent_image_pull_policy,
            "command": ["/agent", "link", "$(LOCAL_DIR)", pod::WORKSPACE_PATH],
            "env": [plain_env("LOCAL_DIR", local.dir.clone().unwrap_or_default())],
            "volumeMounts": mount,
        }));
    }
    None
}

/// The agent's command line in the `pulumi` container.
pub fn agent_command(ws: &Workspace) -> Vec<String> {
    let ns = ws.namespace().unwrap_or_default();
    let mut cmd: Vec<String> = [
        pod::AGENT_PATH,
        "serve",
        "--workspace",
        pod::WORKSPACE_PATH,
        "--skip-install",
        "--env-file",
        pod::ENV_FILE,
        "--auth-mode",
        "kube",
        "--kube-audience",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cmd.push(audience(ws));
    cmd.extend([
        "--kube-workspace-namespace".into(),
        ns,
        "--kube-workspace-name".into(),
        ws.name_any(),
    ]);
    if let Some(level) = ws.spec.pulumi_log_level.filter(|l| *l > 0) {
        cmd.push("--pulumi-log-level".into());
        cmd.push(level.to_string());
    }
    cmd
}

/// The `share` emptyDir: bounded by the operator's setting, so whatever lands there (an
/// archive, installed dependencies) cannot fill the node's disk.
fn share_volume(settings: &Settings) -> Value {
    match &settings.share_size_limit {
        Some(limit) => json!({"sizeLimit": limit}),
        None => json!({}),
    }
}

/// The pod template, before the user's `podTemplate` is merged in.
fn base_pod_template(ws: &Workspace, spec: &WorkspaceSpec, settings: &Settings) -> Value {
    let restricted = spec.security_profile == Some(SecurityProfile::Restricted);
    let mount = json!([{"name": pod::SHARE_VOLUME, "mountPath": pod::SHARE_PATH}]);
    let mut init = vec![json!({
        "name": pod::BOOTSTRAP_CONTAINER,
        "image": settings.agent_image,
        "imagePullPolicy": settings.agent_image_pull_policy,
        "command": ["/agent", "bootstrap", pod::AGENT_PATH],
        "volumeMounts": mount,
    })];
    init.extend(fetch_container(spec, settings));
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .flatten()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    env.push(json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}));
    env.push(json!({"name": "POD_SA_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}));
    let mut main = json!({
        "name": pod::PULUMI_CONTAINER,
        "image": spec.image,
        "command": agent_command(ws),
        "workingDir": pod::WORKSPACE_PATH,
        "ports": [{"name": pod::GRPC_PORT_NAME, "containerPort": pod::GRPC_PORT}],
        "env": env,
        "volumeMounts": mount,
        "resources": spec.resources,
    });
    if let Some(p) = &spec.image_pull_policy {
        main["imagePullPolicy"] = json!(p);
    }
    if let Some(from) = &spec.env_from {
        main["envFrom"] = json!(from);
    }
    let mut containers = vec![main];
    let mut security = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    if restricted {
        security["runAsNonRoot"] = json!(true);
        security["runAsUser"] = json!(1000);
        security["runAsGroup"] = json!(1000);
        let ctx = json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        });
        for c in init.iter_mut().chain(containers.iter_mut()) {
            c["securityContext"] = ctx.clone();
        }
    }
    json!({
        "metadata": {
            "labels": labels(ws),
            "annotations": {label::REVISION_HASH: revision_hash(ws)},
        },
        "spec": {
            "serviceAccountName": spec.service_account_name,
            "securityContext": security,
            "terminationGracePeriodSeconds": 600,
            "volumes": [{"name": pod::SHARE_VOLUME, "emptyDir": share_volume(settings)}],
            "initContainers": init,
            "containers": containers,
        },
    })
}

/// The StatefulSet that runs the workspace pod.
pub fn statefulset(ws: &Workspace, settings: &Settings) -> Result<StatefulSet, DesiredError> {
    let spec = with_defaults(&ws.spec);
    let mut template = base_pod_template(ws, &spec, settings);
    if let Some(user) = &spec.pod_template {
        let patch =
            serde_json::to_value(user).map_err(|e| DesiredError::PodTemplate(e.to_string()))?;
        merge::merge(&mut template, &patch, merge::pod_template_key);
        // The system labels and the revision hash win over the user's.
        for (k, v) in labels(ws) {
            template["metadata"]["labels"][k] = json!(v);
        }
        template["metadata"]["annotations"][label::REVISION_HASH] = json!(revision_hash(ws));
    }
    let has_fetch = template["spec"]["initContainers"]
        .as_array()
        .is_some_and(|cs| cs.len() > 1);
    if !has_fetch {
        return Err(DesiredError::NoSource);
    }
    // Every container, the user's included, may write KEY=VALUE lines for the agent here.
    for list in ["initContainers", "containers"] {
        if let Some(cs) = template["spec"][list].as_array_mut() {
            for c in cs {
                let env = c
                    .as_object_mut()
                    .map(|o| o.entry("env").or_insert_with(|| json!([])));
                if let Some(Value::Array(env)) = env {
                    env.retain(|e| e["name"] != "PULUMI_ENV");
                    env.push(plain_env("PULUMI_ENV", pod::ENV_FILE));
                }
            }
        }
    }
    let mut sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": object_name(ws),
            "namespace": ws.namespace(),
            "labels": labels(ws),
        },
        "spec": {
            "selector": {"matchLabels": labels(ws)},
            "serviceName": object_name(ws),
            "replicas": 1,
            "podManagementPolicy": "Parallel",
            "template": template,
        },
    }))
    .map_err(|e| DesiredError::PodTemplate(e.to_string()))?;
    sts.metadata.owner_references = ws.controller_owner_ref(&()).map(|o| vec![o]);
    Ok(sts)
}

/// An env var list as a name → value map, for tests and diagnostics.
pub fn env_map(env: &[EnvVar]) -> BTreeMap<String, Option<String>> {
    env.iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
