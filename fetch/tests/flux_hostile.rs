//! A hostile corpus, each archive served with its *correct* digest, so that only the unpacker's
//! rules stand between it and the file system.

mod support;

use std::fs;

use support::server::Server;
use support::tarball::{Tarball, gzip, zero_bomb};
use support::{Run, Volume, sha256};

/// Serves `body` with its true digest and runs `fetch flux`.
fn fetch_authentic(body: Vec<u8>, extra: &[&str]) -> (Volume, Run) {
    let server = Server::start();
    let url = server.serve("/a.tar.gz", body.clone());
    let vol = Volume::new();
    let run = vol.fetch_flux(&url, &sha256(&body), extra);
    (vol, run)
}

#[test]
fn unsafe_names_are_refused_and_nothing_is_kept() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "parent traversal",
            Tarball::flux().file("../evil", 0o644, b"x").gz(),
            "'..'",
        ),
        (
            "nested traversal",
            Tarball::flux().file("a/../../evil", 0o644, b"x").gz(),
            "'..'",
        ),
        (
            "bare dot-dot dir",
            Tarball::flux().dir("..", 0o755).gz(),
            "'..'",
        ),
        (
            "absolute",
            Tarball::flux().file("/tmp/evil", 0o644, b"x").gz(),
            "absolute",
        ),
        (
            "backslash",
            Tarball::flux().file("a\\..\\evil", 0o644, b"x").gz(),
            "backslash",
        ),
        (
            "char device",
            Tarball::flux().entry(b"dev", b'3', 0o644, b"", b"").gz(),
            "character device",
        ),
        (
            "block device",
            Tarball::flux().entry(b"blk", b'4', 0o644, b"", b"").gz(),
            "block device",
        ),
        (
            "fifo",
            Tarball::flux().entry(b"fifo", b'6', 0o644, b"", b"").gz(),
            "fifo",
        ),
        (
            "socket in the mode bits",
            Tarball::flux()
                .entry(b"sock", b'0', 0o140644, b"", b"")
                .gz(),
            "socket",
        ),
        (
            "long name with traversal",
            Tarball::flux()
                .long_name(format!("{}/../../../evil", "d".repeat(120)).as_bytes())
                .file("placeholder", 0o644, b"x")
                .gz(),
            "'..'",
        ),
    ];
    for (what, body, needle) in cases {
        let (vol, run) = fetch_authentic(body, &[]);
        run.assert_code(6).assert_stderr_has(needle);
        vol.assert_nothing_left();
        assert!(
            !vol.path("evil").exists() && !vol.path("share/evil").exists(),
            "{what}: escaped"
        );
        assert!(
            vol.termination_message().contains("unsafe archive entry"),
            "{what}: {}",
            vol.termination_message()
        );
    }
}

#[test]
fn symlinks_are_kept_only_when_they_resolve_inside() {
    let body = Tarball::flux()
        .dir("sub/", 0o755)
        .file("sub/file", 0o644, b"inside")
        .symlink("ok", "sub/file")
        .symlink("sub/sibling", "../ok")
        .symlink("dirlink", "sub")
        .symlink("escape", "../../../../etc")
        .symlink("abs", "/etc/passwd")
        .symlink("a/b/up", "../..")
        .symlink("chain", "a/b/up/..")
        .symlink("loop1", "loop2")
        .symlink("loop2", "loop1/x")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(0)
        .assert_stderr_has("skipping symlink")
        .assert_stderr_has("resolves outside the artifact")
        .assert_stderr_has("absolute path");
    let src = vol.source();
    assert_eq!(fs::read_to_string(src.join("ok")).unwrap(), "inside");
    assert_eq!(
        fs::read_to_string(src.join("sub/sibling")).unwrap(),
        "inside"
    );
    assert_eq!(
        fs::read_to_string(src.join("dirlink/file")).unwrap(),
        "inside"
    );
    assert_eq!(
        fs::read_link(src.join("a/b/up")).unwrap().to_str(),
        Some("../..")
    );
    for gone in ["escape", "abs", "chain", "loop1", "loop2"] {
        assert!(
            fs::symlink_metadata(src.join(gone)).is_err(),
            "{gone} should have been skipped"
        );
    }
}

