//! Validation of paths that come from untrusted input: archive entry names, link targets and the
//! `--dir` sub-directory.
//!
//! A validated path is relative, made only of normal components, and therefore cannot name
//! anything outside the directory it is joined to (symlinks aside; the unpacker handles those).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{0:?} is an absolute path")]
    Absolute(String),
    #[error("{0:?} contains a '..' component")]
    ParentComponent(String),
    #[error("{0:?} contains a backslash")]
    Backslash(String),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error("the name is empty")]
    Empty,
}

/// A relative path made only of normal components. Empty means "the root itself".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(PathBuf);

impl RelPath {
    pub fn root() -> Self {
        RelPath(PathBuf::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The parent path, or `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(RelPath(
            self.0.parent().map(Path::to_path_buf).unwrap_or_default(),
        ))
    }

    /// Every proper ancestor, nearest the root first, excluding the root itself.
    pub fn ancestors(&self) -> impl Iterator<Item = &Path> {
        let mut list: Vec<&Path> = self
            .0
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        list.reverse();
        list.into_iter()
    }

    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0.iter()
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            write!(f, "{}", self.0.display())
        }
    }
}

/// Validates an archive entry name (raw bytes as stored in the tar header).
///
/// `.` components and a trailing slash are harmless and dropped, so source-controller's `./`
/// root entry validates to the root. Anything that could leave the root is refused: a leading
/// `/`, any `..` component, and backslashes (which would be separators on the Windows hosts
/// where some archives are made, and have no business in a program's file names).
pub fn archive_name(raw: &[u8]) -> Result<RelPath, PathError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.contains(&0) {
        return Err(PathError::Nul(shown()));
    }
    if raw.contains(&b'\\') {
        return Err(PathError::Backslash(shown()));
    }
    if raw[0] == b'/' {
        return Err(PathError::Absolute(shown()));
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(PathError::ParentComponent(shown())),
            normal => out.push(OsStr::from_bytes(normal)),
        }
    }
    Ok(RelPath(out))
}

/// Validates the `--dir` argument: same rules as an archive name, but empty means the root.
pub fn sub_dir(arg: &str) -> Result<RelPath, PathError> {
    if arg.is_empty() {
        return Ok(RelPath::root());
    }
    archive_name(arg.as_bytes())
}

/// Normalises `rel` lexically (no file system access) and reports whether it stays inside.
/// Used to reason about symlink targets; `Component::ParentDir` pops, `CurDir` is skipped.
pub fn lexical_join(base: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = base.iter().collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_validate_to_their_components() {
        assert_eq!(
            archive_name(b"./src/index.ts").unwrap().as_path(),
            Path::new("src/index.ts")
        );
        assert_eq!(archive_name(b"a//b/").unwrap().as_path(), Path::new("a/b"));
        assert!(archive_name(b".").unwrap().is_root());
        assert!(archive_name(b"./").unwrap().is_root());
        assert_eq!(
            archive_name(b"..foo/bar..").unwrap().as_path(),
            Path::new("..foo/bar..")
        );
    }

    #[test]
    fn escaping_names_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"..",
            b"../x",
            b"a/../../x",
            b"a/..",
            b"./../x",
            b"a\\..\\x",
            b"a\0b",
            b"",
        ] {
            assert!(
                archive_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sub_dir_accepts_empty_as_the_root() {
        assert!(sub_dir("").unwrap().is_root());
        assert_eq!(sub_dir("infra/").unwrap().as_path(), Path::new("infra"));
        assert!(sub_dir("../infra").is_err());
        assert!(sub_dir("/infra").is_err());
    }

    #[test]
    fn ancestors_are_listed_from_the_root_down() {
        let p = archive_name(b"a/b/c").unwrap();
        let got: Vec<_> = p.ancestors().collect();
        assert_eq!(got, vec![Path::new("a"), Path::new("a/b")]);
    }

    #[test]
    fn lexical_join_stays_inside_or_says_no() {
        assert_eq!(
            lexical_join(Path::new("a/b"), Path::new("../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(lexical_join(Path::new("a"), Path::new("../../c")), None);
        assert_eq!(lexical_join(Path::new("a"), Path::new("/etc")), None);
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just("".to_string()),
            "[a-z.\\\\]{1,4}",
        ]
    }

    proptest! {
        // Whatever the input, a name that validates joins to a path under the base with no
        // `..`, and a name that contains a `..` component, a backslash or a leading slash never
        // validates.
        #[test]
        fn validated_names_never_leave_the_root(parts in prop::collection::vec(component(), 0..6), lead in any::<bool>()) {
            let name = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
            let has_escape = name.starts_with('/') || name.contains('\\') || parts.iter().any(|p| p == "..");
            match archive_name(name.as_bytes()) {
                Ok(rel) => {
                    prop_assert!(!has_escape, "{name:?} validated");
                    let base = Path::new("/base");
                    let joined = base.join(rel.as_path());
                    prop_assert!(joined.starts_with(base));
                    prop_assert!(joined.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
                }
                Err(_) => prop_assert!(has_escape || name.is_empty(), "{name:?} refused"),
            }
        }

        #[test]
        fn arbitrary_bytes_never_validate_to_an_escape(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(rel) = archive_name(&raw) {
                prop_assert!(rel.as_path().components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
