//! `projectRepo` sources: the Stack's credentials read from its Secrets (the operator's copy,
//! for `ls-remote` only; the workspace pod gets Secret references), and a branch or tag
//! resolved to its commit with `ls-remote` through libgit2.

use std::time::Duration;

use fetch::git::{Offer, Refusal};
use git2::{CertificateCheckStatus, Direction, RemoteCallbacks};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::api::stack::Stack;
use crate::api::stack_spec::{ResourceRef, ResourceSelectorType};

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
    fn mode(&self) -> &'static str {
        match self {
            Creds::None => "no credentials",
            Creds::Basic { .. } => "basic auth",
            Creds::Ssh { .. } => "an SSH key",
        }
    }

    /// What `ls-remote` offers when the server asks.
    fn offer(&self) -> Offer {
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

/// Why a Stack's git source cannot be used. `Spec` errors need the user to change the Stack or
/// its Secrets; `Unavailable` ones may pass on their own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitSourceError {
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Unavailable(String),
}

/// PKO's validation of the inline git source.
pub fn validate(stack: &Stack) -> Result<(String, String), GitSourceError> {
    let spec = &stack.spec.0;
    let repo = spec
        .project_repo
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| GitSourceError::Spec("missing \"projectRepo\"".into()))?;
    let commit = spec.commit.clone().filter(|c| !c.is_empty());
    let branch = spec.branch.clone().filter(|b| !b.is_empty());
    let reference = match (commit, branch) {
        (Some(_), Some(_)) => {
            return Err(GitSourceError::Spec(
                "only one of \"commit\" or \"branch\" should be specified".into(),
            ));
        }
        (None, None) => {
            return Err(GitSourceError::Spec(
                "missing \"commit\" or \"branch\" (spec.projectRepo needs one)".into(),
            ));
        }
        (Some(c), None) => c,
        (None, Some(b)) => b,
    };
    if fetch::git::endpoint(&repo).is_err() {
        return Err(GitSourceError::Spec(format!(
            "spec.projectRepo {:?} is not a git URL (https://, ssh://, user@host:path or file://)",
            fetch::git::redact(&repo)
        )));
    }
    Ok((repo, reference))
}

/// A full commit SHA needs no network call.
pub fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
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

/// The operator's own credentials for `ls-remote`, in PKO's order of precedence.
pub async fn credentials(
    client: &Client,
    stack: &Stack,
    github_api: &str,
) -> Result<Creds, GitSourceError> {
    let ns = stack.namespace().unwrap_or_default();
    let spec = &stack.spec.0;
    if let Some(name) = spec.git_auth_secret.as_deref().filter(|s| !s.is_empty()) {
        let get = |key: &'static str| secret_value(client, &ns, name, key, "spec.gitAuthSecret");
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
        return Err(GitSourceError::Spec(format!(
            "spec.gitAuthSecret: Secret {ns}/{name} has none of sshPrivateKey, accessToken, username"
        )));
    }
    let Some(auth) = &spec.git_auth else {
        return Ok(Creds::None);
    };
    if let Some(ssh) = &auth.ssh_auth {
        let key = required(
            client,
            &ns,
            "spec.gitAuth.sshAuth.sshPrivateKey",
            &ssh.ssh_private_key,
        )
        .await?;
        let passphrase = match &ssh.password {
            Some(p) => Some(required(client, &ns, "spec.gitAuth.sshAuth.password", p).await?),
            None => None,
        };
        let known_hosts = match &ssh.known_hosts {
            Some(k) => Some(required(client, &ns, "spec.gitAuth.sshAuth.knownHosts", k).await?),
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
            password: required(client, &ns, "spec.gitAuth.accessToken", t).await?,
        });
    }
    if let Some(app) = &auth.github_app {
        let id = required(client, &ns, "spec.gitAuth.githubApp.appID", &app.app_id).await?;
        let inst = required(
            client,
            &ns,
            "spec.gitAuth.githubApp.installationID",
            &app.installation_id,
        )
        .await?;
        let key = required(
            client,
            &ns,
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
        return Ok(Creds::Basic {
            username: fetch::git::github_app::TOKEN_USER.into(),
            password: token,
        });
    }
    if let Some(b) = &auth.basic_auth {
        return Ok(Creds::Basic {
            username: required(client, &ns, "spec.gitAuth.basicAuth.userName", &b.user_name)
                .await?,
            password: required(client, &ns, "spec.gitAuth.basicAuth.password", &b.password).await?,
        });
    }
    Err(GitSourceError::Spec(
        "gitAuth config must specify exactly one of 'personalAccessToken', 'sshPrivateKey', 'basicAuth', or 'githubApp'".into(),
    ))
}

