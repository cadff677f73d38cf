//! Shared test support: a scriptable HTTP server, a raw tar builder, and a runner for the real
//! `fetch` binary in a throw-away pod-like volume.
#![allow(dead_code)]

pub mod server;
pub mod tarball;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A fake `/share` volume plus a termination-log file, as a pod would have.
pub struct Volume {
    pub dir: tempfile::TempDir,
}

impl Volume {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("termination-log"), "").unwrap();
        Volume { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn source(&self) -> PathBuf {
        self.path("share/source")
    }

    pub fn workspace(&self) -> PathBuf {
        self.path("share/workspace")
    }

    pub fn termination_message(&self) -> String {
        fs::read_to_string(self.path("termination-log")).unwrap()
    }

    /// Names in the share directory, to prove nothing (staging, records) was left behind.
    pub fn share_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(self.path("share")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// `fetch flux` with the pod's arguments and quick retries; `extra` is appended.
    pub fn fetch_flux(&self, url: &str, digest: &str, extra: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.args(["flux", "--url", url, "--digest", digest]);
        cmd.args(["--target-dir"]).arg(self.source());
        cmd.args(["--link"]).arg(self.workspace());
        cmd.args(["--retry-backoff", "0.05"]);
        cmd.args(extra);
        Run::of(cmd)
    }

    /// `fetch git` with the pod's arguments; `env` carries credentials, `extra` flags.
    pub fn fetch_git(
        &self,
        url: &str,
        revision: &str,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Run {
        let mut cmd = self.command();
        cmd.args(["git", "--url", url, "--revision", revision]);
        cmd.args(["--target-dir"]).arg(self.source());
        cmd.args(["--link"]).arg(self.workspace());
        if !extra.contains(&"--timeout") {
            cmd.args(["--timeout", "60"]);
        }
        cmd.args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::of(cmd)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fetch"));
        cmd.arg("--termination-log")
            .arg(self.path("termination-log"));
        for var in [
            "FLUX_URL",
            "FLUX_DIGEST",
            "FLUX_DIR",
            "FLUX_MAX_UNTAR_SIZE_BYTES",
            "SOURCE_CONTROLLER_LOCALHOST",
            "FETCH_LOG_FORMAT",
            "GIT_URL",
            "GIT_REVISION",
            "GIT_DIR",
            "GIT_SHALLOW",
            "GIT_USERNAME",
            "GIT_PASSWORD",
            "GIT_TOKEN",
            "GIT_SSH_PRIVATE_KEY",
            "GIT_SSH_KNOWN_HOSTS",
            "GIT_GITHUB_APP_ID",
            "GIT_GITHUB_APP_INSTALLATION_ID",
            "GIT_GITHUB_APP_PRIVATE_KEY",
            "GITHUB_API_URL",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Asserts the all-or-nothing rule after a failure: no target, no link, no staging.
    pub fn assert_nothing_left(&self) {
        assert!(!self.source().exists(), "target left behind");
        assert!(
            fs::symlink_metadata(self.workspace()).is_err(),
            "link left behind"
        );
        assert_eq!(self.share_entries(), Vec::<String>::new(), "leftovers");
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(mut cmd: Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; stderr:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
