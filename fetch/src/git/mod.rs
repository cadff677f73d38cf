//! `fetch git`: a commit from a Git repository into the workspace, with libgit2 (vendored,
//! HTTPS and SSH). The checkout is staged and switched in exactly like a Flux artifact (see
//! `workspace`), and HEAD is verified against the requested commit.

pub mod answer;
mod checkout;
pub mod credentials;
mod endpoint;
pub mod github_app;
pub mod known_hosts;
pub mod ssh_key;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, ErrorClass, ErrorCode, FetchOptions, Oid,
    RemoteCallbacks, Repository, RepositoryInitOptions,
};
use tracing::{debug, info, warn};

pub use answer::{Offer, Refusal, answer};
use checkout::{apply_modes, checkout};
pub use credentials::Credentials;
pub use endpoint::{Endpoint, credentials_go_to, endpoint, redact};
pub use known_hosts::KnownHosts;
use known_hosts::Verdict;

use crate::workspace::{Workspace, WorkspaceError};

#[derive(Debug, Clone)]
pub struct GitRequest {
    pub url: String,
    pub revision: String,
    pub shallow: bool,
    pub timeout: Duration,
    pub credentials: Credentials,
    pub known_hosts: Option<KnownHosts>,
    /// GitHub API base for App tokens.
    pub github_api: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "authentication to {url} was refused using {mode}; check the credentials in the \
         Secret the Stack names (gitAuth)"
    )]
    AuthRefused { url: String, mode: &'static str },
    #[error(
        "{url} asks for credentials and none are set; configure gitAuth on the Stack \
         (GIT_USERNAME/GIT_PASSWORD, GIT_TOKEN, GIT_SSH_PRIVATE_KEY or a GitHub App)"
    )]
    AuthMissing { url: String },
    #[error("revision {revision} is not in {url}; push it, or fix the Stack's commit or branch")]
    UnknownRevision { revision: String, url: String },
    #[error("cannot reach {url}: {detail}; check the URL and that the pod can reach the host")]
    Unreachable { url: String, detail: String },
    #[error(
        "the SSH host key of {host} does not match GIT_SSH_KNOWN_HOSTS: the server changed its \
         key or someone is in the middle; update the known hosts only if the change is expected"
    )]
    HostKeyMismatch { host: String },
    #[error(
        "the SSH host key of {host} is not in GIT_SSH_KNOWN_HOSTS; add the host's key \
         (ssh-keyscan) to the known hosts"
    )]
    HostKeyUnknown { host: String },
    #[error(
        "the SSH private key could not be used: wrong passphrase in GIT_PASSWORD, or a key \
         type libssh2 does not support ({detail})"
    )]
    KeyUnusable { detail: String },
    #[error("HEAD is {got} after checkout, not the requested {want}")]
    HeadMismatch { want: String, got: String },
    #[error("fetching {url} took longer than {secs}s (--timeout)")]
    TimedOut { url: String, secs: u64 },
    #[error("the git URL {0:?} is not an https://, http://, ssh://, file:// or user@host:path URL")]
    BadUrl(String),
    #[error("--revision (GIT_REVISION) is empty: give a commit SHA, a branch or a tag")]
    NoRevision,
    #[error("{0}")]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    GitHubApp(#[from] github_app::GitHubAppError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("git: {0}")]
    Git(String),
    #[error("cannot set permissions in the checkout")]
    Io(#[source] std::io::Error),
}

impl GitError {
    /// Failures no other way of asking the server would avoid.
    fn ends_fetch(&self) -> bool {
        matches!(
            self,
            GitError::AuthRefused { .. }
                | GitError::AuthMissing { .. }
                | GitError::Unreachable { .. }
                | GitError::HostKeyMismatch { .. }
                | GitError::HostKeyUnknown { .. }
                | GitError::KeyUnusable { .. }
                | GitError::TimedOut { .. }
        )
    }
}

#[derive(Debug)]
pub enum Outcome {
    Reused,
    Fetched { commit: String },
}

/// What an SSH server's host key is worth: trusted by the known hosts, or accepted unverified
/// (with a warning) when there are none; anything else is an error to report.
pub fn check_host_key(
    known: Option<&KnownHosts>,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), GitError> {
    let name = known_hosts::host_name(host, port);
    let Some(kh) = known else {
        warn!(
            host = %name,
            "accepting the SSH host key without verification; set \
             gitAuth.sshAuth.knownHosts (GIT_SSH_KNOWN_HOSTS) to verify it"
        );
        return Ok(());
    };
    match kh.check(host, port, key) {
        Verdict::Trusted => Ok(()),
        Verdict::Mismatch => Err(GitError::HostKeyMismatch { host: name }),
        Verdict::Unknown => Err(GitError::HostKeyUnknown { host: name }),
    }
}