/// The commit `reference` names in `url`: the first ref whose full or short name matches
/// (annotated tags are peeled to their commit).
pub fn ls_remote(url: &str, creds: &Creds, reference: &str) -> Result<String, GitSourceError> {
    let shown = fetch::git::redact(url);
    let ep = fetch::git::endpoint(url)
        .map_err(|e| GitSourceError::Spec(format!("spec.projectRepo {shown:?}: {e}")))?;
    let known_hosts = match creds {
        Creds::Ssh {
            known_hosts: Some(text),
            ..
        } => Some(fetch::git::KnownHosts::parse(text).map_err(|e| {
            GitSourceError::Spec(format!(
                "spec.gitAuth.sshAuth.knownHosts: {}",
                e.to_string().replace("GIT_SSH_KNOWN_HOSTS ", "")
            ))
        })?),
        _ => None,
    };
    let mut remote = git2::Remote::create_detached(url).map_err(|e| {
        GitSourceError::Spec(format!("spec.projectRepo {shown:?}: {}", e.message()))
    })?;
    let mut cb = RemoteCallbacks::new();
    let offer = creds.offer();
    let answers = std::cell::Cell::new(0);
    let cred_ep = ep.clone();
    cb.credentials(move |asked, username, allowed| {
        fetch::git::answer(&cred_ep, &answers, asked, username, allowed, &offer).map_err(
            |refusal| match refusal {
                Refusal::OtherHost => git2::Error::from_str(
                    "credentials are only sent to the host of spec.projectRepo (refusing a redirect elsewhere)",
                ),
                Refusal::Refused => git2::Error::from_str("authentication refused"),
                Refusal::NothingFits => git2::Error::from_str(
                    "the repository asks for credentials; set gitAuth on the Stack",
                ),
                Refusal::Invalid(e) => e,
            },
        )
    });
    // The commit deployed is chosen here: a host key the Stack pins is checked here too, not
    // only by the fetch container, or a man in the middle could pick the commit.
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let refused_cb = std::sync::Arc::clone(&refused);
    let port = ep.port;
    cb.certificate_check(move |cert, host| {
        let Some(key) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        match fetch::git::check_host_key(known_hosts.as_ref(), host, port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => {
                if let Ok(mut r) = refused_cb.lock() {
                    *r = Some(
                        e.to_string()
                            .replace("GIT_SSH_KNOWN_HOSTS", "spec.gitAuth.sshAuth.knownHosts"),
                    );
                }
                Err(git2::Error::from_str("host key refused"))
            }
        }
    });
    let mode = creds.mode();
    let conn = remote
        .connect_auth(Direction::Fetch, Some(cb), None)
        .map_err(|e| {
            if let Some(why) = refused.lock().ok().and_then(|mut r| r.take()) {
                return GitSourceError::Spec(format!("{shown}: {why}"));
            }
            let msg = e.message().to_string();
            if e.code() == git2::ErrorCode::Auth
                || msg.contains("401")
                || msg.contains("authentication")
            {
                GitSourceError::Spec(format!(
                    "{shown}: authentication refused using {mode}; check the Stack's gitAuth"
                ))
            } else {
                GitSourceError::Unavailable(format!("cannot list {shown}: {msg}"))
            }
        })?;
    let heads = conn.list().map_err(|e| {
        GitSourceError::Unavailable(format!("cannot list {shown}: {}", e.message()))
    })?;
    let mut found: Option<String> = None;
    for h in heads {
        let name = h.name();
        let (base, peeled) = match name.strip_suffix("^{}") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let short = base
            .strip_prefix("refs/heads/")
            .or_else(|| base.strip_prefix("refs/tags/"))
            .unwrap_or(base);
        if base == reference || short == reference {
            if peeled {
                return Ok(h.oid().to_string());
            }
            found.get_or_insert_with(|| h.oid().to_string());
        }
    }
    found.ok_or_else(|| {
        GitSourceError::Unavailable(format!("no commits found for ref {reference:?} in {shown}"))
    })
}

