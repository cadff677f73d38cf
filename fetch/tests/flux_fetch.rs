//! `fetch flux` against a real HTTP server: the happy paths, digests, flags and env, re-runs.

mod support;

use std::fs;
use std::path::Path;

use support::server::Server;
use support::tarball::Tarball;
use support::{Volume, mode, sha256};

fn program() -> Vec<u8> {
    Tarball::flux()
        .dir("infra/", 0o750)
        .file("infra/Pulumi.yaml", 0o600, b"name: demo\nruntime: yaml\n")
        .file("infra/run.sh", 0o700, b"#!/bin/sh\n")
        .file("README.md", 0o600, b"readme")
        .gz()
}

#[test]
fn a_flux_artifact_is_unpacked_linked_and_writable_by_any_uid() {
    let server = Server::start();
    let body = program();
    let url = server.serve("/gitrepository/default/app/abc.tar.gz", body.clone());
    let vol = Volume::new();

    vol.fetch_flux(&url, &sha256(&body), &["--dir", "infra"])
        .assert_code(0);

    let ws = vol.workspace();
    assert_eq!(
        fs::read_link(&ws).unwrap(),
        vol.source().join("infra"),
        "link points at --dir"
    );
    assert_eq!(
        fs::read_to_string(ws.join("Pulumi.yaml")).unwrap(),
        "name: demo\nruntime: yaml\n"
    );
    assert_eq!(mode(&ws.join("Pulumi.yaml")), 0o666);
    assert_eq!(mode(&ws.join("run.sh")), 0o777);
    assert_eq!(mode(&vol.source().join("infra")), 0o777);
    assert_eq!(mode(&vol.source()), 0o777);
    assert_eq!(
        vol.share_entries(),
        vec![".source.fetched", "source", "workspace"],
        "only the tree, its record and the link remain"
    );
}

#[test]
fn preserve_mode_keeps_archive_modes_but_never_special_bits() {
    let server = Server::start();
    let body = Tarball::flux()
        .dir("d/", 0o750)
        .file("d/tool", 0o4755, b"x")
        .file("d/sticky", 0o1640, b"x")
        .gz();
    let url = server.serve("/a.tar.gz", body.clone());
    let vol = Volume::new();

    vol.fetch_flux(&url, &sha256(&body), &["--preserve-mode"])
        .assert_code(0);

    assert_eq!(mode(&vol.source().join("d/tool")), 0o755);
    assert_eq!(mode(&vol.source().join("d/sticky")), 0o640);
    assert_eq!(mode(&vol.source().join("d")), 0o750);
}

#[test]
fn every_supported_digest_form_is_accepted() {
    use sha2::Digest as _;
    let server = Server::start();
    let body = program();
    let url = server.serve("/a.tar.gz", body.clone());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let digests = [
        sha256(&body),
        sha256(&body).trim_start_matches("sha256:").to_string(),
        format!("sha384:{}", hex(&sha2::Sha384::digest(&body))),
        format!("sha512:{}", hex(&sha2::Sha512::digest(&body))),
        format!("blake3:{}", blake3::hash(&body).to_hex()),
    ];
    for digest in digests {
        let vol = Volume::new();
        vol.fetch_flux(&url, &digest, &[]).assert_code(0);
        assert!(vol.workspace().join("README.md").exists(), "{digest}");
    }
}

#[test]
fn malformed_digests_are_refused_before_any_download() {
    let server = Server::start();
    let body = program();
    let url = server.serve("/a.tar.gz", body.clone());
    let good = sha256(&body);
    let hex = good.trim_start_matches("sha256:");
    for bad in [
        String::new(),
        format!("sha1:{}", &hex[..40]),
        format!("md5:{}", &hex[..32]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[..63]),
        format!("sha512:{hex}"),
    ] {
        let vol = Volume::new();
        vol.fetch_flux(&url, &bad, &[])
            .assert_code(2)
            .assert_stderr_has("accepted forms");
        vol.assert_nothing_left();
        assert!(vol.termination_message().contains("accepted forms"));
    }
    assert_eq!(server.hits("/a.tar.gz"), 0, "nothing was downloaded");
}

