//! Streams a gzip'd tar into a fresh directory, checking every entry.
//!
//! The directory is expected to be new and private (a staging directory), so nothing in it was
//! put there by anyone else. Rules, each checked per entry:
//! - names must be relative with no `..` and no backslash ([`crate::safe_path`]);
//! - devices, fifos and sockets are refused; so are unknown entry types;
//! - symlinks are created last, after every file and directory is written, so no entry is ever
//!   written through one, and only when they resolve inside the tree as it is on disk once
//!   they exist ([`links`]); others are skipped with a warning, as are hard links whose target
//!   is not a file already unpacked;
//! - setuid, setgid and sticky bits are never applied;
//! - the uncompressed stream is metered ([`meter`]) so the size limit counts real bytes, and
//!   so are the bytes written to files: entries whose content the tar reader makes up (the
//!   holes of GNU sparse files) cannot write more than the limit either;
//! - the whole unpack, symlink checks included, ends at the deadline.

mod links;
mod meter;
mod tree;

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tar::EntryType;
use tracing::warn;

use crate::safe_path::{self, RelPath};
use links::{Declared, PlanError};
pub use meter::METADATA_LIMIT;
use meter::{Exceeded, Meter, Metered};
use tree::{Kind, Tree};

/// Flux's default (`DefaultMaxUntarSize`), which PKO inherits.
pub const DEFAULT_MAX_SIZE: u64 = 100 << 20;

const COPY_BUFFER: usize = 128 << 10;
/// Skipped entries are logged one by one up to this many, then only counted.
const LOGGED_SKIPS: u64 = 50;
/// How much of an entry's name (or link target) a log line shows.
const SHOWN_NAME_BYTES: usize = 256;

/// How file modes are set on the unpacked tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModePolicy {
    /// Readable and writable by any UID in the pod: the program runs in another container,
    /// maybe as another user, and Pulumi writes stack files next to it. Files 0666,
    /// executables 0777, directories 0777.
    #[default]
    Shared,
    /// The archive's own permission bits (setuid/setgid/sticky dropped; directories always
    /// keep owner rwx so the tree can be written and removed).
    Preserve,
}

impl ModePolicy {
    pub(crate) fn file_mode(self, header_mode: u32) -> u32 {
        match self {
            ModePolicy::Shared if header_mode & 0o111 != 0 => 0o777,
            ModePolicy::Shared => 0o666,
            ModePolicy::Preserve => header_mode & 0o777,
        }
    }

    pub(crate) fn dir_mode(self, header_mode: Option<u32>) -> u32 {
        match self {
            ModePolicy::Shared => 0o777,
            ModePolicy::Preserve => header_mode.map_or(0o755, |m| (m & 0o777) | 0o700),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Limit in bytes on the uncompressed tar stream, and on the file content written;
    /// `None` is unlimited.
    pub max_size: Option<u64>,
    pub modes: ModePolicy,
    /// When unpacking must have finished; `None` is no deadline.
    pub deadline: Option<Deadline>,
}

/// The instant an unpack must end by, and the limit it came from (for the message).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub after: Duration,
}

impl Deadline {
    pub fn after(after: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + after,
            after,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the artifact is empty")]
    Empty,
    #[error("the artifact is not gzip-compressed (it does not start with the gzip magic bytes)")]
    NotGzip,
    #[error("the artifact is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the archive is larger than the limit of {limit} bytes uncompressed; raise \
         --max-untar-size (env FLUX_MAX_UNTAR_SIZE_BYTES, -1 for no limit) if the program \
         really is this large"
    )]
    TooLarge { limit: u64 },
    #[error("unsafe archive entry {name:?}: {reason}")]
    Unsafe { name: String, reason: String },
    #[error(
        "the archive's symlinks need more than {} path lookups to check; the artifact is \
         hostile or broken",
        links::MAX_TOTAL_STEPS
    )]
    LinksTooComplex,
    #[error(
        "downloading and unpacking did not finish within the time limit ({}s, --timeout); the \
         download or the volume is slow (a later attempt may succeed), or raise --timeout",
        .after.as_secs()
    )]
    TimedOut { after: Duration },
    #[error("archive entry {name:?} conflicts with an earlier entry: {reason}")]
    Conflict { name: String, reason: String },
    #[error(
        "the workspace volume is full: {path} could not be written ({source}); free space on \
         the node or raise the share volume's size (the operator's WORKSPACE_SHARE_SIZE_LIMIT, \
         or a `share` volume in the Stack's workspaceTemplate podTemplate); the pod's next \
         attempt fetches again"
    )]
    NoSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive entry {path} is larger than this file system allows for one file ({source})")]
    FileTooLarge {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "archive entry {path} cannot be created on this file system ({source}); rename it in \
         the source"
    )]
    BadName {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who a failure is owed to, which says whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The archive itself (unsafe, corrupt, too large): the same artifact fails again.
    Archive,
    /// The node or its volume (I/O error, a full volume): may pass on a later attempt.
    Local,
    /// The time limit: a slow download or volume; may pass on a later attempt.
    Deadline,
}

