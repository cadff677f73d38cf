//! Where the upstream binaries are: `tests/tools/build.sh` builds them (once; later calls only
//! look them up in its cache) and prints their directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(
        "tests/tools/build.sh {tools} failed (exit {code:?}); run it by hand to see why:\n{stderr}"
    )]
    BuildFailed {
        tools: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("cannot run tests/tools/build.sh")]
    Spawn(#[source] std::io::Error),
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} was not built (looked in {1})")]
    Missing(String, String),
}

/// Directories holding the binaries of `tools` (`k8s`, `etcd`, `flux`, `pulumi`, `pko`).
pub fn dirs(tools: &[&str]) -> Result<Vec<PathBuf>, ToolsError> {
    // One build at a time: tests run in parallel, and two cold builds would fight for the
    // cores and the cache directory.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(tools)
        .output()
        .map_err(ToolsError::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(ToolsError::BuildFailed {
            tools: tools.join(" "),
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("PATH+="))
        .unwrap_or_default();
    Ok(line
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// The version the Pulumi Kubernetes provider reports (`PULUMI_KUBERNETES_VERSION` in
/// tests/tools/build.sh, which stamps it into the binary): what programs pin and the plugin
/// cache names.
pub fn pulumi_kubernetes_version() -> Result<String, ToolsError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh");
    let text = std::fs::read_to_string(&script).map_err(|e| ToolsError::Read(script.clone(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("PULUMI_KUBERNETES_VERSION="))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            ToolsError::Read(
                script.clone(),
                std::io::Error::other("no PULUMI_KUBERNETES_VERSION= line"),
            )
        })
}

/// The path of one binary among `dirs`.
pub fn find(dirs: &[PathBuf], name: &str) -> Result<PathBuf, ToolsError> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ToolsError::Missing(
                name.into(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        })
}
