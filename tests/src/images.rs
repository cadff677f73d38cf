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
/// Debian's static busybox (package busybox-static), the shell of the Pulumi test image.
const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("building the static image binaries failed (exit {code:?}):\n{stderr}")]
    Cargo { code: Option<i32>, stderr: String },
    #[error("`{command}` failed (exit {code:?}):\n{stderr}")]
    Failed {
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
            return Err(ImagesError::Failed {
                command: format!("buildah {}", args.join(" ")),
                code: out.status.code(),
                stderr: tail_text(&String::from_utf8_lossy(&out.stderr), 30),
            });
        }
        Ok(out)
    }

    /// A fresh, empty build context for the image `name`.
    fn context(&self, name: &str) -> Result<PathBuf, ImagesError> {
        let context = self.dir.join("contexts").join(name);
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(&context).map_err(|e| ImagesError::Io(context.clone(), e))?;
        Ok(context)
    }

    /// Builds `dockerfile` (its `target` stage, if given) from `context` and pushes it to
    /// `registry` as `name:tag`; returns the pushed reference.
    pub fn build_and_push(
        &self,
        registry: &Registry,
        dockerfile: &Path,
        target: Option<&str>,
        context: &Path,
        name: &str,
        tag: &str,
    ) -> Result<String, ImagesError> {
        let local = format!("localhost/{name}:{tag}");
        let dockerfile = dockerfile.display().to_string();
        let context = context.display().to_string();
        let mut args = vec!["bud", "--pull=never", "--layers=false", "-f", &dockerfile];
        if let Some(t) = target {
            args.extend(["--target", t]);
        }
        args.extend(["-t", &local, &context]);
        self.run(&args)?;
        let remote = registry.image(name, tag);
        self.run(&[
            "push",
            "--tls-verify=false",
            &local,
            &format!("docker://{remote}"),
        ])?;
        // The registry has the image now; the nodes pull it from there. The local copy (vfs
        // stores every layer as a full directory) and the context would only take disk: a
        // cluster's images held three times over, by several clusters at once, filled a disk.
        self.run(&["rmi", &local])?;
        std::fs::remove_dir_all(&context).map_err(|e| ImagesError::Io(context.into(), e))?;
        Ok(remote)
    }
}

/// The `fetch` image, pushed to `registry`.
pub fn fetch_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    ours(buildah, registry, "fetch", &["fetch"], &[])
}

/// The operator image (`operator`, also as `/manager`, the static `agent` and `fetch`), pushed
/// to `registry`.
pub fn operator_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    // PKO's entrypoint, `/manager`.
    let aliases = [("manager", "operator")];
    ours(
        buildah,
        registry,
        "operator",
        &["operator", "agent", "fetch"],
        &aliases,
    )
}

/// `Dockerfile.<name>`'s `prebuilt` stage from `binaries`, the CA bundle and `aliases`
/// (symlinks, `(alias, binary)`, in the context's `aliases/`: the Dockerfile copies that
/// directory, which keeps them symlinks), tagged `e2e`.
fn ours(
    buildah: &Buildah,
    registry: &Registry,
    name: &str,
    binaries: &[&str],
    aliases: &[(&str, &str)],
) -> Result<String, ImagesError> {
    let bins = static_binaries()?;
    let context = buildah.context(name)?;
    for b in binaries {
        copy(&bins.join(b), &context.join(b))?;
    }
    copy(Path::new(CA_BUNDLE), &context.join("ca-certificates.crt"))?;
    for (alias, binary) in aliases {
        let dir = context.join("aliases");
        std::fs::create_dir_all(&dir).map_err(|e| ImagesError::Io(dir.clone(), e))?;
        std::os::unix::fs::symlink(binary, dir.join(alias))
            .map_err(|e| ImagesError::Io(dir.join(alias), e))?;
    }
    let dockerfile = crate::control_plane::repo_root().join(format!("Dockerfile.{name}"));
    buildah.build_and_push(
        registry,
        &dockerfile,
        Some("prebuilt"),
        &context,
        name,
        "e2e",
    )
}

