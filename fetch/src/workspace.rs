//! The program directory on the shared volume: staging, the atomic switch, the record of what
//! was fetched, and the `--link` symlink.
//!
//! Layout, for `--target-dir /share/source --link /share/workspace`:
//! ```text
//! /share/source                      the verified tree (only ever a complete one)
//! /share/.source.fetched             what that tree is (written after the switch)
//! /share/.source.staging-<pid>       the tree being built (removed on any failure)
//! /share/workspace -> /share/source/<dir>
//! ```
//! Every source kind (Flux, git) fills a [`Staging`] and hands it to [`Workspace::commit`], so
//! the all-or-nothing rules live here once.

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::safe_path::{self, RelPath};
use crate::unpack::ModePolicy;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("--target-dir {0:?} must be an absolute path or name a directory inside one")]
    BadTarget(PathBuf),
    #[error("--dir {arg:?} is not a valid sub-directory: {reason}")]
    BadDir { arg: String, reason: String },
    #[error("--link {0:?} must not be inside --target-dir, which is replaced on every fetch")]
    LinkInsideTarget(PathBuf),
    #[error("--link {0:?} exists and is not a symlink; refusing to replace it")]
    LinkNotSymlink(PathBuf),
    #[error(
        "--dir {dir:?} does not name a directory in the fetched source; check the \
         sub-directory (Stack spec.fluxSource.dir or spec.repoDir)"
    )]
    MissingDir { dir: String },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub struct Workspace {
    target: PathBuf,
    dir: RelPath,
    link: Option<PathBuf>,
    modes: ModePolicy,
}

impl Workspace {
    pub fn new(
        target: &Path,
        dir: &str,
        link: Option<&Path>,
        modes: ModePolicy,
    ) -> Result<Self, WorkspaceError> {
        let target = absolute(target).ok_or_else(|| WorkspaceError::BadTarget(target.into()))?;
        if target.parent().is_none() || target.file_name().is_none() {
            return Err(WorkspaceError::BadTarget(target));
        }
        let dir = safe_path::sub_dir(dir).map_err(|e| WorkspaceError::BadDir {
            arg: dir.to_string(),
            reason: e.to_string(),
        })?;
        let link = match link {
            Some(l) => {
                let l = absolute(l).ok_or_else(|| WorkspaceError::BadTarget(l.into()))?;
                if l.starts_with(&target) {
                    return Err(WorkspaceError::LinkInsideTarget(l));
                }
                Some(l)
            }
            None => None,
        };
        Ok(Workspace {
            target,
            dir,
            link,
            modes,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn modes(&self) -> ModePolicy {
        self.modes
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = OsString::from(".");
        name.push(self.target.file_name().unwrap_or_default());
        name.push(suffix);
        self.target.with_file_name(name)
    }

    fn record_path(&self) -> PathBuf {
        self.sibling(".fetched")
    }

    /// The record is what makes a pod restart cheap: `key` identifies the content (digest or
    /// commit plus the mode policy), and the tree is reused only if it is still there.
    pub fn already_fetched(&self, key: &str) -> bool {
        let Ok(recorded) = fs::read_to_string(self.record_path()) else {
            return false;
        };
        recorded.lines().next() == Some(key)
            && fs::symlink_metadata(&self.target).is_ok_and(|md| md.is_dir())
    }

    /// Creates an empty staging directory next to the target (same file system, so the final
    /// rename is atomic), removing what an earlier crashed run may have left.
    pub fn stage(&self) -> Result<Staging, WorkspaceError> {
        let parent = self.target.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        self.remove_leftovers();
        let path = self.sibling(&format!(".staging-{}", std::process::id()));
        let mode = match self.modes {
            ModePolicy::Shared => 0o777,
            ModePolicy::Preserve => 0o755,
        };
        fs::DirBuilder::new()
            .mode(mode)
            .create(&path)
            .map_err(io_err("cannot create staging directory", &path))?;
        Ok(Staging { path: Some(path) })
    }

    fn remove_leftovers(&self) {
        let Some(parent) = self.target.parent() else {
            return;
        };
        let prefix = self.sibling(".staging-");
        let old = self.sibling(".old-");
        let Ok(entries) = fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.as_os_str().as_bytes();
            if name.starts_with(prefix.as_os_str().as_bytes())
                || name.starts_with(old.as_os_str().as_bytes())
            {
                debug!(path = %path.display(), "removing leftover from an earlier run");
                remove_tree(&path);
            }
        }
    }

    /// Switches the staged tree in as the target, records `key`, and (re)points the link.
    pub fn commit(&self, mut staging: Staging, key: &str) -> Result<(), WorkspaceError> {
        let staged = staging.path().to_path_buf();
        check_dir(&staged, &self.dir)?;
        // The record goes first so that a crash mid-switch never leaves a record that vouches
        // for the wrong tree.
        remove_file_if_exists(&self.record_path())?;
        if fs::symlink_metadata(&self.target).is_ok() {
            exchange(&staged, &self.target).map_err(io_err("cannot replace", &self.target))?;
            // `staged` now holds the previous tree; dropping `staging` removes it.
        } else {
            fs::rename(&staged, &self.target).map_err(io_err("cannot move into", &self.target))?;
            staging.path = None;
        }
        drop(staging);
        write_atomically(&self.record_path(), format!("{key}\n").as_bytes())?;
        self.relink()
    }

    /// Re-checks `--dir` against the current tree and points the link at it.
    pub fn relink(&self) -> Result<(), WorkspaceError> {
        check_dir(&self.target, &self.dir)?;
        let Some(link) = &self.link else {
            return Ok(());
        };
        let dest = if self.dir.is_root() {
            self.target.clone()
        } else {
            self.target.join(self.dir.as_path())
        };
        if let Ok(md) = fs::symlink_metadata(link)
            && !md.file_type().is_symlink()
        {
            return Err(WorkspaceError::LinkNotSymlink(link.clone()));
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let tmp = tmp_name(link);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&dest, &tmp).map_err(io_err("cannot create link", &tmp))?;
        fs::rename(&tmp, link).map_err(io_err("cannot create link", link))
    }

    /// Removes the target, its record and the link: after a failed run nothing remains that
    /// could be mistaken for a complete program.
    pub fn clear(&self) {
        if let Some(link) = &self.link
            && fs::symlink_metadata(link).is_ok_and(|md| md.file_type().is_symlink())
            && let Err(e) = fs::remove_file(link)
        {
            warn!(link = %link.display(), error = %e, "cannot remove link");
        }
        let _ = fs::remove_file(self.record_path());
        if fs::symlink_metadata(&self.target).is_ok() {
            remove_tree(&self.target);
        }
        self.remove_leftovers();
    }
}

/// A directory being filled; removed on drop unless it became the target.
#[derive(Debug)]
pub struct Staging {
    path: Option<PathBuf>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_tree(&path);
        }
    }
}

