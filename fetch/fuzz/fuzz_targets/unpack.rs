//! Feeds arbitrary archives to the unpacker. Whatever the input: no panic, and nothing appears
//! outside the unpack root (a sentinel directory beside it must stay empty).
#![no_main]

use std::io::Write;
use std::path::PathBuf;
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
    let root = d.base.join("roots").join(N.fetch_add(1, Ordering::Relaxed).to_string());
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
    let opts = UnpackOptions {
        max_size: Some(16 << 20),
        modes: ModePolicy::Shared,
    };
    let _ = unpack(&input[..], &root, &opts);
    assert_eq!(
        std::fs::read_dir(&d.sentinel).unwrap().count(),
        0,
        "an entry escaped the unpack root"
    );
    let _ = std::fs::remove_dir_all(&root);
});