#[test]
fn nothing_is_ever_written_through_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let body = Tarball::flux()
        .symlink("out", &target)
        .file("out/pwned", 0o644, b"x")
        .symlink("rel", "../../..")
        .file("rel/pwned", 0o644, b"x")
        .symlink("inner", "sub")
        .dir("sub/", 0o755)
        .file("inner/f", 0o644, b"real dir, not through the link")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(0);
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!vol.path("pwned").exists());
    let src = vol.source();
    assert!(
        src.join("out/pwned").is_file(),
        "a real directory was made instead"
    );
    assert!(!fs::symlink_metadata(src.join("out")).unwrap().is_symlink());
    assert!(
        !fs::symlink_metadata(src.join("inner"))
            .unwrap()
            .is_symlink()
    );
    assert!(!src.join("sub/f").exists());
}

#[test]
fn hard_links_are_kept_only_to_files_already_unpacked() {
    use std::os::unix::fs::MetadataExt;
    let body = Tarball::flux()
        .file("data", 0o644, b"shared")
        .hardlink("same", "data")
        .hardlink("passwd", "../../../etc/passwd")
        .hardlink("absolute", "/etc/passwd")
        .hardlink("forward", "later")
        .file("later", 0o644, b"x")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(0).assert_stderr_has("skipping hard link");
    let src = vol.source();
    assert_eq!(
        fs::metadata(src.join("same")).unwrap().ino(),
        fs::metadata(src.join("data")).unwrap().ino()
    );
    for gone in ["passwd", "absolute", "forward"] {
        assert!(!src.join(gone).exists(), "{gone}");
    }
}

#[test]
fn a_later_entry_replaces_a_hard_link_instead_of_writing_through_it() {
    let body = Tarball::flux()
        .file("data", 0o644, b"original")
        .hardlink("alias", "data")
        .file("alias", 0o644, b"replacement")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(0);
    assert_eq!(
        fs::read_to_string(vol.source().join("data")).unwrap(),
        "original"
    );
    assert_eq!(
        fs::read_to_string(vol.source().join("alias")).unwrap(),
        "replacement"
    );
}

#[test]
fn a_gzip_bomb_stops_at_the_limit() {
    // 256 MiB of zeros in a ~260 KiB artifact; the default 100 MiB limit must stop it.
    let (vol, run) = fetch_authentic(zero_bomb(256 << 20), &[]);
    run.assert_code(6)
        .assert_stderr_has("larger than the limit of 104857600 bytes")
        .assert_stderr_has("--max-untar-size");
    vol.assert_nothing_left();

    let (vol, run) = fetch_authentic(zero_bomb(4 << 20), &["--max-untar-size", "1048576"]);
    run.assert_code(6)
        .assert_stderr_has("limit of 1048576 bytes");
    vol.assert_nothing_left();

    let (_vol, run) = fetch_authentic(zero_bomb(4 << 20), &["--max-untar-size", "-1"]);
    run.assert_code(0);
}

#[test]
fn a_huge_metadata_header_is_refused() {
    let body = Tarball::flux()
        .long_name(&vec![b'a'; 2 << 20])
        .file("x", 0o644, b"x")
        .gz();
    let (vol, run) = fetch_authentic(body, &["--max-untar-size", "-1"]);
    run.assert_code(6).assert_stderr_has("header metadata");
    vol.assert_nothing_left();
}

#[test]
fn corrupt_inputs_are_errors() {
    let good = Tarball::flux().file("f", 0o644, &[7u8; 100_000]).gz();
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the gzip stream");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "truncated or corrupt",
        ),
        (
            "truncated trailer",
            good[..good.len() - 4].to_vec(),
            "truncated or corrupt",
        ),
        ("flipped byte", flipped, "truncated or corrupt"),
        (
            "plain tar",
            Tarball::flux().file("f", 0o644, b"x").tar(),
            "not gzip",
        ),
        ("text", b"<html>not found</html>".to_vec(), "not gzip"),
        ("empty", Vec::new(), "empty"),
        ("trailing garbage", trailing, "truncated or corrupt"),
        (
            "gzip of garbage",
            gzip(&[0x55u8; 4096]),
            "truncated or corrupt",
        ),
    ];
    for (what, body, needle) in cases {
        let (vol, run) = fetch_authentic(body, &[]);
        assert_eq!(run.code, 6, "{what}: {}", run.stderr);
        run.assert_stderr_has(needle);
        vol.assert_nothing_left();
    }
}

