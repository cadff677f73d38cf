//! Our images as a user builds them: the static binaries in `Dockerfile.fetch` and
//! `Dockerfile.operator` (stage `prebuilt`), built by buildah and pushed to a real registry on
//! loopback. What is checked is what the registry serves: the image config (user, entrypoint,
//! platform) and the layers' files (the binaries, the CA bundle, no shell), and that each binary
//! runs with nothing but the image's own files around it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use e2e::images::{self, Buildah};
use e2e::registry::Registry;
use serde_json::Value;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// An image as the registry serves it: its config and its files (path -> content), symlinks
/// (path -> target) and every entry's mode and owner, layers applied in order.
struct Pulled {
    config: Value,
    files: BTreeMap<String, Vec<u8>>,
    links: BTreeMap<String, String>,
    owners: BTreeMap<String, (u32, u64)>,
    entries: Vec<String>,
}

fn get(url: &str, accept: &str) -> Vec<u8> {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .header("Accept", accept)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.bytes().expect("body").to_vec()
}

fn pull(registry: &Registry, reference: &str) -> Pulled {
    let (name, tag) = reference
        .strip_prefix(&format!("{}/", registry.addr()))
        .and_then(|r| r.split_once(':'))
        .expect("a reference in this registry");
    let base = format!("http://{}/v2/{name}", registry.addr());
    let manifest: Value =
        serde_json::from_slice(&get(&format!("{base}/manifests/{tag}"), MANIFEST_TYPES))
            .expect("manifest JSON");
    let blob = |digest: &Value| {
        get(
            &format!("{base}/blobs/{}", digest.as_str().expect("digest")),
            "*/*",
        )
    };
    let config: Value =
        serde_json::from_slice(&blob(&manifest["config"]["digest"])).expect("config JSON");
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut owners = BTreeMap::new();
    let mut entries = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let data = blob(&layer["digest"]);
        let media = layer["mediaType"].as_str().unwrap_or("");
        let reader: Box<dyn Read> = if media.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(&data[..]))
        } else {
            Box::new(&data[..])
        };
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().expect("layer is a tar") {
            let mut entry = entry.expect("entry");
            let path = entry
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            entries.push(path.clone());
            let header = entry.header();
            owners.insert(
                path.trim_end_matches('/').to_string(),
                (header.mode().expect("mode"), header.uid().expect("uid")),
            );
            if header.entry_type().is_symlink() {
                let target = entry.link_name().expect("link").expect("a target");
                links.insert(path.clone(), target.to_string_lossy().into_owned());
            } else if entry.header().entry_type().is_file() {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).expect("content");
                files.insert(path, content);
            }
        }
    }
    Pulled {
        config,
        files,
        links,
        owners,
        entries,
    }
}

/// True when the ELF file asks for no program interpreter (no dynamic loader): static.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert!(bytes.starts_with(b"\x7fELF\x02"), "a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) != 3 // PT_INTERP
    })
}

/// Writes the image's files into `root` and runs `argv` there under bubblewrap, with nothing
/// else of the host's file system visible.
fn run_in(image: &Pulled, root: &Path, argv: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    for (path, content) in &image.files {
        let at = root.join(path);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("dir");
        std::fs::write(&at, content).expect("file");
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).expect("mode");
    }
    for (path, target) in &image.links {
        let at = root.join(path);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("dir");
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(target, &at).expect("symlink");
    }
    let mut cmd = std::process::Command::new("bwrap");
    cmd.arg("--bind").arg(root).arg("/");
    cmd.args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-all",
    ]);
    for kv in image.config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some((k, v)) = kv.as_str().and_then(|kv| kv.split_once('=')) {
            cmd.args(["--setenv", k, v]);
        }
    }
    cmd.arg("--").args(argv).output().expect("bwrap")
}

