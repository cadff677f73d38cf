//! Decides which symlinks from the archive are created: only those whose target, resolved in
//! the tree exactly as it will be on disk once every created link exists, stays inside it.
//!
//! Links are created last (after every file and directory), so the tree they are judged
//! against is the [`Tree`] of what was unpacked plus the links that will be created. First the
//! candidates are chosen, by name alone: a declaration whose name is taken by a file, a
//! directory or an earlier link, or that sits under another link, is skipped and never
//! consulted again. Then every candidate is judged with all candidates present. One pass is
//! enough: a resolution that goes through a link replays that link's own resolution from the
//! same place, so anything going through a refused link is refused as well, and the links
//! that pass only ever went through links that pass. What they were judged against is then
//! exactly what is on disk.
//!
//! Resolution follows the kernel's rules component by component: `..` climbs (never above the
//! root), a symlink is replaced by its target (at most [`MAX_HOPS`] times), and a name that
//! does not exist is treated as a directory that could be created later, so `missing/../..`
//! counts as climbing too. Work is bounded: a target longer than the kernel's `PATH_MAX` can
//! never be created, one resolution takes at most [`MAX_STEPS`] components, and all of them
//! together at most [`MAX_TOTAL_STEPS`], so a hostile archive costs linear time. A step is
//! every component handled: each one walked, and each one a hop puts back to be walked (a
//! 4 KiB target is ~2000 of them), so what the budget counts is what the work costs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use super::tree::{Kind, NodeId, ROOT, Tree};
use crate::safe_path::RelPath;

/// Linux's own limit on symlinks followed in one lookup.
pub const MAX_HOPS: usize = 40;
/// Linux's `PATH_MAX` includes the terminating NUL: a longer target cannot be a symlink.
pub const MAX_TARGET_BYTES: usize = 4095;
/// Components walked for one link, its hops included. Real links take a handful.
pub const MAX_STEPS: u32 = 4096;
/// Components walked for all the links of one archive.
pub const MAX_TOTAL_STEPS: u64 = 1 << 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Absolute,
    OutsideRoot,
    TooManyHops,
    TooComplex,
    Empty,
    TooLong,
    NameTaken,
    UnderLink,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::Absolute => "its target is an absolute path",
            Skip::OutsideRoot => "it resolves outside the artifact",
            Skip::TooManyHops => "it is part of a symlink loop or a chain longer than 40",
            Skip::TooComplex => "resolving it takes more than 4096 path components",
            Skip::Empty => "its target is empty",
            Skip::TooLong => "its target is longer than 4095 bytes (PATH_MAX)",
            Skip::NameTaken => "another entry already has its name",
            Skip::UnderLink => "it sits under another symlink",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// The archive's links together need more than [`MAX_TOTAL_STEPS`].
    TooComplex,
    /// The deadline passed while judging them.
    Deadline,
}

/// One symlink entry of the archive, in archive order.
#[derive(Debug, Clone)]
pub struct Declared {
    pub rel: RelPath,
    pub target: PathBuf,
}

enum Part {
    Parent,
    Name(OsString),
}

fn parts(target: &Path) -> Result<Vec<Part>, Skip> {
    let mut out = Vec::new();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err(Skip::Absolute),
            Component::CurDir => {}
            Component::ParentDir => out.push(Part::Parent),
            Component::Normal(n) => out.push(Part::Name(n.to_owned())),
        }
    }
    Ok(out)
}

/// Decides, for every declared link in order, whether it is created (`None`) or skipped (and
/// why). The candidates are added to `tree` as links; skipped ones leave no trace in it.
pub fn plan(
    tree: &mut Tree,
    links: &[Declared],
    deadline: Option<Instant>,
) -> Result<Vec<Option<Skip>>, PlanError> {
    let mut verdicts: Vec<Option<Skip>> = vec![None; links.len()];
    let mut nodes: Vec<Option<NodeId>> = vec![None; links.len()];
    for (i, l) in links.iter().enumerate() {
        match candidate(tree, l) {
            Ok(()) => nodes[i] = Some(tree.insert(l.rel.as_path(), Kind::Link(i), false)),
            Err(why) => verdicts[i] = Some(why),
        }
    }

    let mut judge = Judge {
        tree,
        links,
        total: 0,
        deadline,
    };
    for (i, node) in nodes.iter().enumerate() {
        if let Some(node) = *node
            && let Err(why) = judge.resolve(i, node)?
        {
            verdicts[i] = Some(why);
        }
    }
    Ok(verdicts)
}

/// Whether a declared link can be created at all, whatever its target.
fn candidate(tree: &Tree, l: &Declared) -> Result<(), Skip> {
    let bytes = l.target.as_os_str().len();
    if bytes == 0 {
        return Err(Skip::Empty);
    }
    if bytes > MAX_TARGET_BYTES {
        return Err(Skip::TooLong);
    }
    parts(&l.target)?;
    if tree.lookup(l.rel.as_path()).is_some() {
        return Err(Skip::NameTaken);
    }
    let mut at = ROOT;
    for name in l.rel.ancestors().filter_map(|a| a.file_name()) {
        match tree.child(at, name) {
            None => break,
            Some(id) if matches!(tree.kind(id), Kind::Link(_)) => return Err(Skip::UnderLink),
            Some(id) => at = id,
        }
    }
    Ok(())
}

