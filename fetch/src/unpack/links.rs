//! Decides whether a symlink from the archive stays inside the artifact.
//!
//! A lexical check of each link alone is not enough: with `a/b/up -> ../..` (inside) a second
//! link `x -> a/b/up/..` also looks inside lexically but resolves to the parent of the root.
//! So the target is resolved the way the kernel would, component by component, following every
//! symlink the archive declares (whether or not it ends up created), and the walk may never
//! climb above the root.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup.
const MAX_HOPS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    Absolute,
    OutsideRoot,
    TooManyHops,
    Empty,
}

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Escape::Absolute => "its target is an absolute path",
            Escape::OutsideRoot => "it resolves outside the artifact",
            Escape::TooManyHops => "it is part of a symlink loop or a chain longer than 40",
            Escape::Empty => "its target is empty",
        })
    }
}

enum Part {
    Parent,
    Name(OsString),
}

fn parts(target: &Path) -> Result<Vec<Part>, Escape> {
    let mut out = Vec::new();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err(Escape::Absolute),
            Component::CurDir => {}
            Component::ParentDir => out.push(Part::Parent),
            Component::Normal(n) => out.push(Part::Name(n.to_owned())),
        }
    }
    Ok(out)
}

/// Resolves `target` as seen from the symlink at `link` (a validated relative path), with
/// `links` mapping every symlink path in the archive to its target.
pub fn check(links: &HashMap<PathBuf, PathBuf>, link: &Path, target: &Path) -> Result<(), Escape> {
    if target.as_os_str().is_empty() {
        return Err(Escape::Empty);
    }
    let mut at: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    let mut pending: VecDeque<Part> = parts(target)?.into();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Parent => {
                at.pop().ok_or(Escape::OutsideRoot)?;
            }
            Part::Name(name) => {
                at.push(name);
                let here: PathBuf = at.iter().collect();
                if let Some(next) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Escape::TooManyHops);
                    }
                    at.pop();
                    for p in parts(next)?.into_iter().rev() {
                        pending.push_front(p);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> HashMap<PathBuf, PathBuf> {
        pairs
            .iter()
            .map(|(l, t)| (PathBuf::from(l), PathBuf::from(t)))
            .collect()
    }

    #[test]
    fn a_sibling_link_stays_inside() {
        let m = links(&[("a/link", "../b/file")]);
        assert_eq!(
            check(&m, Path::new("a/link"), Path::new("../b/file")),
            Ok(())
        );
    }

    #[test]
    fn a_link_above_the_root_escapes() {
        let m = links(&[("link", "../etc/passwd")]);
        assert_eq!(
            check(&m, Path::new("link"), Path::new("../etc/passwd")),
            Err(Escape::OutsideRoot)
        );
    }

    #[test]
    fn absolute_targets_are_refused() {
        assert_eq!(
            check(&HashMap::new(), Path::new("l"), Path::new("/etc")),
            Err(Escape::Absolute)
        );
    }

    #[test]
    fn a_chain_that_is_inside_lexically_but_escapes_for_real_is_caught() {
        let m = links(&[("a/b/up", "../.."), ("x", "a/b/up/..")]);
        assert_eq!(check(&m, Path::new("a/b/up"), Path::new("../..")), Ok(()));
        assert_eq!(
            check(&m, Path::new("x"), Path::new("a/b/up/..")),
            Err(Escape::OutsideRoot)
        );
    }

    #[test]
    fn loops_are_refused() {
        let m = links(&[("a", "b"), ("b", "a")]);
        assert_eq!(
            check(&m, Path::new("a"), Path::new("b")),
            Err(Escape::TooManyHops)
        );
    }

    #[test]
    fn a_dangling_link_inside_is_fine() {
        assert_eq!(
            check(&HashMap::new(), Path::new("d/l"), Path::new("missing")),
            Ok(())
        );
    }
}
