//! Exit codes, and how every failure maps to one.
//!
//! The codes are part of the CLI contract (README, "Exit codes"): the operator and people
//! reading `kubectl describe pod` tell failures apart by them.

use std::error::Error;

use crate::digest::DigestError;
use crate::flux::FluxError;
use crate::git::GitError;
use crate::git::github_app::GitHubAppError;
use crate::unpack::{Cause, UnpackError};
use crate::workspace::WorkspaceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitKind {
    /// A local failure: file system, permissions, a full volume. A later attempt may pass.
    Internal = 1,
    /// Bad flags or environment: nothing was downloaded.
    Usage = 2,
    /// The source could not be reached or kept failing, or --timeout passed (while downloading
    /// or unpacking). A later attempt may pass.
    Network = 3,
    /// The artifact is gone (HTTP 404/410).
    NotFound = 4,
    /// The bytes are not what was asked for (digest mismatch).
    Verification = 5,
    /// The archive is unsafe, corrupt, or over the size limit: the same artifact fails again.
    UnsafeArchive = 6,
    /// The source has no such `--dir`.
    MissingDir = 7,
    /// The server refused the credentials (or none were given and it wants some).
    Auth = 8,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        self as u8
    }
}

pub trait Classify {
    fn exit_kind(&self) -> ExitKind;
}

impl Classify for DigestError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Usage
    }
}

impl Classify for WorkspaceError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            WorkspaceError::MissingDir { .. } => ExitKind::MissingDir,
            WorkspaceError::Io { .. } => ExitKind::Internal,
            WorkspaceError::BadTarget(_)
            | WorkspaceError::BadDir { .. }
            | WorkspaceError::LinkInsideTarget(_)
            | WorkspaceError::LinkNotSymlink(_) => ExitKind::Usage,
        }
    }
}

impl Classify for UnpackError {
    fn exit_kind(&self) -> ExitKind {
        match self.cause() {
            Cause::Local => ExitKind::Internal,
            Cause::Deadline => ExitKind::Network,
            Cause::Archive => ExitKind::UnsafeArchive,
        }
    }
}

impl Classify for FluxError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            FluxError::Workspace(e) => e.exit_kind(),
            FluxError::Http(e) if e.is_not_found() => ExitKind::NotFound,
            FluxError::Http(_) => ExitKind::Network,
            FluxError::DigestMismatch { .. } => ExitKind::Verification,
            FluxError::Unpack { source, .. } => source.exit_kind(),
            FluxError::Client(_) | FluxError::Panicked => ExitKind::Internal,
        }
    }
}

impl Classify for GitHubAppError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            GitHubAppError::Key | GitHubAppError::Id(_) | GitHubAppError::ApiUrl(_) => {
                ExitKind::Usage
            }
            GitHubAppError::Unreachable { .. } | GitHubAppError::NoToken(_) => ExitKind::Network,
            GitHubAppError::Refused { .. } => ExitKind::Auth,
        }
    }
}

impl Classify for GitError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            GitError::AuthRefused { .. }
            | GitError::AuthMissing { .. }
            | GitError::KeyUnusable { .. } => ExitKind::Auth,
            GitError::UnknownRevision { .. } => ExitKind::NotFound,
            GitError::Unreachable { .. } | GitError::TimedOut { .. } => ExitKind::Network,
            GitError::HostKeyMismatch { .. }
            | GitError::HostKeyUnknown { .. }
            | GitError::HeadMismatch { .. } => ExitKind::Verification,
            GitError::BadUrl(_) | GitError::NoRevision | GitError::Credentials(_) => {
                ExitKind::Usage
            }
            GitError::GitHubApp(e) => e.exit_kind(),
            GitError::Workspace(e) => e.exit_kind(),
            GitError::Git(_) | GitError::Io(_) => ExitKind::Internal,
        }
    }
}

/// The error and its causes on one line, `outer: inner: innermost`.
pub fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some libraries repeat their source's text in their own; skip exact repeats.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_one_line_with_every_cause() {
        let inner = std::io::Error::other("disk full");
        let e = UnpackError::Io {
            path: "/share/x".into(),
            source: inner,
        };
        assert_eq!(chain(&e), "cannot write /share/x: disk full");
        assert_eq!(e.exit_kind(), ExitKind::Internal);
    }

    #[test]
    fn codes_are_distinct() {
        let all = [
            ExitKind::Internal,
            ExitKind::Usage,
            ExitKind::Network,
            ExitKind::NotFound,
            ExitKind::Verification,
            ExitKind::UnsafeArchive,
            ExitKind::MissingDir,
            ExitKind::Auth,
        ];
        let mut codes: Vec<u8> = all.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&0));
    }
}
