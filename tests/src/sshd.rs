//! A real OpenSSH server on a loopback port for git over SSH: host key and authorized keys
//! made fresh per server, stopped when dropped. Needs `/usr/sbin/sshd` and `ssh-keygen`
//! (openssh-server, openssh-client; installed by `.ci/run`).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// "ssh-ed25519 AAAA..." of the server.
    pub host_key: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path, passphrase: &str) -> (String, String) {
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
    pub fn start(authorized: &[&str]) -> Sshd {
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

    pub fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }

    pub fn url(&self, bare: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, bare.display())
    }
}
