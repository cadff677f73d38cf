//! Failures owed to the node rather than to the artifact: a full volume, a slow download, a
//! slow unpack. Each is told apart from an unsafe archive (exit 6, never worth retrying) by its
//! exit code, and leaves nothing behind.

mod support;

use std::io::{self, Read};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fetch::unpack::{Deadline, UnpackError, UnpackOptions, unpack};
use support::server::{Reply, Server};
use support::tarball::{Tarball, gzip, zero_bomb};
use support::{Volume, sha256};

/// A tmpfs of `size` mounted on `dir` for the test's life.
struct SmallVolume(std::path::PathBuf);

impl SmallVolume {
    fn mount(dir: &Path, size: &str) -> SmallVolume {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        SmallVolume(dir.to_path_buf())
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_volume_is_a_local_failure_not_an_unsafe_archive() {
    let vol = Volume::new();
    let share = SmallVolume::mount(&vol.path("share"), "1m");
    // 4 MiB of zeros: well within --max-untar-size, but not within the volume.
    let body = zero_bomb(4 << 20);
    let server = Server::start();
    let url = server.serve("/a.tar.gz", body.clone());
    let run = vol.fetch_flux(&url, &sha256(&body), &[]);
    run.assert_code(1)
        .assert_stderr_has("the workspace volume is full")
        .assert_stderr_has("WORKSPACE_SHARE_SIZE_LIMIT");
    assert!(
        vol.termination_message().contains("volume is full"),
        "{}",
        vol.termination_message()
    );
    vol.assert_nothing_left();

    // The same artifact fits once there is room: nothing of the failed attempt is in the way.
    drop(share);
    let run = vol.fetch_flux(&url, &sha256(&body), &[]);
    run.assert_code(0);
    assert_eq!(
        std::fs::metadata(vol.source().join("bomb"))
            .expect("file")
            .len(),
        4 << 20
    );
}

#[test]
fn a_download_slower_than_the_timeout_is_a_network_failure() {
    // Incompressible content, so the body really is large on the wire.
    let body = Tarball::flux()
        .file("big.bin", 0o644, &noise(256 << 10))
        .gz();
    let server = Server::start();
    let url = server.route(
        "/slow.tar.gz",
        vec![Reply::Trickle {
            body: body.clone(),
            chunk: 4 << 10,
            pause: Duration::from_millis(50),
        }],
    );
    let vol = Volume::new();
    let run = vol.fetch_flux(&url, &sha256(&body), &["--timeout", "1"]);
    run.assert_code(3).assert_stderr_has("--timeout");
    vol.assert_nothing_left();
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Hands out at most `chunk` bytes a read, after a pause, and counts what it handed out.
struct Slow {
    inner: io::Cursor<Vec<u8>>,
    chunk: usize,
    pause: Duration,
    read: Arc<AtomicUsize>,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk);
        let got = self.inner.read(&mut buf[..n])?;
        self.read.fetch_add(got, Ordering::SeqCst);
        Ok(got)
    }
}

#[test]
fn the_deadline_is_checked_inside_one_large_file() {
    // One 4 MiB file arriving 16 KiB every 10 ms (~2.6 s in all), with 200 ms to do it in:
    // the unpack must stop during that file's copy, not after it.
    let archive = gzip(&Tarball::new().file("big.bin", 0o644, &noise(4 << 20)).tar());
    let total = archive.len();
    let read = Arc::new(AtomicUsize::new(0));
    let input = Slow {
        inner: io::Cursor::new(archive),
        chunk: 16 << 10,
        pause: Duration::from_millis(10),
        read: Arc::clone(&read),
    };
    let root = tempfile::tempdir().expect("root");
    let opts = UnpackOptions {
        deadline: Some(Deadline::after(Duration::from_millis(200))),
        ..UnpackOptions::default()
    };
    let result = unpack(input, root.path(), &opts);
    assert!(
        matches!(result, Err(UnpackError::TimedOut { .. })),
        "{result:?}"
    );
    let consumed = read.load(Ordering::SeqCst);
    assert!(
        consumed < total / 2,
        "stopped during the file: {consumed} of {total} bytes read"
    );
}
