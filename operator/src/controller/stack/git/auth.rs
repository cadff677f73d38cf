//! The Stack's git credentials as the operator reads them for `ls-remote` (the workspace pod
//! gets references to the Secrets, never their values), in PKO's order of precedence.

use std::time::Duration;

use fetch::git::Offer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::GitSourceError;
use crate::api::stack::Stack;
use crate::api::stack_spec::{
    GitAuthConfig, GitHubAppAuth, ResourceRef, ResourceSelectorType, UNSUPPORTED_TYPE,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creds {
    None,
    Basic {
        username: String,
        password: String,
    },
    Ssh {
        key: String,
        passphrase: Option<String>,
        /// OpenSSH known_hosts text; None accepts any host key (as PKO).
        known_hosts: Option<String>,
    },
}

impl Creds {
    pub(super) fn mode(&self) -> &'static str {
        match self {
            Creds::None => "no credentials",
            Creds::Basic { .. } => "basic auth",
            Creds::Ssh { .. } => "an SSH key",
        }
    }

    /// What `ls-remote` offers when the server asks.
    pub(super) fn offer(&self) -> Offer {
        match self {
            Creds::None => Offer::None,
            Creds::Basic { username, password } => Offer::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            Creds::Ssh {
                key, passphrase, ..
            } => Offer::SshKey {
                key: key.clone(),
                passphrase: passphrase.clone(),
            },
        }
    }
}

async fn secret_value(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Option<String>, GitSourceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get_opt(name).await.map_err(|e| {
        GitSourceError::Unavailable(format!("{field}: cannot read Secret {ns}/{name}: {e}"))
    })?;
    let Some(secret) = secret else {
        return Err(GitSourceError::Spec(format!(
            "{field}: Secret {ns}/{name} not found"
        )));
    };
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        }))
}

async fn required(
    client: &Client,
    ns: &str,
    field: &str,
    r: &ResourceRef,
) -> Result<String, GitSourceError> {
    match r.selector_type {
        ResourceSelectorType::Secret => {}
        ResourceSelectorType::Literal => {
            return Err(GitSourceError::Spec(format!(
                "{field}: Literal selectors are no longer supported in v2, please use a secret reference instead"
            )));
        }
        ResourceSelectorType::Env | ResourceSelectorType::Fs => {
            return Err(GitSourceError::Spec(format!(
                "{field}: {} selectors are no longer supported in v2, please use a secret reference instead",
                if r.selector_type == ResourceSelectorType::Env {
                    "Env"
                } else {
                    "FS"
                }
            )));
        }
        ResourceSelectorType::Unsupported => {
            return Err(GitSourceError::Spec(format!("{field}: {UNSUPPORTED_TYPE}")));
        }
    }
    let s = r.secret.as_ref().ok_or_else(|| {
        GitSourceError::Spec(format!("{field}: type Secret needs the `secret` field"))
    })?;
    if let Some(other) = s.namespace.as_deref().filter(|n| !n.is_empty() && *n != ns) {
        return Err(GitSourceError::Spec(format!(
            "{field}: cross-namespace refs are not allowed (Secret {other}/{})",
            s.name
        )));
    }
    secret_value(client, ns, &s.name, &s.key, field)
        .await?
        .ok_or_else(|| {
            GitSourceError::Spec(format!(
                "{field}: no key {:?} in Secret {ns}/{}",
                s.key, s.name
            ))
        })
}

/// The operator's own credentials for `ls-remote`: `spec.gitAuthSecret` first, then
/// `spec.gitAuth`, else none.
pub async fn credentials(
    client: &Client,
    stack: &Stack,
    github_api: &str,
) -> Result<Creds, GitSourceError> {
    let ns = stack.namespace().unwrap_or_default();
    let spec = &stack.spec.0;
    if let Some(name) = spec.git_auth_secret.as_deref().filter(|s| !s.is_empty()) {
        return from_auth_secret(client, &ns, name).await;
    }
    match &spec.git_auth {
        Some(auth) => from_git_auth(client, &ns, auth, github_api).await,
        None => Ok(Creds::None),
    }
}

