//! Long-running child processes owned by a test: output to a log file, stopped on drop
//! (SIGTERM, a grace period, then SIGKILL), so no test leaves a process behind.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {name} ({program})")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited early ({status}); last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("cannot create log file {0}")]
    Log(PathBuf, #[source] std::io::Error),
}

pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// What was started, to start it again ([`Process::restart`]).
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
}

impl Process {
    /// Starts `cmd`, with stdout and stderr going to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: Command, log_dir: &Path) -> Result<Process, ProcessError> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| ProcessError::Log(log.clone(), e))?;
        let program = cmd.get_program().to_os_string();
        let args = cmd.get_args().map(OsStr::to_os_string).collect();
        let envs = cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(OsStr::to_os_string)))
            .collect();
        let dir = cmd.get_current_dir().map(Path::to_path_buf);
        let child = start(name, cmd, out, &log)?;
        Ok(Process {
            name: name.into(),
            child,
            log,
            program,
            args,
            envs,
            dir,
        })
    }

    /// Starts the process again, with the same program and arguments (after [`Process::stop`]:
    /// an outage of a peer, for fault tests); its log goes on in the same file.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.stop(Duration::from_secs(5));
        let out = File::options()
            .append(true)
            .open(&self.log)
            .map_err(|e| ProcessError::Log(self.log.clone(), e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        self.child = start(&self.name, cmd, out, &self.log)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails if the process has already exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<(), ProcessError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.display().to_string(),
                tail: tail(&self.log, 30),
            }),
            _ => Ok(()),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Spawns `cmd` with stdin closed and stdout and stderr into `out` (the log file at `log`).
fn start(name: &str, mut cmd: Command, out: File, log: &Path) -> Result<Child, ProcessError> {
    let err = out
        .try_clone()
        .map_err(|e| ProcessError::Log(log.to_path_buf(), e))?;
    // If the test process dies without dropping us (a panic across threads, SIGKILL), the
    // kernel kills the child: no control plane outlives its test.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            name: name.into(),
            program: format!("{:?}", cmd.get_program()),
            source,
        })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
