//! The Stack's source resolved to what the workspace runs and the revision it is at: a git
//! repository (its branch head or pinned commit), a Flux source's artifact, a Program's
//! artifact, or, for a destroy on deletion, just the project last deployed. Reads only;
//! whatever stops the reconcile here is a typed [`Stop`] the reconcile turns into status.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::DynamicObject;

use super::Context;
use super::stop::{Halt, Stop};
use super::workspace_spec::{self, Source};
use super::{flux, git};
use crate::api::program::Program;
use crate::api::stack::Stack;
use crate::api::workspace::ProjectInfo;

/// How long a spec that names a missing or unreadable Secret waits before another look.
const SECRET_RETRY: Duration = Duration::from_secs(60);
/// How long an unprocessable Flux source reference waits before another look.
const SOURCE_REF_RETRY: Duration = Duration::from_secs(30);

/// What the reconcile knows when it resolves the source.
pub struct Seen<'a> {
    pub ctx: &'a Context,
    pub stack: &'a Stack,
    pub ns: &'a str,
    pub deleting: bool,
    /// The project the last update ran on (`status.projectInfo`).
    pub project_info: Option<&'a ProjectInfo>,
}

/// The source now.
pub struct Resolved {
    pub source: Source,
    /// The revision (commit, artifact revision); empty when there is none.
    pub commit: String,
    /// Whether the revision is a branch head that must be polled.
    pub polls_branch: bool,
}

/// At most one of the three sources may be set.
pub fn one_source(stack: &Stack) -> Result<(), Stop> {
    let spec = &stack.spec.0;
    let set = [
        spec.project_repo.is_some(),
        spec.flux_source.is_some(),
        spec.program_ref.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(Stop::spec(
            "set only one of spec.projectRepo, spec.fluxSource and spec.programRef",
        ));
    }
    Ok(())
}

/// A destroy on deletion needs no program when the project is known: the workspace is made
/// from the last project info (PKO does the same), so a source that is gone does not block
/// the destroy.
fn destroy_from_project(
    stack: &Stack,
    deleting: bool,
    project_info: Option<&ProjectInfo>,
) -> Option<Source> {
    let spec = &stack.spec.0;
    let destroys = deleting
        && spec.destroy_on_finalize.unwrap_or(false)
        && !spec.preview.unwrap_or(false)
        && !spec.run_program.unwrap_or(false);
    project_info
        .filter(|_| destroys)
        .map(|p| Source::ProjectInfo(p.clone()))
}

/// A Stack names its Pulumi stack. Our schema requires it, PKO's does too, but both admit a
/// Stack without any spec, which reads as the default (empty) one.
pub fn named(stack: &Stack) -> Result<(), Stop> {
    if stack.spec.0.stack.trim().is_empty() {
        return Err(Stop::spec(
            "spec.stack is empty: name the Pulumi stack to deploy (e.g. dev or org/project/dev)",
        ));
    }
    Ok(())
}

pub async fn resolve(seen: &Seen<'_>) -> Result<Resolved, Halt> {
    if !seen.deleting {
        named(seen.stack)?;
    }
    one_source(seen.stack)?;
    if let Some(source) = destroy_from_project(seen.stack, seen.deleting, seen.project_info) {
        return Ok(Resolved {
            source,
            commit: String::new(),
            polls_branch: false,
        });
    }
    let spec = &seen.stack.spec.0;
    if spec.project_repo.is_some() {
        return resolve_git(seen).await;
    }
    if let Some(fs) = &spec.flux_source {
        let r = &fs.source_ref;
        let ar = seen
            .ctx
            .flux_watches
            .ensure(&seen.ctx.client, r)
            .await
            .map_err(|e| Stop::SpecInvalid {
                message: format!("spec.fluxSource.sourceRef: cannot process source reference: {e}"),
                retry: Some(SOURCE_REF_RETRY),
            })?;
        let obj = match seen.ctx.flux_watches.cached(&ar, seen.ns, &r.name) {
            Some(o) => Some(o),
            None => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(seen.ctx.client.clone(), seen.ns, &ar);
                api.get_opt(&r.name).await?.map(Arc::new)
            }
        };
        let Some(obj) = obj else {
            return Err(Stop::SourceUnavailable(format!(
                "could not resolve sourceRef: {} {}/{} not found",
                r.kind, seen.ns, r.name
            ))
            .into());
        };
        let Some(a) = flux::artifact(&obj.data["status"]) else {
            return Err(Stop::SourceUnavailable("Flux source has no artifact".into()).into());
        };
        return Ok(Resolved {
            source: Source::Artifact {
                url: a.url,
                digest: a.digest,
                dir: fs.dir.clone(),
            },
            commit: a.revision,
            polls_branch: false,
        });
    }
    if let Some(p) = &spec.program_ref {
        let programs: Api<Program> = Api::namespaced(seen.ctx.client.clone(), seen.ns);
        let Some(program) = programs.get_opt(&p.name).await? else {
            return Err(
                Stop::SourceUnavailable("unable to retrieve program for stack".into()).into(),
            );
        };
        let Some(a) = program.status.as_ref().and_then(|s| s.artifact.as_ref()) else {
            return Err(Stop::SourceUnavailable("Program has no artifact".into()).into());
        };
        return Ok(Resolved {
            source: Source::Artifact {
                url: a.url.clone(),
                digest: a.digest.clone().unwrap_or_default(),
                dir: None,
            },
            commit: a.revision.clone().unwrap_or_default(),
            polls_branch: false,
        });
    }
    Ok(Resolved {
        source: Source::None,
        commit: String::new(),
        polls_branch: false,
    })
}

async fn resolve_git(seen: &Seen<'_>) -> Result<Resolved, Halt> {
    let spec = &seen.stack.spec.0;
    let (url, reference) = git::validate(seen.stack).map_err(Stop::spec)?;
    let auth = workspace_spec::workspace_git_auth(seen.stack).map_err(Stop::spec)?;
    let api = &seen.ctx.github_api;
    let commit = git::current_commit(&seen.ctx.client, seen.stack, &url, &reference, api)
        .await
        .map_err(|e| match e {
            git::GitSourceError::Spec(message) => Stop::SpecInvalid {
                message,
                retry: Some(SECRET_RETRY),
            },
            git::GitSourceError::Unavailable(m) => Stop::SourceUnavailable(m),
        })?;
    Ok(Resolved {
        source: Source::Git {
            url,
            commit: commit.clone(),
            dir: spec.repo_dir.clone(),
            shallow: spec.shallow.unwrap_or(false),
            auth: auth.map(Box::new),
        },
        commit,
        polls_branch: spec.branch.as_deref().is_some_and(|b| !b.is_empty()),
    })
}

#[cfg(test)]
mod tests;