/// The test nodes' sandbox image (`tests/images/pause`), its binary built by `gcc -static`.
pub fn pause_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    let here = crate::control_plane::repo_root().join("tests/images/pause");
    let context = buildah.context("pause")?;
    let gcc = Command::new("gcc")
        .args(["-static", "-Os", "-Wall", "-Werror", "-o"])
        .arg(context.join("pause"))
        .arg(here.join("pause.c"))
        .output()
        .map_err(|e| ImagesError::Spawn("gcc".into(), e))?;
    if !gcc.status.success() {
        return Err(ImagesError::Failed {
            command: "gcc -static pause.c".into(),
            code: gcc.status.code(),
            stderr: String::from_utf8_lossy(&gcc.stderr).into_owned(),
        });
    }
    buildah.build_and_push(
        registry,
        &here.join("Dockerfile"),
        None,
        &context,
        "pause",
        "e2e",
    )
}

/// A Pulumi workspace image (`tests/images/pulumi`): the CLI and the YAML host from
/// `pulumi_dir` (tests/tools/build.sh), the gate provider (ours, for tests that cut `up` off
/// mid-operation) installed as a plugin, busybox (Debian's static build) as the shell.
pub fn pulumi_image(
    buildah: &Buildah,
    registry: &Registry,
    pulumi_dir: &Path,
) -> Result<String, ImagesError> {
    pulumi_image_with(buildah, registry, pulumi_dir, &[], "pulumi")
}

/// A provider plugin to install in a workspace image's plugin cache.
pub struct Plugin<'a> {
    /// `gate`, `kubernetes`: the binary is `pulumi-resource-<name>`.
    pub name: &'a str,
    /// The version programs pin (`options: version:`), without the `v`.
    pub version: &'a str,
    /// The directory holding the binary.
    pub dir: &'a Path,
}

/// [`pulumi_image`] with the Pulumi Kubernetes provider (`pulumi-resource-kubernetes`, built
/// by tests/tools/build.sh from its Go module) installed too, as image `pulumi-kubernetes`:
/// for programs that manage objects in the test cluster. Its own image because the plugin is
/// 170 MB, which tests that do not use it should not push and pull.
pub fn pulumi_kubernetes_image(
    buildah: &Buildah,
    registry: &Registry,
    pulumi_dir: &Path,
    provider_dir: &Path,
    version: &str,
) -> Result<String, ImagesError> {
    let kubernetes = Plugin {
        name: "kubernetes",
        version,
        dir: provider_dir,
    };
    pulumi_image_with(
        buildah,
        registry,
        pulumi_dir,
        &[kubernetes],
        "pulumi-kubernetes",
    )
}

fn pulumi_image_with(
    buildah: &Buildah,
    registry: &Registry,
    pulumi_dir: &Path,
    extra: &[Plugin],
    image: &str,
) -> Result<String, ImagesError> {
    use std::os::unix::fs::PermissionsExt;
    let here = crate::control_plane::repo_root().join("tests/images/pulumi");
    let context = buildah.context(image)?;
    let root = context.join("rootfs");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ImagesError::Io(p, e)
    };
    for d in ["pulumi/bin", "bin", "etc/ssl/certs", "tmp"] {
        std::fs::create_dir_all(root.join(d)).map_err(io(&root.join(d)))?;
    }
    std::fs::create_dir_all(context.join("home")).map_err(io(&context))?;
    for b in ["pulumi", "pulumi-language-yaml"] {
        copy(&pulumi_dir.join(b), &root.join("pulumi/bin").join(b))?;
    }
    // Providers as installed plugins (what `pulumi plugin install resource NAME VERSION -f
    // ...` makes), so that `pulumi install` finds the version a program pins instead of
    // downloading it.
    let plugins = context.join("home/.pulumi/plugins");
    let gate = Plugin {
        name: "gate",
        version: "0.1.0",
        dir: pulumi_dir,
    };
    for p in std::iter::once(&gate).chain(extra) {
        let installed = plugins.join(format!("resource-{}-v{}", p.name, p.version));
        std::fs::create_dir_all(&installed).map_err(io(&installed))?;
        let binary = format!("pulumi-resource-{}", p.name);
        copy(&p.dir.join(&binary), &installed.join(&binary))?;
        let lock = plugins.join(format!("resource-{}-v{}.lock", p.name, p.version));
        std::fs::write(&lock, "").map_err(io(&lock))?;
    }
    busybox_into(&root)?;
    copy(
        Path::new(CA_BUNDLE),
        &root.join("etc/ssl/certs/ca-certificates.crt"),
    )?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\npulumi:x:1000:1000:pulumi:/home/pulumi:/bin/sh\n",
    )
    .map_err(io(&root))?;
    std::fs::write(root.join("etc/group"), "root:x:0:\npulumi:x:1000:\n").map_err(io(&root))?;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(io(&root.join("tmp")))?;
    buildah.build_and_push(
        registry,
        &here.join("Dockerfile"),
        None,
        &context,
        image,
        "e2e",
    )
}

