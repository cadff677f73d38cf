//! `projectRepo` sources: the Stack's credentials read from its Secrets (the operator's copy,
//! for `ls-remote` only; the workspace pod gets Secret references), and a branch or tag
//! resolved to its commit with `ls-remote` through libgit2.

mod auth;

use std::sync::{Arc, Mutex};

use fetch::git::Refusal;
use git2::{CertificateCheckStatus, Direction, RemoteCallbacks};
use kube::Client;
use tracing::warn;

use crate::api::stack::Stack;
pub use auth::{Creds, credentials};

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

/// The commit `reference` names in `url`, asked of the server with `ls-remote`.
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
    let refused = Arc::new(Mutex::new(None::<String>));
    let cb = callbacks(ep, creds, known_hosts, Arc::clone(&refused));
    let conn = remote
        .connect_auth(Direction::Fetch, Some(cb), None)
        .map_err(|e| {
            let host_key = refused.lock().ok().and_then(|mut r| r.take());
            connect_error(&shown, creds, host_key, &e)
        })?;
    let heads = conn.list().map_err(|e| {
        GitSourceError::Unavailable(format!("cannot list {shown}: {}", e.message()))
    })?;
    let listed = heads.iter().map(|h| (h.name(), h.oid().to_string()));
    find_ref(listed, reference).ok_or_else(|| {
        GitSourceError::Unavailable(format!("no commits found for ref {reference:?} in {shown}"))
    })
}

/// What `ls-remote` answers the server with: the credentials (only to `ep`), and the host
/// key check. The commit deployed is chosen here, so a host key the Stack pins is checked
/// here too, not only by the fetch container, or a man in the middle could pick the commit;
/// why a key was refused is left in `refused`.
fn callbacks(
    ep: fetch::git::Endpoint,
    creds: &Creds,
    known_hosts: Option<fetch::git::KnownHosts>,
    refused: Arc<Mutex<Option<String>>>,
) -> RemoteCallbacks<'static> {
    let mut cb = RemoteCallbacks::new();
    let offer = creds.offer();
    let answers = std::cell::Cell::new(0);
    let port = ep.port;
    cb.credentials(move |asked, username, allowed| {
        fetch::git::answer(&ep, &answers, asked, username, allowed, &offer).map_err(|refusal| {
            match refusal {
                Refusal::OtherHost => git2::Error::from_str(
                    "credentials are only sent to the host of spec.projectRepo (refusing a redirect elsewhere)",
                ),
                Refusal::Refused => git2::Error::from_str("authentication refused"),
                Refusal::NothingFits => git2::Error::from_str(
                    "the repository asks for credentials; set gitAuth on the Stack",
                ),
                Refusal::Invalid(e) => e,
            }
        })
    });
    cb.certificate_check(move |cert, host| {
        let Some(key) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        match fetch::git::check_host_key(known_hosts.as_ref(), host, port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => {
                if let Ok(mut r) = refused.lock() {
                    *r = Some(
                        e.to_string()
                            .replace("GIT_SSH_KNOWN_HOSTS", "spec.gitAuth.sshAuth.knownHosts"),
                    );
                }
                Err(git2::Error::from_str("host key refused"))
            }
        }
    });
    cb
}

/// Why `ls-remote` could not connect: a refused host key or credentials need the Stack
/// changed; anything else may pass.
fn connect_error(
    shown: &str,
    creds: &Creds,
    host_key: Option<String>,
    e: &git2::Error,
) -> GitSourceError {
    if let Some(why) = host_key {
        return GitSourceError::Spec(format!("{shown}: {why}"));
    }
    let msg = e.message();
    if e.code() == git2::ErrorCode::Auth || msg.contains("401") || msg.contains("authentication") {
        GitSourceError::Spec(format!(
            "{shown}: authentication refused using {}; check the Stack's gitAuth",
            creds.mode()
        ))
    } else {
        GitSourceError::Unavailable(format!("cannot list {shown}: {msg}"))
    }
}

/// The commit of the first ref whose full or short name (`refs/heads/`, `refs/tags/`
/// stripped) is `reference`; an annotated tag's peeled entry (`^{}`, its commit) wins over
/// the tag object.
fn find_ref<'a>(
    listed: impl Iterator<Item = (&'a str, String)>,
    reference: &str,
) -> Option<String> {
    let mut found: Option<String> = None;
    for (name, oid) in listed {
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
                return Some(oid);
            }
            found.get_or_insert(oid);
        }
    }
    found
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
    fn a_reference_names_a_branch_or_tag_in_full_or_short() {
        let listed = [
            ("HEAD", "h"),
            ("refs/heads/main", "m"),
            ("refs/heads/release", "r"),
            ("refs/tags/v1", "tag-object"),
            ("refs/tags/v1^{}", "tagged-commit"),
            ("refs/tags/v2", "light"),
        ];
        let find = |r: &str| find_ref(listed.iter().map(|(n, o)| (*n, o.to_string())), r);
        assert_eq!(find("main").as_deref(), Some("m"));
        assert_eq!(find("refs/heads/main").as_deref(), Some("m"));
        assert_eq!(find("v1").as_deref(), Some("tagged-commit"), "peeled wins");
        assert_eq!(find("refs/tags/v1").as_deref(), Some("tagged-commit"));
        assert_eq!(find("v2").as_deref(), Some("light"));
        assert_eq!(find("HEAD").as_deref(), Some("h"));
        assert_eq!(find("heads/main"), None);
        assert_eq!(find("nope"), None);
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
