//! Our images, built as a user builds them: the static binaries `scripts/image-binaries.sh`
//! builds (profile `image`, glibc linked statically), put into `Dockerfile.fetch` and `Dockerfile.operator`'s `prebuilt`
//! stage by `buildah bud --pull=never`, and pushed to a loopback [`Registry`].
//!
//! The binaries are built once per test process (cargo does nothing when they are up to date;
//! `.ci/run` builds them in a phase of their own first). buildah keeps its storage (the `vfs`
//! driver: plain directories, no mounts) in the caller's directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::registry::Registry;

/// The CA bundle put into the images (Debian's, as the Dockerfiles' build stage has it).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("building the static image binaries failed (exit {code:?}):\n{stderr}")]
    Cargo { code: Option<i32>, stderr: String },
    #[error("`{command}` failed (exit {code:?}):\n{stderr}")]
    Buildah {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("cannot prepare {0}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// The directory holding `fetch`, `operator` and `agent`, built static.
pub fn static_binaries() -> Result<PathBuf, ImagesError> {
    // One build at a time, and only one per process: cargo's own lock would serialise them
    // anyway, but a second call should not even wait for cargo to say "fresh".
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let script = crate::control_plane::repo_root().join("scripts/image-binaries.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| ImagesError::Spawn(script.display().to_string(), e))?;
    if !out.status.success() {
        return Err(ImagesError::Cargo {
            code: out.status.code(),
            stderr: tail_text(&String::from_utf8_lossy(&out.stderr), 40),
        });
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .unwrap_or_default();
    *built = Some(dir.clone());
    Ok(dir)
}

/// buildah with its storage under one directory.
pub struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    pub fn new(dir: &Path) -> Result<Buildah, ImagesError> {
        let dir = dir.join("buildah");
        for d in ["root", "runroot", "contexts"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| ImagesError::Io(dir.clone(), e))?;
        }
        Ok(Buildah { dir })
    }

    fn run(&self, args: &[&str]) -> Result<Output, ImagesError> {
        let out = Command::new("buildah")
            .args(["--storage-driver", "vfs", "--root"])
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(args)
            .output()
            .map_err(|e| ImagesError::Spawn("buildah".into(), e))?;
        if !out.status.success() {
            return Err(ImagesError::Buildah {
                command: format!("buildah {}", args.join(" ")),
                code: out.status.code(),
                stderr: tail_text(&String::from_utf8_lossy(&out.stderr), 30),
            });
        }
        Ok(out)
    }

    /// Builds `dockerfile`'s `prebuilt` stage from a context holding `files` (source path,
    /// name in the context) and pushes it to `registry` as `name:tag`; returns the pushed
    /// reference.
    pub fn build_and_push(
        &self,
        registry: &Registry,
        dockerfile: &Path,
        files: &[(PathBuf, &str)],
        name: &str,
        tag: &str,
    ) -> Result<String, ImagesError> {
        let context = self.dir.join("contexts").join(name);
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(&context).map_err(|e| ImagesError::Io(context.clone(), e))?;
        for (from, to) in files {
            std::fs::copy(from, context.join(to)).map_err(|e| ImagesError::Io(from.clone(), e))?;
        }
        let local = format!("localhost/{name}:{tag}");
        let dockerfile = dockerfile.display().to_string();
        let context = context.display().to_string();
        self.run(&[
            "bud",
            "--pull=never",
            "--target",
            "prebuilt",
            "--layers=false",
            "-f",
            &dockerfile,
            "-t",
            &local,
            &context,
        ])?;
        let remote = registry.image(name, tag);
        self.run(&[
            "push",
            "--tls-verify=false",
            &local,
            &format!("docker://{remote}"),
        ])?;
        Ok(remote)
    }
}

/// The `fetch` image, pushed to `registry`.
pub fn fetch_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    ours(buildah, registry, "fetch", &["fetch"])
}

/// The operator image (`operator` and the static `agent`), pushed to `registry`.
pub fn operator_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    ours(buildah, registry, "operator", &["operator", "agent"])
}

/// `Dockerfile.<name>`'s `prebuilt` stage from `binaries` and the CA bundle, tagged `e2e`.
fn ours(
    buildah: &Buildah,
    registry: &Registry,
    name: &str,
    binaries: &[&str],
) -> Result<String, ImagesError> {
    let bins = static_binaries()?;
    let mut files: Vec<(PathBuf, &str)> = binaries.iter().map(|b| (bins.join(b), *b)).collect();
    files.push((PathBuf::from(CA_BUNDLE), "ca-certificates.crt"));
    let dockerfile = crate::control_plane::repo_root().join(format!("Dockerfile.{name}"));
    buildah.build_and_push(registry, &dockerfile, &files, name, "e2e")
}

fn tail_text(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