fn absolute(p: &Path) -> Option<PathBuf> {
    if p.as_os_str().is_empty() {
        return None;
    }
    std::path::absolute(p).ok()
}

fn check_dir(root: &Path, dir: &RelPath) -> Result<(), WorkspaceError> {
    // Following symlinks here is safe: the unpacker only creates ones that stay inside.
    match fs::metadata(root.join(dir.as_path())) {
        Ok(md) if md.is_dir() => Ok(()),
        _ => Err(WorkspaceError::MissingDir {
            dir: dir.to_string(),
        }),
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), WorkspaceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

fn remove_tree(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), WorkspaceError> {
    let tmp = tmp_name(path);
    // No fsync: an emptyDir does not outlive a node crash, and an fsync here would make
    // ext4 flush the whole freshly written tree before returning.
    let mut f = fs::File::create(&tmp).map_err(io_err("cannot write", &tmp))?;
    f.write_all(contents)
        .map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot write", path))
}

/// Swaps two paths in one step (`renameat2(RENAME_EXCHANGE)`), so readers of the target see
/// either the old tree or the new one. File systems without it get rename-aside-then-in.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            let aside = tmp_name(b);
            fs::rename(b, &aside)?;
            fs::rename(a, b)?;
            fs::rename(&aside, a)
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(root: &Path, dir: &str) -> Workspace {
        Workspace::new(
            &root.join("source"),
            dir,
            Some(&root.join("workspace")),
            ModePolicy::Shared,
        )
        .unwrap()
    }

    fn staged_with(ws: &Workspace, file: &str, body: &str) -> Staging {
        let s = ws.stage().unwrap();
        let p = s.path().join(file);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
        s
    }

    #[test]
    fn a_commit_moves_the_tree_in_records_it_and_links_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = ws(tmp.path(), "app");
        ws.commit(staged_with(&ws, "app/Pulumi.yaml", "v1"), "k1")
            .unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("workspace/Pulumi.yaml")).unwrap(),
            "v1"
        );
        assert!(ws.already_fetched("k1"));
        assert!(!ws.already_fetched("k2"));
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("staging")),
            "no staging left: {names:?}"
        );
    }

    #[test]
    fn a_second_commit_replaces_the_tree_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = ws(tmp.path(), "");
        ws.commit(staged_with(&ws, "old.txt", "v1"), "k1").unwrap();
        ws.commit(staged_with(&ws, "new.txt", "v2"), "k2").unwrap();
        assert!(!tmp.path().join("source/old.txt").exists());
        assert!(tmp.path().join("workspace/new.txt").exists());
        assert!(ws.already_fetched("k2"));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_missing_dir_fails_the_commit_and_leaves_no_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = ws(tmp.path(), "nope");
        let err = ws.commit(staged_with(&ws, "a.txt", ""), "k").unwrap_err();
        assert!(matches!(err, WorkspaceError::MissingDir { .. }), "{err}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn clear_removes_target_record_and_link() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = ws(tmp.path(), "");
        ws.commit(staged_with(&ws, "a.txt", ""), "k").unwrap();
        ws.clear();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn escaping_dirs_and_links_inside_the_target_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("source");
        assert!(matches!(
            Workspace::new(&t, "../etc", None, ModePolicy::Shared),
            Err(WorkspaceError::BadDir { .. })
        ));
        assert!(matches!(
            Workspace::new(&t, "", Some(&t.join("ws")), ModePolicy::Shared),
            Err(WorkspaceError::LinkInsideTarget(_))
        ));
        assert!(matches!(
            Workspace::new(Path::new("/"), "", None, ModePolicy::Shared),
            Err(WorkspaceError::BadTarget(_))
        ));
    }

    #[test]
    fn a_real_directory_at_the_link_path_is_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("workspace")).unwrap();
        let ws = ws(tmp.path(), "");
        let err = ws.commit(staged_with(&ws, "a", ""), "k").unwrap_err();
        assert!(matches!(err, WorkspaceError::LinkNotSymlink(_)), "{err}");
    }
}
