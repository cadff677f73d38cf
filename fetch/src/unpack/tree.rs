//! What the unpacker has put in its (private, initially empty) staging directory: every
//! directory, file and symlink, as a tree of names. Symlink decisions are taken against this
//! model instead of the disk: it is exact (nobody else writes there), each lookup costs one
//! hash of one name, and it can hold links that are candidates but not created yet.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file or a hard link to one.
    File,
    /// A symlink, by its index in the unpacker's list of symlink entries.
    Link(usize),
}

#[derive(Debug)]
struct Node {
    parent: NodeId,
    kind: Kind,
    /// On disk already (false: only planned, such as the directories a link will need).
    real: bool,
    children: HashMap<OsString, NodeId>,
}

#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node {
                parent: ROOT,
                kind: Kind::Dir,
                real: true,
                children: HashMap::new(),
            }],
        }
    }
}

impl Tree {
    pub fn kind(&self, id: NodeId) -> Kind {
        self.nodes[id].kind
    }

    pub fn parent(&self, id: NodeId) -> NodeId {
        self.nodes[id].parent
    }

    pub fn child(&self, dir: NodeId, name: &OsStr) -> Option<NodeId> {
        self.nodes[dir].children.get(name).copied()
    }

    /// The node at `path` (relative to the root), if there is one.
    pub fn lookup(&self, path: &Path) -> Option<NodeId> {
        path.iter().try_fold(ROOT, |at, name| self.child(at, name))
    }

    /// Whether `path` is a directory that exists on disk.
    pub fn is_dir(&self, path: &Path) -> bool {
        self.lookup(path)
            .is_some_and(|id| self.kind(id) == Kind::Dir && self.nodes[id].real)
    }

    /// Records `path` as `kind`, with any missing ancestors as directories. `real`: it is on
    /// disk (and so are its ancestors: the unpacker made them first); else it is only planned.
    /// An existing node of that name changes kind: a file replaced by a later entry of the same
    /// name stays a file.
    pub fn insert(&mut self, path: &Path, kind: Kind, real: bool) -> NodeId {
        let mut at = ROOT;
        let mut names = path.iter().peekable();
        while let Some(name) = names.next() {
            let last = names.peek().is_none();
            at = match self.child(at, name) {
                Some(id) => {
                    if last {
                        self.nodes[id].kind = kind;
                    }
                    self.nodes[id].real |= real;
                    id
                }
                None => {
                    let id = self.nodes.len();
                    self.nodes.push(Node {
                        parent: at,
                        kind: if last { kind } else { Kind::Dir },
                        real,
                        children: HashMap::new(),
                    });
                    self.nodes[at].children.insert(name.to_owned(), id);
                    id
                }
            };
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserting_a_path_makes_its_ancestors_directories() {
        let mut t = Tree::default();
        let f = t.insert(Path::new("a/b/file"), Kind::File, true);
        assert_eq!(t.kind(f), Kind::File);
        assert!(t.is_dir(Path::new("a/b")));
        assert!(!t.is_dir(Path::new("a/b/file")));
        assert_eq!(t.lookup(Path::new("a/missing")), None);
        assert_eq!(t.lookup(Path::new("")), Some(ROOT));
        assert_eq!(t.parent(t.parent(f)), t.lookup(Path::new("a")).unwrap());
        // Planned directories are in the tree but not on disk.
        t.insert(Path::new("p/q/link"), Kind::Link(0), false);
        assert!(t.lookup(Path::new("p/q")).is_some());
        assert!(!t.is_dir(Path::new("p/q")));
        t.insert(Path::new("p/q"), Kind::Dir, true);
        assert!(t.is_dir(Path::new("p/q")));
    }
}