fn is_full_sha(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64)
        && rev
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Fetches and checks out; on error the caller clears the workspace.
pub fn fetch(req: &GitRequest, ws: &Workspace) -> Result<Outcome, GitError> {
    let revision = req.revision.trim();
    if revision.is_empty() {
        return Err(GitError::NoRevision);
    }
    let ep = endpoint(&req.url)?;
    credentials::check_transport(&req.credentials, &ep.scheme)?;
    let key = format!("git {revision} modes={:?}", ws.modes());
    // Only a commit SHA names fixed content; a branch may have moved since the last run.
    if is_full_sha(revision) && ws.already_fetched(&key) {
        info!(
            commit = revision,
            "commit already checked out, not fetching again"
        );
        ws.relink()?;
        return Ok(Outcome::Reused);
    }

    let started = Instant::now();
    let deadline = started + req.timeout;
    set_timeouts(req.timeout);
    let offer = match &req.credentials {
        Credentials::GitHubApp {
            app_id,
            installation_id,
            private_key,
        } => {
            let token = github_app::installation_token(
                &req.github_api,
                app_id,
                installation_id,
                private_key,
                req.timeout,
            )?;
            debug!("exchanged the GitHub App's key for an installation token");
            Offer::Basic {
                username: github_app::TOKEN_USER.into(),
                password: token,
            }
        }
        Credentials::Basic { username, password } => Offer::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        Credentials::Token(t) => Offer::Basic {
            username: "git".into(),
            password: t.clone(),
        },
        Credentials::SshKey { key, passphrase } => Offer::SshKey {
            key: key.clone(),
            passphrase: passphrase.clone(),
        },
        Credentials::None => Offer::None,
    };
    let session = Session {
        req,
        ep: &ep,
        offer,
        deadline,
        auth_attempts: Cell::new(0),
        host_key: RefCell::new(None),
    };

    let staging = ws.stage()?;
    let repo = {
        let mut opts = RepositoryInitOptions::new();
        opts.no_reinit(true).mkdir(false);
        Repository::init_opts(staging.path(), &opts).map_err(|e| session.classify(e))?
    };
    let oid = session.fetch_revision(&repo, revision)?;
    repo.set_head_detached(oid)
        .map_err(|e| session.classify(e))?;
    // Every object was hashed when the pack was indexed; hashing each blob again as the
    // checkout reads it proves nothing new.
    git2::opts::strict_hash_verification(false);
    checkout(&repo, ws.modes()).map_err(|e| session.classify(e))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| session.classify(e))?
        .id();
    if head != oid || (is_full_sha(revision) && head.to_string() != revision) {
        return Err(GitError::HeadMismatch {
            want: revision.to_string(),
            got: head.to_string(),
        });
    }
    apply_modes(&repo, staging.path(), ws.modes())?;
    drop(repo);
    let key = format!("git {head} modes={:?}", ws.modes());
    ws.commit(staging, &key)?;
    info!(
        url = %ep.shown,
        revision,
        commit = %head,
        shallow = req.shallow,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "commit fetched and checked out"
    );
    Ok(Outcome::Fetched {
        commit: head.to_string(),
    })
}

struct Session<'a> {
    req: &'a GitRequest,
    ep: &'a Endpoint,
    offer: Offer,
    deadline: Instant,
    auth_attempts: Cell<u32>,
    /// Set when the host-key check refused the server.
    host_key: RefCell<Option<GitError>>,
}