impl UnpackError {
    pub fn cause(&self) -> Cause {
        match self {
            UnpackError::Io { .. } | UnpackError::NoSpace { .. } => Cause::Local,
            UnpackError::TimedOut { .. } => Cause::Deadline,
            _ => Cause::Archive,
        }
    }

    /// A write failure, told apart by whether the archive caused it: a name too long for the
    /// file system, or one file larger than it allows, is the archive's doing; a full volume
    /// is the node's (the archive's total is bounded by --max-untar-size).
    fn io(path: PathBuf, source: io::Error) -> UnpackError {
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => UnpackError::NoSpace { path, source },
            Some(libc::EFBIG) => UnpackError::FileTooLarge { path, source },
            Some(libc::ENAMETOOLONG | libc::EMLINK | libc::ELOOP) => {
                UnpackError::BadName { path, source }
            }
            _ => UnpackError::Io { path, source },
        }
    }
}

/// An entry's name for log lines and messages, cut to a readable length.
fn shown(name: &str) -> String {
    if name.len() <= SHOWN_NAME_BYTES {
        return name.to_string();
    }
    let mut end = SHOWN_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &name[..end], name.len())
}

/// Unpacks the gzip'd tar read from `input` into `root`, an existing empty directory.
pub fn unpack<R: Read>(
    mut input: R,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<Summary, UnpackError> {
    let mut magic = [0u8; 2];
    let got =
        read_up_to(&mut input, &mut magic).map_err(|e| UnpackError::Corrupt(e.to_string()))?;
    match got {
        0 => return Err(UnpackError::Empty),
        2 if magic == [0x1f, 0x8b] => {}
        _ => return Err(UnpackError::NotGzip),
    }
    let meter = Meter::new(opts.max_size);
    let stream = Metered::new(
        MultiGzDecoder::new(io::Cursor::new(magic).chain(input)),
        meter.clone(),
    );
    let mut archive = tar::Archive::new(stream);
    let mut unpacker = Unpacker::new(root, *opts, meter.clone());
    let result = unpacker.run(&mut archive).and_then(|()| {
        // Read to the end so the gzip trailer (CRC and length) is checked and trailing data is
        // metered too.
        io::copy(&mut archive.into_inner(), &mut io::sink())
            .map(drop)
            .map_err(|e| stream_error(e, &meter))
    });
    result.map(|()| unpacker.summary)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Classifies an error that came from reading the archive stream.
fn stream_error(e: io::Error, meter: &Meter) -> UnpackError {
    match meter.exceeded() {
        Some(Exceeded::Size { limit }) => UnpackError::TooLarge { limit },
        Some(Exceeded::Metadata) => UnpackError::Unsafe {
            name: String::new(),
            reason: format!(
                "header metadata (long names or PAX records) over {METADATA_LIMIT} bytes"
            ),
        },
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            UnpackError::Corrupt("unexpected end of data".into())
        }
        None => UnpackError::Corrupt(e.to_string()),
    }
}

struct Unpacker<'a> {
    root: &'a Path,
    opts: UnpackOptions,
    meter: Rc<Meter>,
    /// What has been created under the root so far (none of it symlinks until the end).
    tree: Tree,
    symlinks: Vec<Declared>,
    summary: Summary,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path, opts: UnpackOptions, meter: Rc<Meter>) -> Self {
        Unpacker {
            root,
            opts,
            meter,
            tree: Tree::default(),
            symlinks: Vec::new(),
            summary: Summary::default(),
            buf: vec![0; COPY_BUFFER],
        }
    }

    fn check_deadline(&self) -> Result<(), UnpackError> {
        match self.opts.deadline {
            Some(d) if Instant::now() >= d.at => Err(UnpackError::TimedOut { after: d.after }),
            _ => Ok(()),
        }
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        let mut entries = archive
            .entries()
            .map_err(|e| stream_error(e, &self.meter))?;
        loop {
            self.check_deadline()?;
            self.meter.enter_metadata();
            let next = entries.next();
            self.meter.leave_metadata();
            match next {
                None => break,
                Some(Err(e)) => return Err(stream_error(e, &self.meter)),
                Some(Ok(entry)) => self.entry(entry)?,
            }
        }
        self.create_symlinks()
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = entry.path_bytes().into_owned();
        let shown = shown(&String::from_utf8_lossy(&raw_name));
        let unsafe_entry = |reason: String| UnpackError::Unsafe {
            name: shown.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let rel = safe_path::archive_name(&raw_name).map_err(|e| unsafe_entry(e.to_string()))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| UnpackError::Corrupt(format!("entry {shown:?}: {e}")))?;
        // Some writers put the file type in the mode bits too; a special file is refused
        // whichever way it is declared.
        if let Some(what) = special_file(kind, mode) {
            return Err(unsafe_entry(format!("{what} entries are not allowed")));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&rel, &shown, mode, &mut entry)
            }
            EntryType::Directory => self.dir(&rel, &shown, Some(mode)),
            EntryType::Symlink => {
                if rel.is_root() {
                    return Err(unsafe_entry("a symlink cannot replace the root".into()));
                }
                let target = entry
                    .link_name_bytes()
                    .map(|t| PathBuf::from(std::ffi::OsStr::from_bytes(&t)))
                    .unwrap_or_default();
                self.symlinks.push(Declared { rel, target });
                Ok(())
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.hardlink(&rel, &shown, target.as_deref())
            }
            other => Err(unsafe_entry(format!(
                "entry type {:?} is not supported",
                other.as_byte() as char
            ))),
        }
    }

    /// Makes sure every ancestor of `rel` is a real directory, creating missing ones.
    fn parents(&mut self, rel: &RelPath, shown: &str) -> Result<(), UnpackError> {
        for ancestor in rel.ancestors() {
            if self.tree.is_dir(ancestor) {
                continue;
            }
            let path = self.root.join(ancestor);
            match fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::Conflict {
                        name: shown.to_string(),
                        reason: format!("{} is not a directory", ancestor.display()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(self.opts.modes.dir_mode(None))
                        .create(&path)
                        .map_err(|source| UnpackError::io(path.clone(), source))?;
                    self.summary.dirs += 1;
                }
                Err(source) => return Err(UnpackError::io(path, source)),
            }
            self.tree.insert(ancestor, Kind::Dir, true);
        }
        Ok(())
    }

    fn dir(&mut self, rel: &RelPath, shown: &str, mode: Option<u32>) -> Result<(), UnpackError> {
        let mode = self.opts.modes.dir_mode(mode);
        let path = self.root.join(rel.as_path());
        let io_err = |source| UnpackError::io(path.clone(), source);
        self.parents(rel, shown)?;
        match fs::DirBuilder::new().mode(mode).create(&path) {
            Ok(()) => self.summary.dirs += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let md = fs::symlink_metadata(&path).map_err(io_err)?;
                if !md.is_dir() {
                    return Err(UnpackError::Conflict {
                        name: shown.to_string(),
                        reason: "a file of that name is already in the archive".into(),
                    });
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
        self.tree.insert(rel.as_path(), Kind::Dir, true);
        Ok(())
    }

    fn file(
        &mut self,
        rel: &RelPath,
        shown: &str,
        mode: u32,
        data: &mut impl Read,
    ) -> Result<(), UnpackError> {
        if rel.is_root() {
            return Err(UnpackError::Unsafe {
                name: shown.to_string(),
                reason: "a file entry cannot replace the root".into(),
            });
        }
        self.parents(rel, shown)?;
        let path = self.root.join(rel.as_path());
        let mut file = self.create_file(&path, shown, self.opts.modes.file_mode(mode))?;
        self.tree.insert(rel.as_path(), Kind::File, true);
        loop {
            // A single large entry must not outlive the deadline either.
            self.check_deadline()?;
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e, &self.meter)),
            };
            // The stream meter cannot see bytes the tar reader makes up itself (the holes of a
            // sparse entry), so what is written is held to the same limit.
            self.summary.bytes += n as u64;
            if let Some(limit) = self.opts.max_size
                && self.summary.bytes > limit
            {
                return Err(UnpackError::TooLarge { limit });
            }
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::io(path.clone(), source))?;
        }
        self.summary.files += 1;
        Ok(())
    }

    /// Creates a new file; an earlier entry of the same name is unlinked first rather than
    /// truncated, so a later entry never writes into a file that an earlier hard link shares.
    fn create_file(&self, path: &Path, shown: &str, mode: u32) -> Result<fs::File, UnpackError> {
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
        };
        let io_err = |source| UnpackError::io(path.to_path_buf(), source);
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_non_dir(path, shown)?;
                open().map_err(io_err)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn remove_non_dir(&self, path: &Path, shown: &str) -> Result<(), UnpackError> {
        let io_err = |source| UnpackError::io(path.to_path_buf(), source);
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => Err(UnpackError::Conflict {
                name: shown.to_string(),
                reason: "a directory of that name is already in the archive".into(),
            }),
            Ok(_) => fs::remove_file(path).map_err(io_err),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    fn hardlink(
        &mut self,
        rel: &RelPath,
        shown: &str,
        target: Option<&[u8]>,
    ) -> Result<(), UnpackError> {
        let target = match target.map(safe_path::archive_name) {
            Some(Ok(t)) if !t.is_root() && &t != rel => t,
            Some(Ok(_)) | None => {
                return self.skip(shown, "hard link", "its target is missing or invalid");
            }
            Some(Err(e)) => {
                return self.skip(shown, "hard link", &format!("its target {e}"));
            }
        };
        let target_path = self.root.join(target.as_path());
        let is_file = fs::symlink_metadata(&target_path).is_ok_and(|md| md.is_file());
        let target_in_real_dirs = target.ancestors().all(|a| self.tree.is_dir(a));
        if !is_file || !target_in_real_dirs {
            let target = shown_path(target.as_path());
            return self.skip(
                shown,
                "hard link",
                &format!("its target {target} is not a file unpacked before it"),
            );
        }
        if rel.is_root() {
            return Err(UnpackError::Unsafe {
                name: shown.to_string(),
                reason: "a hard link cannot replace the root".into(),
            });
        }
        self.parents(rel, shown)?;
        let path = self.root.join(rel.as_path());
        self.remove_non_dir(&path, shown)?;
        fs::hard_link(&target_path, &path).map_err(|source| UnpackError::io(path, source))?;
        self.tree.insert(rel.as_path(), Kind::File, true);
        self.summary.hardlinks += 1;
        Ok(())
    }

    fn create_symlinks(&mut self) -> Result<(), UnpackError> {
        let symlinks = std::mem::take(&mut self.symlinks);
        let deadline = self.opts.deadline;
        let verdicts = links::plan(&mut self.tree, &symlinks, deadline.map(|d| d.at)).map_err(
            |e| match e {
                PlanError::TooComplex => UnpackError::LinksTooComplex,
                PlanError::Deadline => UnpackError::TimedOut {
                    after: deadline.map(|d| d.after).unwrap_or_default(),
                },
            },
        )?;
        for (link, verdict) in symlinks.iter().zip(verdicts) {
            let shown = format!(
                "{} -> {}",
                shown_path(link.rel.as_path()),
                shown_path(&link.target)
            );
            if let Some(why) = verdict {
                self.skip(&shown, "symlink", &why.to_string())?;
                continue;
            }
            self.parents(&link.rel, &shown)?;
            let path = self.root.join(link.rel.as_path());
            std::os::unix::fs::symlink(&link.target, &path)
                .map_err(|source| UnpackError::io(path, source))?;
            self.summary.symlinks += 1;
        }
        if self.summary.skipped > LOGGED_SKIPS {
            warn!(
                skipped = self.summary.skipped,
                "skipped {} entries in all; only the first {LOGGED_SKIPS} were logged",
                self.summary.skipped
            );
        }
        Ok(())
    }

    fn skip(&mut self, shown: &str, what: &str, why: &str) -> Result<(), UnpackError> {
        self.summary.skipped += 1;
        if self.summary.skipped <= LOGGED_SKIPS {
            warn!(entry = shown, "skipping {what}: {why}");
        }
        Ok(())
    }
}

fn shown_path(p: &Path) -> String {
    shown(&p.to_string_lossy())
}

fn special_file(kind: EntryType, mode: u32) -> Option<&'static str> {
    const S_IFMT: u32 = 0o170000;
    match kind {
        EntryType::Char => return Some("character device"),
        EntryType::Block => return Some("block device"),
        EntryType::Fifo => return Some("fifo"),
        _ => {}
    }
    match mode & S_IFMT {
        0o020000 => Some("character device"),
        0o060000 => Some("block device"),
        0o010000 => Some("fifo"),
        0o140000 => Some("socket"),
        _ => None,
    }
}