#[test]
fn a_wrong_digest_fails_verification_and_keeps_nothing() {
    let server = Server::start();
    let body = program();
    let url = server.serve("/a.tar.gz", body.clone());
    let vol = Volume::new();

    let run = vol.fetch_flux(&url, &sha256(b"something else"), &["--dir", "infra"]);

    run.assert_code(5).assert_stderr_has("digest mismatch");
    vol.assert_nothing_left();
    let msg = vol.termination_message();
    assert!(
        msg.contains("digest mismatch") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn a_dir_that_escapes_is_refused_before_download_and_a_missing_one_after() {
    let server = Server::start();
    let body = program();
    let url = server.serve("/a.tar.gz", body.clone());

    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(&body), &["--dir", "../etc"])
        .assert_code(2)
        .assert_stderr_has("'..'");
    assert_eq!(server.hits("/a.tar.gz"), 0);

    vol.fetch_flux(&url, &sha256(&body), &["--dir", "nope"])
        .assert_code(7)
        .assert_stderr_has("\"nope\" does not name a directory");
    vol.assert_nothing_left();

    vol.fetch_flux(&url, &sha256(&body), &["--dir", "README.md"])
        .assert_code(7);
    vol.assert_nothing_left();
}

#[test]
fn a_restarted_pod_reuses_the_tree_and_a_new_digest_replaces_it() {
    let server = Server::start();
    let v1 = program();
    let v2 = Tarball::flux().file("NEW.md", 0o600, b"v2").gz();
    let url1 = server.serve("/v1.tar.gz", v1.clone());
    let url2 = server.serve("/v2.tar.gz", v2.clone());
    let vol = Volume::new();

    vol.fetch_flux(&url1, &sha256(&v1), &[]).assert_code(0);
    assert_eq!(fs::read_link(vol.workspace()).unwrap(), vol.source());
    vol.fetch_flux(&url1, &sha256(&v1), &[])
        .assert_code(0)
        .assert_stderr_has("already in place");
    assert_eq!(server.hits("/v1.tar.gz"), 1, "the restart did not download");

    // The link is re-made on a restart even if it was lost.
    fs::remove_file(vol.workspace()).unwrap();
    vol.fetch_flux(&url1, &sha256(&v1), &[]).assert_code(0);
    assert!(vol.workspace().join("README.md").exists());

    vol.fetch_flux(&url2, &sha256(&v2), &[]).assert_code(0);
    assert!(vol.workspace().join("NEW.md").exists());
    assert!(!vol.source().join("README.md").exists(), "old tree is gone");
    assert_eq!(
        vol.share_entries(),
        vec![".source.fetched", "source", "workspace"]
    );
}

#[test]
fn a_failed_run_after_a_good_one_leaves_no_stale_tree() {
    let server = Server::start();
    let v1 = program();
    let url = server.serve("/v1.tar.gz", v1.clone());
    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(&v1), &[]).assert_code(0);

    vol.fetch_flux(&server.url("/gone.tar.gz"), &sha256(b"v2"), &[])
        .assert_code(4);
    vol.assert_nothing_left();
}

#[test]
fn env_vars_stand_in_for_flags() {
    let server = Server::start();
    let body = program();
    let url = server.serve("/a.tar.gz", body.clone());
    let vol = Volume::new();
    let mut cmd = vol.command();
    cmd.arg("flux")
        .arg("--target-dir")
        .arg(vol.source())
        .arg("--link")
        .arg(vol.workspace())
        .env("FLUX_URL", &url)
        .env("FLUX_DIGEST", sha256(&body))
        .env("FLUX_DIR", "infra")
        .env("FLUX_MAX_UNTAR_SIZE_BYTES", "-1");
    support::Run::of(cmd).assert_code(0);
    assert!(vol.workspace().join("Pulumi.yaml").exists());
}

#[test]
fn source_controller_localhost_replaces_the_advertised_host() {
    let server = Server::start();
    let body = program();
    server.serve("/gitrepository/flux-system/app/sha.tar.gz", body.clone());
    let vol = Volume::new();
    let mut cmd = vol.command();
    cmd.args([
        "flux",
        "--url",
        "http://source-controller.flux-system.svc.cluster.local./gitrepository/flux-system/app/sha.tar.gz",
        "--digest",
        &sha256(&body),
        "--target-dir",
    ])
    .arg(vol.source())
    .env("SOURCE_CONTROLLER_LOCALHOST", server.addr().to_string());
    support::Run::of(cmd).assert_code(0);
    assert_eq!(server.hits("/gitrepository/flux-system/app/sha.tar.gz"), 1);
}

#[test]
fn json_logs_are_one_object_per_line_and_the_failure_is_an_error_event() {
    let server = Server::start();
    let vol = Volume::new();
    let run = vol.fetch_flux(
        &server.url("/missing.tar.gz"),
        &sha256(b"x"),
        &["--log-format", "json"],
    );
    run.assert_code(4);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["exit_code"], 4);
    assert!(last["message"].as_str().unwrap().contains("not found"));
}

#[test]
fn bad_flag_values_are_usage_errors_on_one_line() {
    let vol = Volume::new();
    let body = program();
    for (extra, needle) in [
        (&["--max-untar-size", "0"][..], "positive number of bytes"),
        (&["--timeout", "0"][..], "more than zero"),
        (&["--retries", "x"][..], "invalid value"),
    ] {
        let run = vol.fetch_flux("http://127.0.0.1:9/a.tar.gz", &sha256(&body), extra);
        run.assert_code(2).assert_stderr_has(needle);
        let msg = vol.termination_message();
        assert!(msg.contains(needle) && !msg.contains('\n'), "{msg}");
    }
    let run = vol.fetch_flux("ftp://host/a.tar.gz", &sha256(&body), &[]);
    run.assert_code(2).assert_stderr_has("http:// or https://");
    let mut cmd = vol.command();
    cmd.args(["flux", "--target-dir", "/tmp/x"]);
    support::Run::of(cmd)
        .assert_code(2)
        .assert_stderr_has("--url");
}

#[test]
fn no_termination_message_is_written_where_the_file_does_not_exist() {
    let vol = Volume::new();
    let missing = vol.path("no-such-log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fetch"));
    cmd.arg("--termination-log").arg(&missing).args([
        "flux",
        "--url",
        "http://127.0.0.1:9/a.tar.gz",
        "--digest",
        "bad",
        "--target-dir",
    ]);
    cmd.arg(vol.source());
    support::Run::of(cmd).assert_code(2);
    assert!(!Path::new(&missing).exists());
}