impl Session<'_> {
    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(|url, username, allowed| {
            let auth = |message: &str| git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, message);
            answer(self.ep, &self.auth_attempts, url, username, allowed, &self.offer).map_err(
                |refusal| match refusal {
                    Refusal::OtherHost => {
                        warn!(
                            asked = %redact(url),
                            configured = %self.ep.shown,
                            "not sending credentials to a host other than the configured one (a redirect?)"
                        );
                        auth("credentials are only sent to the configured host")
                    }
                    Refusal::Refused => auth("refused"),
                    Refusal::NothingFits => auth("no credentials"),
                    Refusal::Invalid(e) => e,
                },
            )
        });
        cb.certificate_check(|cert, host| {
            let Some(hk) = cert.as_hostkey() else {
                // TLS: libgit2's own verification against the system roots stands.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hk.hostkey() else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            match check_host_key(self.req.known_hosts.as_ref(), host, self.ep.port, key) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(err) => {
                    *self.host_key.borrow_mut() = Some(err);
                    Err(git2::Error::new(
                        ErrorCode::Certificate,
                        ErrorClass::Ssh,
                        "host key refused",
                    ))
                }
            }
        });
        cb.transfer_progress(|_| Instant::now() < self.deadline);
        cb
    }

    fn options(&self, depth: Option<i32>) -> FetchOptions<'_> {
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(self.callbacks());
        fo.download_tags(AutotagOption::None);
        if let Some(d) = depth {
            fo.depth(d);
        }
        fo
    }

    fn run_fetch(
        &self,
        repo: &Repository,
        refspecs: &[&str],
        depth: Option<i32>,
    ) -> Result<(), GitError> {
        let mut remote = repo
            .remote_anonymous(&self.req.url)
            .map_err(|e| self.classify(e))?;
        let mut opts = self.options(depth);
        remote
            .fetch(refspecs, Some(&mut opts), None)
            .map_err(|e| self.classify(e))
    }

    /// Fetches what `revision` needs and returns the commit it names.
    fn fetch_revision(&self, repo: &Repository, revision: &str) -> Result<Oid, GitError> {
        // libgit2's local transport cannot fetch shallow; a local clone is cheap anyway.
        let depth = (self.req.shallow && self.ep.scheme != "file").then_some(1);
        let unknown = || GitError::UnknownRevision {
            revision: revision.to_string(),
            url: self.ep.shown.clone(),
        };
        if is_full_sha(revision) {
            let oid = Oid::from_str(revision).map_err(|_| unknown())?;
            // Ask for the commit itself: servers that allow it (GitHub, GitLab, git with
            // uploadpack.allowReachableSHA1InWant) send just that, at depth 1 if shallow.
            match self.run_fetch(repo, &[revision], depth) {
                Ok(()) if repo.find_commit(oid).is_ok() => return Ok(oid),
                Ok(()) => {}
                Err(e) if e.ends_fetch() => return Err(e),
                Err(e) => {
                    debug!(error = %e, "the server refused the commit by SHA; fetching all branches and tags");
                }
            }
            self.run_fetch(
                repo,
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                None,
            )?;
            return repo.find_commit(oid).map(|c| c.id()).map_err(|_| unknown());
        }
        let refspecs = [
            format!("+refs/heads/{revision}:refs/remotes/origin/{revision}"),
            format!("+refs/tags/{revision}:refs/tags/{revision}"),
        ];
        let refs: Vec<&str> = refspecs.iter().map(String::as_str).collect();
        self.run_fetch(repo, &refs, depth)?;
        for name in [
            format!("refs/remotes/origin/{revision}"),
            format!("refs/tags/{revision}"),
        ] {
            if let Ok(r) = repo.find_reference(&name)
                && let Ok(c) = r.peel_to_commit()
            {
                return Ok(c.id());
            }
        }
        Err(unknown())
    }

    /// Turns libgit2's error into one that says what to do.
    fn classify(&self, e: git2::Error) -> GitError {
        if let Some(err) = self.host_key.borrow_mut().take() {
            return err;
        }
        let url = self.ep.shown.clone();
        let message = e.message().to_string();
        let lower = message.to_ascii_lowercase();
        if Instant::now() >= self.deadline || e.code() == ErrorCode::User {
            return GitError::TimedOut {
                url,
                secs: self.req.timeout.as_secs(),
            };
        }
        if lower.contains("private key")
            || lower.contains("passphrase")
            || lower.contains("unable to extract public key")
        {
            return GitError::KeyUnusable { detail: message };
        }
        let auth = e.code() == ErrorCode::Auth
            || lower.contains("authentication")
            || lower.contains("401")
            || lower.contains("403");
        if auth {
            return match self.offer {
                Offer::None => GitError::AuthMissing { url },
                _ => GitError::AuthRefused {
                    url,
                    mode: self.req.credentials.mode(),
                },
            };
        }
        let network = matches!(
            e.class(),
            ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssl
        ) || lower.contains("failed to connect")
            || lower.contains("failed to resolve")
            || lower.contains("could not resolve")
            || lower.contains("timed out")
            || lower.contains("connection refused")
            || lower.contains("failed to start ssh session")
            || lower.contains("failed getting banner");
        if network {
            return GitError::Unreachable {
                url,
                detail: message,
            };
        }
        if lower.contains("not found") && e.class() == ErrorClass::Http
            || lower.contains("repository not found")
            || lower.contains("does not appear to be a git repository")
        {
            return GitError::UnknownRevision {
                revision: self.req.revision.clone(),
                url,
            };
        }
        GitError::Git(message)
    }
}

/// libgit2's connect and I/O timeouts (process-wide), so a silent server cannot hang the pod.
fn set_timeouts(timeout: Duration) {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: these set libgit2 globals; fetch is single-threaded when it calls them.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_shas_only() {
        assert!(is_full_sha(&"a".repeat(40)));
        assert!(!is_full_sha(&"A".repeat(40)));
        assert!(!is_full_sha("main"));
        assert!(!is_full_sha(&"a".repeat(12)));
    }
}
