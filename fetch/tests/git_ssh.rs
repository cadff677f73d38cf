//! `fetch git` over SSH against a real OpenSSH server on a loopback port: key auth, encrypted
//! keys, and host-key verification with GIT_SSH_KNOWN_HOSTS.

mod support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::git_server::{Credentials, GitServer};
use support::Volume;

struct Sshd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    /// "ssh-ed25519 AAAA..." of the server.
    host_key: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path, passphrase: &str) -> (String, String) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "e2e", "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) runs");
    assert!(status.success());
    let private = fs::read_to_string(path).expect("private key");
    let public = fs::read_to_string(path.with_extension("pub")).expect("public key");
    (private, public.trim().to_string())
}

impl Sshd {
    fn start(authorized: &[&str]) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (_, host_pub) = keygen(&d.join("host_key"), "");
        fs::write(d.join("authorized_keys"), authorized.join("\n") + "\n").expect("keys");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
             AuthorizedKeysFile {ak}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n\
             UsePAM no\nLogLevel VERBOSE\n",
            hk = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        );
        fs::write(d.join("sshd_config"), config).expect("config");
        // sshd's privilege-separation directory.
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let log = fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd (openssh-server, installed by .ci/run) starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Sshd {
            child,
            port,
            _dir: dir,
            host_key,
        }
    }

    fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }

    fn url(&self, bare: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, bare.display())
    }
}

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
