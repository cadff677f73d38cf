//! `fetch git` over SSH against a real OpenSSH server on a loopback port: key auth, encrypted
//! keys, and host-key verification with GIT_SSH_KNOWN_HOSTS.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use e2e::git_server::{Credentials, GitServer};
use e2e::sshd::{Sshd, keygen};
use support::Volume;

struct Fixture {
    sshd: Sshd,
    _git: GitServer,
    url: String,
    sha: String,
    key: String,
    encrypted_key: String,
    stranger_key: String,
    _keys: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, key_pub) = keygen(&keys.path().join("id"), "");
    let (encrypted_key, enc_pub) = keygen(&keys.path().join("id_enc"), "open sesame");
    let (stranger_key, _) = keygen(&keys.path().join("id_stranger"), "");
    let sshd = Sshd::start(&[&key_pub, &enc_pub]);
    let git = GitServer::start(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    )
    .expect("git server");
    let repo = git.create_repo("over-ssh").expect("repo");
    let sha = repo
        .commit(&[("Pulumi.yaml", "name: p\nruntime: yaml\n")], "c")
        .expect("commit");
    let bare: PathBuf = repo.bare_path().to_path_buf();
    Fixture {
        url: sshd.url(&bare),
        sshd,
        _git: git,
        sha,
        key,
        encrypted_key,
        stranger_key,
        _keys: keys,
    }
}

#[test]
fn ssh_key_auth_with_and_without_known_hosts() {
    let f = fixture();
    let kh = f.sshd.known_hosts();
    let v = Volume::new();
    let run = v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.key),
            ("GIT_SSH_KNOWN_HOSTS", &kh),
        ],
        &["--shallow"],
    );
    run.assert_code(0);
    assert!(
        !run.stderr.contains("without verification"),
        "{}",
        run.stderr
    );
    assert!(v.workspace().join("Pulumi.yaml").is_file());

    // Without known hosts the key is accepted, with a warning naming the variable.
    let v = Volume::new();
    v.fetch_git(&f.url, &f.sha, &[("GIT_SSH_PRIVATE_KEY", &f.key)], &[])
        .assert_code(0)
        .assert_stderr_has("GIT_SSH_KNOWN_HOSTS");

    // A key the server does not know.
    let v = Volume::new();
    let run = v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.stranger_key),
            ("GIT_SSH_KNOWN_HOSTS", &kh),
        ],
        &[],
    );
    run.assert_code(8).assert_stderr_has("GIT_SSH_PRIVATE_KEY");
    assert!(
        !run.stderr.contains("PRIVATE KEY-----"),
        "the key never shows"
    );
    v.assert_nothing_left();
}

#[test]
fn changed_or_unknown_host_keys_are_refused() {
    let f = fixture();
    // The host is listed with another key: a changed key.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let changed = format!("[127.0.0.1]:{} {other}\n", f.sshd.port);
    let v = Volume::new();
    v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.key),
            ("GIT_SSH_KNOWN_HOSTS", &changed),
        ],
        &[],
    )
    .assert_code(5)
    .assert_stderr_has("does not match GIT_SSH_KNOWN_HOSTS");
    v.assert_nothing_left();

    // Only other hosts are listed: unknown.
    let elsewhere = format!("github.com {}\n", f.sshd.host_key);
    let v = Volume::new();
    v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.key),
            ("GIT_SSH_KNOWN_HOSTS", &elsewhere),
        ],
        &[],
    )
    .assert_code(5)
    .assert_stderr_has("not in GIT_SSH_KNOWN_HOSTS");
}

#[test]
fn passphrase_protected_keys() {
    let f = fixture();
    let kh = f.sshd.known_hosts();
    let v = Volume::new();
    v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.encrypted_key),
            ("GIT_SSH_KNOWN_HOSTS", &kh),
        ],
        &[],
    )
    .assert_code(2)
    .assert_stderr_has("encrypted; put its passphrase in GIT_PASSWORD");

    let v = Volume::new();
    v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.encrypted_key),
            ("GIT_PASSWORD", "open sesame"),
            ("GIT_SSH_KNOWN_HOSTS", &kh),
        ],
        &[],
    )
    .assert_code(0);

    let v = Volume::new();
    let run = v.fetch_git(
        &f.url,
        &f.sha,
        &[
            ("GIT_SSH_PRIVATE_KEY", &f.encrypted_key),
            ("GIT_PASSWORD", "wrong words"),
            ("GIT_SSH_KNOWN_HOSTS", &kh),
        ],
        &[],
    );
    run.assert_code(8).assert_stderr_has("passphrase");
    assert!(!run.stderr.contains("wrong words"));

    // A key where no key is.
    let v = Volume::new();
    v.fetch_git(
        &f.url,
        &f.sha,
        &[("GIT_SSH_PRIVATE_KEY", "ssh-ed25519 AAAA e2e")],
        &[],
    )
    .assert_code(2)
    .assert_stderr_has("not a PEM or OpenSSH private key");

    // An SSH key with an https URL.
    let v = Volume::new();
    v.fetch_git(
        "https://example.invalid/r.git",
        &f.sha,
        &[("GIT_SSH_PRIVATE_KEY", &f.key)],
        &[],
    )
    .assert_code(2)
    .assert_stderr_has("ssh://");
}