#[test]
fn a_hostile_archive_with_a_wrong_digest_is_reported_as_a_verification_failure() {
    let server = Server::start();
    let body = Tarball::flux().file("../evil", 0o644, b"x").gz();
    let url = server.serve("/a.tar.gz", body);
    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(b"other"), &[])
        .assert_code(5)
        .assert_stderr_has("digest mismatch");
    vol.assert_nothing_left();
}

#[test]
fn a_sparse_entry_cannot_write_past_the_limit() {
    // 1 byte stored, 64 MiB written: the holes come from the tar reader, not the stream.
    let body = Tarball::flux().sparse("holes", 64 << 20).gz();
    assert!(body.len() < 1024, "a tiny artifact: {} bytes", body.len());
    let (vol, run) = fetch_authentic(body, &["--max-untar-size", "1048576"]);
    run.assert_code(6)
        .assert_stderr_has("limit of 1048576 bytes");
    vol.assert_nothing_left();

    // Within the limit it unpacks, holes and all.
    let body = Tarball::flux().sparse("holes", 4096).gz();
    let (vol, run) = fetch_authentic(body, &["--max-untar-size", "1048576"]);
    run.assert_code(0);
    let data = fs::read(vol.source().join("holes")).unwrap();
    assert_eq!(data.len(), 4096);
    assert_eq!(data[4095], b'x');
}

#[test]
fn a_link_is_judged_only_by_links_that_really_exist() {
    // `d` is a real directory, so the link `d -> sub/deep` is never created. Judged as if it
    // were, `x -> d/../..` lands in the root; on disk it climbs out of it.
    let body = Tarball::flux()
        .dir("sub/deep/", 0o755)
        .symlink("d", "sub/deep")
        .dir("d/", 0o755)
        .symlink("x", "d/../..")
        .symlink("y", "d/../sub")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(0)
        .assert_stderr_has("another entry already has its name")
        .assert_stderr_has("resolves outside the artifact");
    let src = vol.source();
    assert!(!fs::symlink_metadata(src.join("d")).unwrap().is_symlink());
    assert!(fs::symlink_metadata(src.join("x")).is_err(), "x is skipped");
    assert_eq!(
        fs::canonicalize(src.join("y")).unwrap(),
        fs::canonicalize(src.join("sub")).unwrap()
    );
}

#[test]
fn long_link_targets_are_skipped_cheaply_and_logged_briefly() {
    // 64 links whose PAX linkpath is 256 KiB of "a/": each is longer than PATH_MAX.
    let target = "a/".repeat(128 << 10);
    let mut tar = Tarball::flux();
    for i in 0..64 {
        let record = format!("linkpath={target}\n");
        let len = record.len();
        // A PAX record's length counts its own digits.
        let mut total = len + 1;
        while (total.to_string().len() + len + 1) != total {
            total = total.to_string().len() + len + 1;
        }
        let pax = format!("{total} {record}");
        tar = tar
            .entry(b"././@PaxHeader", b'x', 0o644, pax.as_bytes(), b"")
            .symlink(&format!("l{i}"), "placeholder");
    }
    let (vol, run) = fetch_authentic(tar.gz(), &["--timeout", "60"]);
    run.assert_code(0)
        .assert_stderr_has("longer than 4095 bytes (PATH_MAX)");
    assert!(
        run.stderr.len() < 64 << 10,
        "the log shows names cut short, not 16 MiB of targets: {} bytes",
        run.stderr.len()
    );
    assert_eq!(fs::read_dir(vol.source()).unwrap().count(), 0);
}

#[test]
fn a_name_too_long_for_the_file_system_is_the_archive_s_fault() {
    // NAME_MAX is 255: a 300-byte component cannot be created.
    let name = "n".repeat(300);
    let body = Tarball::flux()
        .long_name(name.as_bytes())
        .file("placeholder", 0o644, b"x")
        .gz();
    let (vol, run) = fetch_authentic(body, &[]);
    run.assert_code(6)
        .assert_stderr_has("cannot be created on this file system");
    vol.assert_nothing_left();
}