struct Judge<'a> {
    tree: &'a Tree,
    links: &'a [Declared],
    total: u64,
    deadline: Option<Instant>,
}

impl Judge<'_> {
    /// Resolves link `i` (at `node`) against the tree with every candidate link present.
    fn resolve(&mut self, i: usize, node: NodeId) -> Result<Result<(), Skip>, PlanError> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PlanError::Deadline);
        }
        let mut at = self.tree.parent(node);
        // Depth below `at` inside names that do not exist (treated as directories).
        let mut missing = 0usize;
        let mut pending: VecDeque<Part> = match parts(&self.links[i].target) {
            Ok(p) => p.into(),
            Err(why) => return Ok(Err(why)),
        };
        let (mut hops, mut steps) = (0usize, 0u32);
        while let Some(part) = pending.pop_front() {
            if let Err(why) = self.spend(&mut steps, 1)? {
                return Ok(Err(why));
            }
            match part {
                Part::Parent if missing > 0 => missing -= 1,
                Part::Parent if at == ROOT => return Ok(Err(Skip::OutsideRoot)),
                Part::Parent => at = self.tree.parent(at),
                Part::Name(_) if missing > 0 => missing += 1,
                Part::Name(name) => match self.tree.child(at, &name) {
                    None => missing = 1,
                    Some(id) => match self.tree.kind(id) {
                        Kind::Dir | Kind::File => at = id,
                        Kind::Link(j) => {
                            hops += 1;
                            if hops > MAX_HOPS {
                                return Ok(Err(Skip::TooManyHops));
                            }
                            match parts(&self.links[j].target) {
                                Ok(next) => {
                                    // Putting a target back costs as much as walking it.
                                    if let Err(why) = self.spend(&mut steps, next.len())? {
                                        return Ok(Err(why));
                                    }
                                    for p in next.into_iter().rev() {
                                        pending.push_front(p);
                                    }
                                }
                                Err(why) => return Ok(Err(why)),
                            }
                        }
                    },
                },
            }
        }
        Ok(Ok(()))
    }

    /// Charges `n` components to this link's budget (`steps`) and the archive's.
    fn spend(&mut self, steps: &mut u32, n: usize) -> Result<Result<(), Skip>, PlanError> {
        self.total = self.total.saturating_add(n as u64);
        if self.total > MAX_TOTAL_STEPS {
            return Err(PlanError::TooComplex);
        }
        *steps = steps.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if *steps > MAX_STEPS {
            return Ok(Err(Skip::TooComplex));
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(pairs: &[(&str, &str)]) -> Vec<Declared> {
        pairs
            .iter()
            .map(|(l, t)| Declared {
                rel: crate::safe_path::archive_name(l.as_bytes()).expect("valid name"),
                target: PathBuf::from(t),
            })
            .collect()
    }

    /// The verdicts for `pairs` over a tree holding `dirs` and `files`.
    fn verdicts(dirs: &[&str], files: &[&str], pairs: &[(&str, &str)]) -> Vec<Option<Skip>> {
        let mut tree = Tree::default();
        for d in dirs {
            tree.insert(Path::new(d), Kind::Dir, true);
        }
        for f in files {
            tree.insert(Path::new(f), Kind::File, true);
        }
        plan(&mut tree, &declared(pairs), None).expect("within budget")
    }

    #[test]
    fn a_sibling_link_stays_inside() {
        assert_eq!(
            verdicts(&["a", "b"], &["b/file"], &[("a/link", "../b/file")]),
            [None]
        );
    }

    #[test]
    fn a_link_above_the_root_escapes() {
        assert_eq!(
            verdicts(&[], &[], &[("link", "../etc/passwd")]),
            [Some(Skip::OutsideRoot)]
        );
    }

    #[test]
    fn absolute_empty_and_overlong_targets_are_refused() {
        let long = "a/".repeat(2048);
        assert_eq!(
            verdicts(&[], &[], &[("l", "/etc"), ("e", ""), ("long", &long)]),
            [Some(Skip::Absolute), Some(Skip::Empty), Some(Skip::TooLong)]
        );
    }

    #[test]
    fn a_chain_that_is_inside_lexically_but_escapes_for_real_is_caught() {
        assert_eq!(
            verdicts(&[], &[], &[("a/b/up", "../.."), ("x", "a/b/up/..")]),
            [None, Some(Skip::OutsideRoot)]
        );
    }

    #[test]
    fn a_link_through_a_link_declared_later_is_kept() {
        // pnpm-style trees: .bin/tool -> ../pkg/bin/tool, where pkg is itself a link.
        assert_eq!(
            verdicts(
                &["store/pkg/bin", ".bin"],
                &["store/pkg/bin/tool"],
                &[(".bin/tool", "../pkg/bin/tool"), ("pkg", "store/pkg")]
            ),
            [None, None]
        );
    }

    #[test]
    fn links_that_are_never_created_are_never_consulted() {
        // `d` is a real directory, so the link `d -> sub/deeper` is not created; judged as if it
        // were, `x -> d/../..` would climb from sub/ and look inside. On disk it climbs from
        // the root: out.
        assert_eq!(
            verdicts(
                &["d", "sub/deeper"],
                &[],
                &[("d", "sub/deeper"), ("x", "d/../..")]
            ),
            [Some(Skip::NameTaken), Some(Skip::OutsideRoot)]
        );
        // The same with a duplicate declaration: only the first one is created.
        assert_eq!(
            verdicts(
                &["sub/deeper"],
                &[],
                &[("d", "."), ("d", "sub/deeper"), ("x", "d/..")]
            ),
            [None, Some(Skip::NameTaken), Some(Skip::OutsideRoot)]
        );
    }

    #[test]
    fn a_link_through_a_refused_link_is_refused_too() {
        // `top -> mid/../../x` lands inside only if mid -> sub/a/b holds; mid goes through
        // `esc`, which climbs out, so neither is created, and without mid `mid/../..` climbs
        // out as well.
        assert_eq!(
            verdicts(
                &["sub/a/b"],
                &[],
                &[
                    ("top", "mid/../../x"),
                    ("mid", "sub/a/b/esc/.."),
                    ("sub/a/b/esc", "../../../.."),
                ]
            ),
            [
                Some(Skip::OutsideRoot),
                Some(Skip::OutsideRoot),
                Some(Skip::OutsideRoot)
            ]
        );
    }

    #[test]
    fn a_link_that_only_escapes_once_a_later_link_exists_is_refused() {
        // a -> b/.. is the root while b does not exist; once b -> . exists, b/.. is the
        // root's parent.
        assert_eq!(
            verdicts(&[], &[], &[("a", "b/.."), ("b", ".")]),
            [Some(Skip::OutsideRoot), None]
        );
    }

    #[test]
    fn loops_are_refused() {
        assert_eq!(
            verdicts(&[], &[], &[("a", "b"), ("b", "a/x")]),
            [Some(Skip::TooManyHops), Some(Skip::TooManyHops)]
        );
    }

    #[test]
    fn a_dangling_link_inside_is_fine_but_missing_names_count_as_directories() {
        assert_eq!(
            verdicts(&["d"], &[], &[("d/l", "missing"), ("m", "missing/../..")]),
            [None, Some(Skip::OutsideRoot)]
        );
    }

    #[test]
    fn links_under_links_are_refused() {
        assert_eq!(
            verdicts(&["sub"], &[], &[("l", "sub"), ("l/inner", "x")]),
            [None, Some(Skip::UnderLink)]
        );
    }

    #[test]
    fn deep_resolutions_stop_at_the_step_limit_and_archives_at_the_total() {
        // 40 hops through a 2000-component target: over MAX_STEPS for one link.
        let deep = "d/".repeat(2000);
        let mut pairs = vec![("l0".to_string(), deep.clone())];
        for i in 1..3 {
            pairs.push((format!("l{i}"), format!("l{}/{deep}", i - 1)));
        }
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let v = verdicts(&[], &[], &refs);
        assert_eq!(v[0], None);
        assert_eq!(v[2], Some(Skip::TooComplex));

        // Thousands of links each re-walking a long chain exhaust the archive's budget.
        let mut tree = Tree::default();
        let mut many = declared(&[("hub", &"h/".repeat(2000))]);
        for i in 0..3000 {
            many.extend(declared(&[(&format!("x{i}"), "hub/../hub/../hub")]));
        }
        assert_eq!(plan(&mut tree, &many, None), Err(PlanError::TooComplex));
    }

    #[test]
    fn what_a_hop_puts_back_is_counted_not_only_what_is_walked() {
        // Each link of the chain walks one component (the next link) and puts back ~1500: the
        // walk alone would stay far under the step limit until the 40-hop limit, while the
        // work done grows with every component put back.
        let tail = "x/".repeat(1500);
        let mut pairs: Vec<(String, String)> = (0..41)
            .map(|i| (format!("c{i}"), format!("c{}/{tail}", i + 1)))
            .collect();
        pairs.push(("l".into(), "c0".into()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let v = verdicts(&[], &[], &refs);
        assert_eq!(v[41], Some(Skip::TooComplex), "{:?}", &v[38..]);

        // And thousands of links into that chain exhaust the archive's budget instead of
        // costing ~40 × 1500 components each.
        let mut tree = Tree::default();
        let mut many = declared(&refs[..41]);
        for i in 0..3000 {
            many.extend(declared(&[(&format!("l{i}"), "c0")]));
        }
        assert_eq!(plan(&mut tree, &many, None), Err(PlanError::TooComplex));
    }

    #[test]
    fn the_deadline_is_honoured() {
        let mut tree = Tree::default();
        let past = Instant::now() - std::time::Duration::from_secs(1);
        assert_eq!(
            plan(&mut tree, &declared(&[("a", "b")]), Some(past)),
            Err(PlanError::Deadline)
        );
    }
}
