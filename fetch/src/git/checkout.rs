//! The checkout of the fetched commit, with the workspace's permission policy.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use git2::Repository;

use super::GitError;
use crate::unpack::ModePolicy;

/// Writes HEAD's tree. Files are written as committed, without eol conversion or ident
/// expansion: what PKO's go-git checkout does, and one attribute lookup less per file. Under
/// a policy other than `Preserve` files and directories are created with the policy's modes
/// (umask cleared for the checkout: fetch is single-threaded here), so that only executables
/// need a chmod afterwards instead of every file.
pub(super) fn checkout(repo: &Repository, policy: ModePolicy) -> Result<(), git2::Error> {
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force().disable_filters(true);
    if policy == ModePolicy::Preserve {
        return repo.checkout_head(Some(&mut opts));
    }
    opts.dir_perm(policy.dir_mode(None) as i32)
        .file_perm(policy.file_mode(0o644) as i32);
    // SAFETY: umask only swaps the process's creation mask; no other thread creates files.
    let before = unsafe { libc::umask(0) };
    let result = repo.checkout_head(Some(&mut opts));
    // SAFETY: as above, restoring the mask this process had.
    unsafe { libc::umask(before) };
    result
}

/// The checkout gets the same permission policy as an unpacked artifact. `checkout` created
/// the work tree with the modes of plain files and directories; executables (which git's
/// index names) get theirs here, the top directory too, and `.git` is walked.
pub(super) fn apply_modes(
    repo: &Repository,
    root: &Path,
    policy: ModePolicy,
) -> Result<(), GitError> {
    if policy == ModePolicy::Preserve {
        return Ok(());
    }
    let chmod = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(GitError::Io)
    };
    chmod(root, policy.dir_mode(None))?;
    let executable = policy.file_mode(0o755);
    if executable != policy.file_mode(0o644) {
        let index = repo
            .index()
            .map_err(|e| GitError::Git(e.message().to_string()))?;
        for entry in index.iter().filter(|e| e.mode == 0o100755) {
            chmod(&root.join(OsStr::from_bytes(&entry.path)), executable)?;
        }
    }
    walk_modes(&root.join(".git"), policy).map_err(GitError::Io)
}

/// Sets the policy's modes on every file and directory under `root`.
fn walk_modes(root: &Path, policy: ModePolicy) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(policy.dir_mode(None)))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                fs::set_permissions(
                    entry.path(),
                    fs::Permissions::from_mode(policy.file_mode(mode)),
                )?;
            }
        }
    }
    Ok(())
}