/// Resolves the Stack's source to a commit (a SHA as given, or a branch/tag via ls-remote).
pub async fn current_commit(
    client: &Client,
    stack: &Stack,
    url: &str,
    reference: &str,
    github_api: &str,
) -> Result<String, GitSourceError> {
    if is_commit(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    let creds = credentials(client, stack, github_api).await?;
    let (url, reference) = (url.to_string(), reference.to_string());
    tokio::task::spawn_blocking(move || ls_remote(&url, &creds, &reference))
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "ls-remote task failed");
            Err(GitSourceError::Unavailable(e.to_string()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::StackSpecV1;
    use crate::api::stack_spec::StackSpec;

    fn stack(repo: Option<&str>, commit: Option<&str>, branch: Option<&str>) -> Stack {
        Stack::new(
            "s",
            StackSpecV1(StackSpec {
                stack: "dev".into(),
                project_repo: repo.map(str::to_string),
                commit: commit.map(str::to_string),
                branch: branch.map(str::to_string),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn validation_names_the_fields() {
        assert!(
            matches!(validate(&stack(None, None, Some("main"))), Err(GitSourceError::Spec(m)) if m.contains("projectRepo"))
        );
        let both = validate(&stack(Some("https://h/r.git"), Some("abc"), Some("main")));
        assert!(matches!(both, Err(GitSourceError::Spec(m)) if m.contains("only one of")));
        let none = validate(&stack(Some("https://h/r.git"), None, None));
        assert!(
            matches!(none, Err(GitSourceError::Spec(m)) if m.contains("missing \"commit\" or \"branch\""))
        );
        let bad = validate(&stack(Some("ftp://h/r"), None, Some("main")));
        assert!(matches!(bad, Err(GitSourceError::Spec(m)) if m.contains("not a git URL")));
        assert_eq!(
            validate(&stack(Some("https://h/r.git"), None, Some("main"))),
            Ok(("https://h/r.git".into(), "main".into()))
        );
    }

    #[test]
    fn ls_remote_resolves_branches_and_tags_of_a_real_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let tree_id = {
            let mut idx = repo.index().expect("index");
            std::fs::write(dir.path().join("Pulumi.yaml"), "name: x\nruntime: yaml\n")
                .expect("write");
            idx.add_path(std::path::Path::new("Pulumi.yaml"))
                .expect("add");
            idx.write_tree().expect("tree")
        };
        let tree = repo.find_tree(tree_id).expect("tree");
        let commit = repo
            .commit(Some("refs/heads/main"), &sig, &sig, "one", &tree, &[])
            .expect("commit");
        let obj = repo.find_object(commit, None).expect("obj");
        repo.tag("v1", &obj, &sig, "release", false).expect("tag");
        let url = format!("file://{}", dir.path().display());
        for r in ["main", "refs/heads/main", "v1", "refs/tags/v1"] {
            assert_eq!(
                ls_remote(&url, &Creds::None, r).expect(r),
                commit.to_string(),
                "{r}"
            );
        }
        let missing = ls_remote(&url, &Creds::None, "nope").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("no commits found for ref \"nope\""),
            "{missing}"
        );
        assert!(is_commit(&commit.to_string()));
        assert!(!is_commit("main"));
    }
}
