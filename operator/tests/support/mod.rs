//! An agent process serving a program directory, with the real Pulumi CLI on a `file://`
//! backend, and a client for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use operator::proto::automation_service_client::AutomationServiceClient;
use tonic::transport::Channel;

pub fn pulumi_dir() -> PathBuf {
    let dirs = e2e::tools::dirs(&["pulumi"]).expect("pulumi is built by tests/tools/build.sh");
    e2e::tools::find(&dirs, "pulumi")
        .expect("pulumi binary")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

pub struct Options<'a> {
    pub program: &'a str,
    pub args: &'a [&'a str],
    pub env_file: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    /// Wrap the agent (e.g. in bwrap); the agent's argv follows.
    pub wrapper: &'a [&'a str],
    /// A fake CLI instead of the real one.
    pub pulumi: Option<PathBuf>,
    /// Another agent binary taking the same `serve` flags (PKO's, for interoperability).
    pub binary: Option<PathBuf>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            program: "",
            args: &[],
            env_file: "PULUMI_CONFIG_PASSPHRASE=agent-tests\n",
            env: &[],
            wrapper: &[],
            pulumi: None,
            binary: None,
        }
    }
}

impl Agent {
    pub fn start(opts: Options<'_>) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("program");
        for d in ["program", "state", "home", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(program.join("Pulumi.yaml"), opts.program).expect("program");
        let env_file = dir.path().join(".env");
        std::fs::write(&env_file, opts.env_file).expect("env file");
        let port = e2e::process::free_port();
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).expect("log");
        let path = format!(
            "{}:{}",
            pulumi_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let agent = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_agent")));
        let mut cmd = match opts.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        cmd.args(["serve", "--workspace"])
            .arg(&program)
            .args([
                "--skip-install",
                "--auth-mode",
                "none",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--env-file")
            .arg(&env_file)
            .args(opts.args)
            .env("PATH", path)
            .env("HOME", dir.path().join("home"))
            .env("PULUMI_HOME", dir.path().join("home/.pulumi"))
            .env("TMPDIR", dir.path().join("tmp"))
            .env(
                "PULUMI_BACKEND_URL",
                format!("file://{}", dir.path().join("state").display()),
            )
            .env("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
            .env_remove("PULUMI_CONFIG_PASSPHRASE")
            // The level the operator runs agents at (no AGENT_LOG in the pod): what the tests
            // see logged is what a cluster would.
            .env_remove("AGENT_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        if let Some(p) = &opts.pulumi {
            cmd.arg("--pulumi").arg(p);
        }
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("agent starts");
        let mut agent = Agent {
            child,
            port,
            dir,
            log,
        };
        agent.wait_listening();
        agent
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the agent exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent never listened:\n{}", self.log_text());
    }

    pub fn program_dir(&self) -> PathBuf {
        self.dir.path().join("program")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> AutomationServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        AutomationServiceClient::new(channel).max_decoding_message_size(64 << 20)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the agent to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Pulumi CLI run directly against the same program and backend.
    pub fn pulumi(&self, args: &[&str]) -> std::process::Output {
        Command::new(pulumi_dir().join("pulumi"))
            .arg("--non-interactive")
            .args(args)
            .current_dir(self.program_dir())
            .env("PATH", format!("{}:/usr/bin:/bin", pulumi_dir().display()))
            .env("HOME", self.dir.path().join("home"))
            .env("PULUMI_HOME", self.dir.path().join("home/.pulumi"))
            .env(
                "PULUMI_BACKEND_URL",
                format!("file://{}", self.state_dir().display()),
            )
            .env("PULUMI_CONFIG_PASSPHRASE", "agent-tests")
            .env("PULUMI_SKIP_UPDATE_CHECK", "true")
            .env("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
            .output()
            .expect("pulumi runs")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(path: &Path) -> String {
    e2e::process::tail(path, 40)
}