/// `spec.gitAuthSecret`: one Secret whose keys say the kind (an SSH key, a token, or a user
/// name and password).
async fn from_auth_secret(client: &Client, ns: &str, name: &str) -> Result<Creds, GitSourceError> {
    let get = |key: &'static str| secret_value(client, ns, name, key, "spec.gitAuthSecret");
    if let Some(key) = get("sshPrivateKey").await? {
        return Ok(Creds::Ssh {
            key,
            passphrase: get("password").await?,
            known_hosts: get("knownHosts").await?,
        });
    }
    if let Some(token) = get("accessToken").await? {
        return Ok(Creds::Basic {
            username: "git".into(),
            password: token,
        });
    }
    if let Some(username) = get("username").await? {
        let password = get("password").await?.ok_or_else(|| {
            GitSourceError::Spec(format!(
                "creating gitAuth: no key \"password\" found in secret {ns}/{name}"
            ))
        })?;
        return Ok(Creds::Basic { username, password });
    }
    Err(GitSourceError::Spec(format!(
        "spec.gitAuthSecret: Secret {ns}/{name} has none of sshPrivateKey, accessToken, username"
    )))
}

/// `spec.gitAuth`: exactly one of an SSH key, an access token, a GitHub App or basic auth,
/// each value from a Secret.
async fn from_git_auth(
    client: &Client,
    ns: &str,
    auth: &GitAuthConfig,
    github_api: &str,
) -> Result<Creds, GitSourceError> {
    if let Some(ssh) = &auth.ssh_auth {
        let key = required(
            client,
            ns,
            "spec.gitAuth.sshAuth.sshPrivateKey",
            &ssh.ssh_private_key,
        )
        .await?;
        let passphrase = match &ssh.password {
            Some(p) => Some(required(client, ns, "spec.gitAuth.sshAuth.password", p).await?),
            None => None,
        };
        let known_hosts = match &ssh.known_hosts {
            Some(k) => Some(required(client, ns, "spec.gitAuth.sshAuth.knownHosts", k).await?),
            None => None,
        };
        return Ok(Creds::Ssh {
            key,
            passphrase,
            known_hosts,
        });
    }
    if let Some(t) = &auth.access_token {
        return Ok(Creds::Basic {
            username: "git".into(),
            password: required(client, ns, "spec.gitAuth.accessToken", t).await?,
        });
    }
    if let Some(app) = &auth.github_app {
        return github_app(client, ns, app, github_api).await;
    }
    if let Some(b) = &auth.basic_auth {
        return Ok(Creds::Basic {
            username: required(client, ns, "spec.gitAuth.basicAuth.userName", &b.user_name).await?,
            password: required(client, ns, "spec.gitAuth.basicAuth.password", &b.password).await?,
        });
    }
    Err(GitSourceError::Spec(
        "gitAuth config must specify exactly one of 'personalAccessToken', 'sshPrivateKey', 'basicAuth', or 'githubApp'".into(),
    ))
}

/// A GitHub App's installation token, exchanged for the App's key.
async fn github_app(
    client: &Client,
    ns: &str,
    app: &GitHubAppAuth,
    github_api: &str,
) -> Result<Creds, GitSourceError> {
    let id = required(client, ns, "spec.gitAuth.githubApp.appID", &app.app_id).await?;
    let inst = required(
        client,
        ns,
        "spec.gitAuth.githubApp.installationID",
        &app.installation_id,
    )
    .await?;
    let key = required(
        client,
        ns,
        "spec.gitAuth.githubApp.privateKey",
        &app.private_key,
    )
    .await?;
    let api = github_api.to_string();
    let token = tokio::task::spawn_blocking(move || {
        fetch::git::github_app::installation_token(
            &api,
            id.trim(),
            inst.trim(),
            &key,
            Duration::from_secs(30),
        )
    })
    .await
    .map_err(|e| GitSourceError::Unavailable(e.to_string()))?
    .map_err(|e| GitSourceError::Unavailable(format!("GitHub App: {e}")))?;
    Ok(Creds::Basic {
        username: fetch::git::github_app::TOKEN_USER.into(),
        password: token,
    })
}