#[test]
fn our_images_hold_static_binaries_and_a_ca_bundle_and_no_shell() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = Registry::start(dir.path()).expect("registry");
    let buildah = Buildah::new(dir.path()).expect("buildah");
    let fetch = images::fetch_image(&buildah, &registry).expect("fetch image");
    let operator = images::operator_image(&buildah, &registry).expect("operator image");
    assert_eq!(fetch, registry.image("fetch", "e2e"));

    for (reference, entrypoint, binaries, aliases) in [
        (&fetch, "/fetch", &["fetch"][..], &[][..]),
        // One image serves what PKO's does: the manager (as PKO's `/manager` too), the agent
        // and fetch (when FETCH_IMAGE is not set).
        (
            &operator,
            "/operator",
            &["operator", "agent", "fetch"][..],
            &[("manager", "operator")][..],
        ),
    ] {
        let image = pull(&registry, reference);
        let c = &image.config;
        assert_eq!(c["os"], "linux", "{reference}");
        assert_eq!(c["architecture"], "amd64", "{reference}");
        assert_eq!(c["config"]["User"], "65532:65532", "{reference}: non-root");
        assert_eq!(
            c["config"]["Entrypoint"],
            serde_json::json!([entrypoint]),
            "{reference}: exec-form entrypoint"
        );
        let ca = image
            .files
            .get("etc/ssl/certs/ca-certificates.crt")
            .unwrap_or_else(|| panic!("{reference} has the CA bundle: {:?}", image.entries));
        assert!(
            String::from_utf8_lossy(ca).contains("BEGIN CERTIFICATE"),
            "a real CA bundle"
        );
        let mut expected: Vec<&str> = binaries.to_vec();
        expected.push("etc/ssl/certs/ca-certificates.crt");
        let mut files: Vec<&str> = image.files.keys().map(String::as_str).collect();
        expected.sort_unstable();
        files.sort_unstable();
        assert_eq!(
            files, expected,
            "{reference}: the binaries and the CA bundle, nothing else (no shell, no libc)"
        );
        assert!(
            !image
                .entries
                .iter()
                .any(|e| e.starts_with("bin") || e.ends_with("/sh")),
            "{reference}: no shell: {:?}",
            image.entries
        );
        for bin in binaries {
            assert!(
                is_static_elf(&image.files[*bin]),
                "{reference}: /{bin} needs no dynamic loader"
            );
        }
        // Each binary runs where the image's files are all there is (the agent is copied into
        // users' images, whatever libc they have or lack).
        let root = dir.path().join(format!("rootfs-{}", binaries[0]));
        let links: Vec<(&str, &str)> = image
            .links
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(links, aliases, "{reference}: its symlinks");
        for bin in binaries.iter().chain(aliases.iter().map(|(a, _)| a)) {
            let path = format!("/{bin}");
            let argv = if *bin == "agent" {
                [path.as_str(), "version"]
            } else {
                [path.as_str(), "--version"]
            };
            let out = run_in(&image, &root, &argv);
            assert!(
                out.status.success(),
                "{reference}: {argv:?} runs alone: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_test_images_are_shaped_like_the_ones_they_stand_for() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = Registry::start(dir.path()).expect("registry");
    let buildah = Buildah::new(dir.path()).expect("buildah");

    // pause: one static binary that exits at once on SIGTERM, as registry.k8s.io/pause.
    let pause = pull(
        &registry,
        &images::pause_image(&buildah, &registry).expect("pause image"),
    );
    assert_eq!(pause.config["config"]["User"], "65535:65535");
    assert_eq!(
        pause.config["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    assert_eq!(pause.files.keys().collect::<Vec<_>>(), ["pause"]);
    assert!(is_static_elf(&pause.files["pause"]));
    let bin = dir.path().join("pause-bin");
    std::fs::write(&bin, &pause.files["pause"]).expect("write");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("mode");
    let mut child = std::process::Command::new(&bin)
        .spawn()
        .expect("pause runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "pause keeps running"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pause ends on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");

    // pulumi: the CLI and YAML host, a shell, user 1000, a writable /tmp and home.
    let pulumi_dir = e2e::cluster::tool_dir("pulumi", "pulumi").expect("pulumi built");
    let reference = images::pulumi_image(&buildah, &registry, &pulumi_dir).expect("pulumi image");
    let image = pull(&registry, &reference);
    let c = &image.config["config"];
    assert_eq!(c["User"], "1000:1000");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"PATH=/pulumi/bin:/bin"), "{env:?}");
    assert!(env.contains(&"HOME=/home/pulumi"), "{env:?}");
    for bin in [
        "pulumi/bin/pulumi",
        "pulumi/bin/pulumi-language-yaml",
        "bin/busybox",
    ] {
        assert!(is_static_elf(&image.files[bin]), "{bin} is static");
    }
    assert_eq!(
        image.links.get("bin/sh").map(String::as_str),
        Some("busybox")
    );
    assert_eq!(
        image.owners.get("tmp").map(|(mode, _)| mode & 0o7777),
        Some(0o1777),
        "/tmp is writable by everyone, sticky"
    );
    assert_eq!(
        image.owners.get("home/pulumi").map(|(_, uid)| *uid),
        Some(1000),
        "the home directory belongs to the user"
    );
    assert!(
        String::from_utf8_lossy(&image.files["etc/passwd"]).contains("pulumi:x:1000:1000"),
        "user 1000 has a name"
    );
    let out = run_in(
        &image,
        &dir.path().join("rootfs-pulumi"),
        &[
            "/bin/sh",
            "-c",
            "pulumi version && pulumi-language-yaml --help >/dev/null 2>&1; echo shell-ok",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("v3.259.0") && stdout.contains("shell-ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