/// Flux's source-controller (`tests/images/source-controller`) from the binary in `flux_dir`
/// (tests/tools/build.sh, tool flux).
pub fn source_controller_image(
    buildah: &Buildah,
    registry: &Registry,
    flux_dir: &Path,
) -> Result<String, ImagesError> {
    upstream(buildah, registry, "source-controller", flux_dir)
}

/// Flux's kustomize-controller (`tests/images/kustomize-controller`) from the binary in `dir`
/// (tests/tools/build.sh, tool kustomize-controller).
pub fn kustomize_controller_image(
    buildah: &Buildah,
    registry: &Registry,
    dir: &Path,
) -> Result<String, ImagesError> {
    upstream(buildah, registry, "kustomize-controller", dir)
}

/// CoreDNS (`tests/images/coredns`) from the binary in `coredns_dir` (tool coredns).
pub fn coredns_image(
    buildah: &Buildah,
    registry: &Registry,
    coredns_dir: &Path,
) -> Result<String, ImagesError> {
    upstream(buildah, registry, "coredns", coredns_dir)
}

/// `tests/images/<name>` from the upstream binary `<dir>/<name>` and the CA bundle.
fn upstream(
    buildah: &Buildah,
    registry: &Registry,
    name: &str,
    dir: &Path,
) -> Result<String, ImagesError> {
    let here = crate::control_plane::repo_root()
        .join("tests/images")
        .join(name);
    let context = buildah.context(name)?;
    copy(&dir.join(name), &context.join(name))?;
    copy(Path::new(CA_BUNDLE), &context.join("ca-certificates.crt"))?;
    buildah.build_and_push(
        registry,
        &here.join("Dockerfile"),
        None,
        &context,
        name,
        "e2e",
    )
}

/// A small busybox image (`tests/images/busybox`) for checks on the nodes themselves.
pub fn busybox_image(buildah: &Buildah, registry: &Registry) -> Result<String, ImagesError> {
    let here = crate::control_plane::repo_root().join("tests/images/busybox");
    let context = buildah.context("busybox")?;
    let root = context.join("rootfs");
    busybox_into(&root)?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/tmp:/bin/sh
",
    )
    .map_err(|e| ImagesError::Io(root.clone(), e))?;
    buildah.build_and_push(
        registry,
        &here.join("Dockerfile"),
        None,
        &context,
        "busybox",
        "e2e",
    )
}

/// Debian's static busybox as `<root>/bin/busybox`, every applet a link to it (as `busybox
/// --install -s` would make them), and an empty `<root>/etc`.
fn busybox_into(root: &Path) -> Result<(), ImagesError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ImagesError::Io(p, e)
    };
    for d in ["bin", "etc"] {
        std::fs::create_dir_all(root.join(d)).map_err(io(&root.join(d)))?;
    }
    copy(Path::new(BUSYBOX), &root.join("bin/busybox"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| ImagesError::Spawn(BUSYBOX.into(), e))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io(&link))?;
        }
    }
    Ok(())
}

/// Puts `from` into a build context: a hard link where both are on one filesystem (contexts
/// are only read; the tools' binaries are large), a copy otherwise.
fn copy(from: &Path, to: &Path) -> Result<(), ImagesError> {
    std::fs::hard_link(from, to)
        .or_else(|_| std::fs::copy(from, to).map(drop))
        .map_err(|e| ImagesError::Io(from.to_path_buf(), e))
}

fn tail_text(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
