//! Feeds arbitrary archives to the unpacker. Whatever the input: no panic; nothing appears
//! outside the unpack root (a sentinel directory beside it must stay empty); every symlink left
//! in the root resolves, on disk, to a place inside it (or to nothing); and the files written
//! hold no more bytes than the size limit.
#![no_main]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use fetch::unpack::{ModePolicy, UnpackOptions, unpack};
use libfuzzer_sys::fuzz_target;

struct Dirs {
    base: PathBuf,
    sentinel: PathBuf,
}

fn dirs() -> &'static Dirs {
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("fetch-fuzz-{}", std::process::id()));
        let sentinel = base.join("sentinel");
        std::fs::create_dir_all(&sentinel).unwrap();
        Dirs { base, sentinel }
    })
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = dirs();
    let root = d
        .base
        .join("roots")
        .join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&root).unwrap();
    // The first byte picks the input shape: raw bytes (as served), or a tar the fuzzer wrote
    // that we gzip, so the tar rules get exercised rather than the gzip header check alone.
    let input = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(rest).unwrap();
            enc.finish().unwrap()
        }
        None => Vec::new(),
    };
    const LIMIT: u64 = 16 << 20;
    let opts = UnpackOptions {
        max_size: Some(LIMIT),
        modes: ModePolicy::Shared,
        deadline: None,
    };
    let _ = unpack(&input[..], &root, &opts);
    assert_eq!(
        std::fs::read_dir(&d.sentinel).unwrap().count(),
        0,
        "an entry escaped the unpack root"
    );
    let mut written = 0u64;
    let mut inodes = std::collections::HashSet::new();
    walk(&root, &mut |path, md| {
        if md.file_type().is_symlink() {
            assert!(
                resolves_inside(&root, path),
                "{} -> {:?} resolves outside the root",
                path.display(),
                std::fs::read_link(path)
            );
        } else if md.is_file() && inodes.insert(md.ino()) {
            written += md.len();
        }
    });
    assert!(written <= LIMIT, "{written} bytes written, limit {LIMIT}");
    let _ = std::fs::remove_dir_all(&root);
});

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        f(&path, &md);
        if md.is_dir() {
            walk(&path, f);
        }
    }
}

/// Resolves `link` on disk the way the kernel does, one component at a time (a name that does
/// not exist counts as a directory, as the unpacker assumes), and says whether the walk stays
/// within `root`. An independent check of the unpacker's own model.
fn resolves_inside(root: &Path, link: &Path) -> bool {
    enum Part {
        Up,
        Name(std::ffi::OsString),
    }
    /// The parts of a target; `None` for an absolute one.
    fn parts(target: &Path) -> Option<Vec<Part>> {
        let mut out = Vec::new();
        for c in target.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => return None,
                Component::CurDir => {}
                Component::ParentDir => out.push(Part::Up),
                Component::Normal(n) => out.push(Part::Name(n.to_owned())),
            }
        }
        Some(out)
    }
    let mut at: Vec<std::ffi::OsString> = link
        .strip_prefix(root)
        .unwrap()
        .parent()
        .map(|p| p.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    let Some(first) = parts(&std::fs::read_link(link).unwrap()) else {
        return false;
    };
    let mut pending: std::collections::VecDeque<Part> = first.into();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Up => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Part::Name(n) => {
                at.push(n);
                let here = at.iter().fold(root.to_path_buf(), |p, c| p.join(c));
                let is_link =
                    std::fs::symlink_metadata(&here).is_ok_and(|md| md.file_type().is_symlink());
                if is_link {
                    hops += 1;
                    if hops > 40 {
                        // The kernel gives up (ELOOP): harmless.
                        return true;
                    }
                    at.pop();
                    let Some(next) = parts(&std::fs::read_link(&here).unwrap()) else {
                        return false;
                    };
                    for p in next.into_iter().rev() {
                        pending.push_front(p);
                    }
                }
            }
        }
    }
    true
}
