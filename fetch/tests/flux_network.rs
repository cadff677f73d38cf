//! Network behaviour: what is retried, what is final, and the overall deadline.

mod support;

use std::time::{Duration, Instant};

use support::server::{Reply, Server};
use support::tarball::Tarball;
use support::{Volume, sha256};

fn artifact() -> Vec<u8> {
    Tarball::flux()
        .file("Pulumi.yaml", 0o644, b"name: x\n")
        .gz()
}

#[test]
fn not_found_is_final_at_once_and_says_the_artifact_moved_on() {
    let server = Server::start();
    let vol = Volume::new();
    let run = vol.fetch_flux(
        &server.url("/gone.tar.gz"),
        &sha256(b"x"),
        &["--retries", "5"],
    );
    run.assert_code(4)
        .assert_stderr_has("source has probably moved on");
    assert_eq!(server.hits("/gone.tar.gz"), 1, "404 is not retried");
    vol.assert_nothing_left();
    assert!(vol.termination_message().contains("not found (HTTP 404)"));
}

#[test]
fn server_errors_are_retried_until_the_artifact_arrives() {
    let server = Server::start();
    let body = artifact();
    let url = server.route(
        "/a.tar.gz",
        vec![
            Reply::Status(503, None),
            Reply::Status(502, None),
            Reply::Status(429, None),
            Reply::Body(body.clone()),
        ],
    );
    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(&body), &["--retries", "3"])
        .assert_code(0)
        .assert_stderr_has("retrying");
    assert_eq!(server.hits("/a.tar.gz"), 4);
    assert!(vol.workspace().join("Pulumi.yaml").exists());
}

#[test]
fn retries_run_out_with_a_network_error() {
    let server = Server::start();
    let url = server.route("/a.tar.gz", vec![Reply::Status(500, None)]);
    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(b"x"), &["--retries", "2"])
        .assert_code(3)
        .assert_stderr_has("HTTP 500");
    assert_eq!(server.hits("/a.tar.gz"), 3, "one try and two retries");
    vol.assert_nothing_left();
}

#[test]
fn not_implemented_and_client_errors_are_not_retried() {
    for status in [501, 403] {
        let server = Server::start();
        let url = server.route("/a.tar.gz", vec![Reply::Status(status, None)]);
        let vol = Volume::new();
        vol.fetch_flux(&url, &sha256(b"x"), &[])
            .assert_code(3)
            .assert_stderr_has(&format!("HTTP {status}"));
        assert_eq!(server.hits("/a.tar.gz"), 1, "{status}");
    }
}

#[test]
fn retry_after_is_honoured() {
    let server = Server::start();
    let body = artifact();
    let url = server.route(
        "/a.tar.gz",
        vec![
            Reply::Status(429, Some("1".into())),
            Reply::Body(body.clone()),
        ],
    );
    let vol = Volume::new();
    let started = Instant::now();
    vol.fetch_flux(&url, &sha256(&body), &[]).assert_code(0);
    // The back-off flag is 50ms; only the server's Retry-After explains a wait of a second.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.hits("/a.tar.gz"), 2);
}

#[test]
fn a_download_cut_mid_body_is_retried_from_a_clean_staging_dir() {
    let server = Server::start();
    let body = Tarball::flux()
        .file("big", 0o644, &vec![9u8; 2 << 20])
        .file("Pulumi.yaml", 0o644, b"name: x\n")
        .gz();
    let url = server.route(
        "/a.tar.gz",
        vec![Reply::Cut(body.clone()), Reply::Body(body.clone())],
    );
    let vol = Volume::new();
    vol.fetch_flux(&url, &sha256(&body), &[])
        .assert_code(0)
        .assert_stderr_has("broke off");
    assert_eq!(server.hits("/a.tar.gz"), 2);
    assert_eq!(
        vol.share_entries(),
        vec![".source.fetched", "source", "workspace"]
    );
}

#[test]
fn an_unreachable_host_is_a_network_error() {
    // Bind then drop a listener so the port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vol = Volume::new();
    vol.fetch_flux(
        &format!("http://127.0.0.1:{port}/a.tar.gz"),
        &sha256(b"x"),
        &["--retries", "1"],
    )
    .assert_code(3)
    .assert_stderr_has("cannot reach");
    vol.assert_nothing_left();
}

#[test]
fn a_silent_server_is_cut_off_by_the_overall_timeout() {
    let server = Server::start();
    let url = server.route("/a.tar.gz", vec![Reply::Silence]);
    let vol = Volume::new();
    let started = Instant::now();
    let run = vol.fetch_flux(&url, &sha256(b"x"), &["--timeout", "1", "--retries", "5"]);
    run.assert_code(3);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline held"
    );
    vol.assert_nothing_left();
}

#[test]
fn credentials_and_query_strings_never_reach_logs_or_messages() {
    let server = Server::start();
    let url = format!(
        "http://fetchuser:hunter2@{}/gone.tar.gz?token=s3cr3t-signature",
        server.addr()
    );
    let vol = Volume::new();
    let run = vol.fetch_flux(&url, &sha256(b"x"), &[]);
    run.assert_code(4);
    let told = format!("{}{}", run.stderr, vol.termination_message());
    for secret in ["hunter2", "fetchuser", "s3cr3t", "token="] {
        assert!(!told.contains(secret), "{secret} leaked:\n{told}");
    }
    assert!(told.contains("/gone.tar.gz?<redacted>"));
    // The server did receive the query: redaction is only in what we print.
    assert!(server.requests()[0].contains("token=s3cr3t-signature"));
}
