//! Checks that tie the repository's parts together: the image builds what the crate produces,
//! and the README's set-up commands are what CI runs.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The `[[bin]]` names a crate's manifest declares.
fn bin_names(manifest: &str) -> Vec<String> {
    let doc: toml::Table = read(manifest).parse().unwrap();
    doc.get("bin")
        .and_then(|b| b.as_array())
        .map(|bins| {
            bins.iter()
                .filter_map(|b| b.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_fetch_image_copies_the_binary_the_crate_builds_and_runs_it_without_a_shell() {
    let bins = bin_names("fetch/Cargo.toml");
    assert_eq!(
        bins,
        vec!["fetch"],
        "fetch/Cargo.toml declares the fetch binary"
    );
    let docker = read("Dockerfile.fetch");

    let build = docker
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build step");
    assert!(
        build.contains("-p fetch") && build.contains("--bin fetch"),
        "{build}"
    );
    let target = build
        .split_whitespace()
        .skip_while(|w| *w != "--target")
        .nth(1)
        .expect("an explicit --target for a static build");
    assert!(target.ends_with("-musl"), "static (musl) target: {target}");

    let stages: Vec<&str> = docker.split("\nFROM ").collect();
    let last = stages.last().unwrap();
    assert!(last.starts_with("scratch"), "final stage is FROM scratch");
    assert!(
        last.contains(&format!("/src/target/{target}/release/fetch /fetch")),
        "final stage copies the built binary:\n{last}"
    );
    assert!(
        last.contains("ca-certificates.crt"),
        "CA certificates present"
    );
    assert!(last.contains("USER 65532:65532"), "non-root");
    assert!(
        last.contains("ENTRYPOINT [\"/fetch\"]"),
        "exec-form entrypoint"
    );
    assert!(
        !last.contains("RUN "),
        "no shell in the final image to RUN with"
    );
}

#[test]
fn the_operator_image_holds_the_manager_the_static_agent_and_fetch_and_no_shell() {
    let bins = bin_names("operator/Cargo.toml");
    for b in ["operator", "agent"] {
        assert!(
            bins.iter().any(|n| n == b),
            "operator/Cargo.toml declares {b}: {bins:?}"
        );
    }
    let docker = read("Dockerfile.operator");
    let build = docker
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build step");
    assert!(
        build.contains("-p operator")
            && build.contains("--bin operator")
            && build.contains("--bin agent")
            && build.contains("-p fetch --bin fetch"),
        "{build}"
    );
    let target = build
        .split_whitespace()
        .skip_while(|w| *w != "--target")
        .nth(1)
        .expect("an explicit --target");
    assert!(
        target.ends_with("-musl"),
        "the agent runs inside users' images: static (musl) target, got {target}"
    );
    let stages: Vec<&str> = docker.split("\nFROM ").collect();
    let last = stages.last().unwrap();
    assert!(last.starts_with("scratch"), "final stage is FROM scratch");
    // fetch too: the workspace pods' fetch container runs from this image by default.
    for (bin, at) in [
        ("operator", "/operator"),
        ("agent", "/agent"),
        ("fetch", "/fetch"),
    ] {
        assert!(
            last.contains(&format!("/src/target/{target}/release/{bin} {at}")),
            "final stage copies {bin} to {at}:\n{last}"
        );
    }
    assert!(
        last.contains("COPY --from=build /aliases/ /"),
        "PKO's /manager, a symlink made in the build stage:\n{last}"
    );
    assert!(last.contains("USER 65532:65532"), "non-root");
    assert!(
        last.contains("ENTRYPOINT [\"/operator\"]"),
        "exec-form entrypoint"
    );
    assert!(!last.contains("RUN "), "no shell in the final image");
    // The workspace pod's bootstrap container runs the agent by this path (no `cp`).
    let desired = read("operator/src/controller/workspace/desired.rs");
    assert!(desired.contains(r#""command": ["/agent", "bootstrap", pod::AGENT_PATH]"#));
}

#[test]
fn the_readme_shows_two_set_up_commands_and_ci_runs_the_test_one() {
    let readme = read("README.md");
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a sh block under Quick start");
    let commands: Vec<&str> = quick
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, vec!["bash scripts/demo.sh", "bash .ci/run"]);
    assert!(root().join("scripts/demo.sh").is_file());
    let ci = read(".ci/run");
    assert!(
        ci.contains("cargo test --workspace"),
        ".ci/run runs the tests"
    );
}

#[test]
fn every_exit_code_of_fetch_is_documented() {
    let readme = read("README.md");
    for code in 0..=8 {
        assert!(
            readme.contains(&format!("\n| {code} |")),
            "README documents exit code {code}"
        );
    }
}

/// The go.sum hash build.sh pins for the flux2 module (Flux's NetworkPolicies).
fn pinned_flux2_sum() -> String {
    read("tests/tools/build.sh")
        .lines()
        .find_map(|l| l.strip_prefix("FLUX2_SUM="))
        .expect("build.sh pins FLUX2_SUM")
        .to_string()
}

/// A directory of stand-ins for `go` (and optionally `mv`) to put first on PATH, so that
/// build.sh's own logic runs without building anything. `go build` exits with `build_exit`;
/// `go list -m -f {{.Dir}}` names a module directory holding one CRD and the kustomize
/// directories source-controller ships; `go mod download -json` describes that directory as
/// the flux2 module (its `manifests/policies`) with go.sum hash `flux2_sum`; the rest succeed.
fn stand_ins_with(build_exit: u8, failing_mv: bool, flux2_sum: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module");
    fs::create_dir_all(module.join("config/crd/bases")).unwrap();
    fs::write(
        module.join("config/crd/bases/x.yaml"),
        "kind: CustomResourceDefinition\n",
    )
    .unwrap();
    for d in ["rbac", "manager", "default"] {
        fs::create_dir_all(module.join("config").join(d)).unwrap();
        fs::write(module.join("config").join(d).join("kustomization.yaml"), "").unwrap();
    }
    fs::create_dir_all(module.join("manifests/policies")).unwrap();
    fs::write(
        module.join("manifests/policies/allow-egress.yaml"),
        "kind: NetworkPolicy\n",
    )
    .unwrap();
    let go = format!(
        "#!/bin/sh\ncase \"$1\" in\n  build) exit {build_exit} ;;\n  list) echo '{m}' ;;\n  \
         mod) printf '{{\\n\\t\"Dir\": \"{m}\",\\n\\t\"Sum\": \"{flux2_sum}\",\\n}}\\n' ;;\nesac\nexit 0\n",
        m = module.display()
    );
    let mut scripts = vec![("go", go)];
    if failing_mv {
        scripts.push((
            "mv",
            "#!/bin/sh\necho 'mv: cannot move' >&2\nexit 1\n".into(),
        ));
    }
    for (name, body) in scripts {
        let path = dir.path().join(name);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Runs build.sh with `args`, the stand-ins first on PATH and an empty cache.
fn build_script(
    stand_ins: &Path,
    cache: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root().join("tests/tools/build.sh"))
        .args(args)
        .env("E2E_TOOLS_DIR", cache)
        .env(
            "PATH",
            format!(
                "{}:{}",
                stand_ins.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("PKO_SRC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stamps(cache: &Path) -> Vec<PathBuf> {
    walk(cache)
        .into_iter()
        .filter(|p| p.ends_with(".complete"))
        .collect()
}

/// The script failed, handed out no tool directory and stamped nothing; returns its stderr.
fn assert_failed_and_uncached(out: &std::process::Output, cache: &Path) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the script fails: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("PATH+="),
        "no tool directory is handed out"
    );
    assert!(stamps(cache).is_empty(), "nothing is stamped complete");
    stderr
}

fn stand_ins(build_exit: u8, failing_mv: bool) -> tempfile::TempDir {
    stand_ins_with(build_exit, failing_mv, &pinned_flux2_sum())
}

/// The flux build with stand-ins that all work succeeds into `cache`: a failure seen before it
/// with other stand-ins was the build's, not the harness's.
fn builds_with_working_stand_ins(cache: &Path) {
    let ok = stand_ins(0, false);
    let out = build_script(ok.path(), cache, &["flux"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flux_policies_are_taken_only_from_the_pinned_flux2_module() {
    let fakes = stand_ins_with(0, false, "h1:somethingElse=");
    let cache = tempfile::tempdir().unwrap();
    let out = build_script(fakes.path(), cache.path(), &["flux"], &[]);
    let stderr = assert_failed_and_uncached(&out, cache.path());
    assert!(
        stderr.contains("h1:somethingElse=") && stderr.contains("refusing it"),
        "{stderr}"
    );

    builds_with_working_stand_ins(cache.path());
    let policies: Vec<PathBuf> = walk(cache.path())
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("policies")))
        .collect();
    assert_eq!(policies.len(), 1, "{policies:?}");
}

#[test]
fn a_tool_build_that_fails_midway_fails_the_script_and_is_never_cached() {
    // build_flux runs `go build`, then `go list`, mkdir and cp: with the first failing and the
    // others succeeding, only `set -e` inside the build stops the function.
    let fakes = stand_ins(1, false);
    let cache = tempfile::tempdir().unwrap();
    let out = build_script(fakes.path(), cache.path(), &["flux"], &[]);
    let stderr = assert_failed_and_uncached(&out, cache.path());
    assert!(
        stderr.contains("flux") && stderr.contains("BUILD FAILED"),
        "{stderr}"
    );

    // The same stand-ins with a working `go build`: the script's logic does cache it, so the
    // failure above is the build's, not the harness's.
    builds_with_working_stand_ins(cache.path());
    assert_eq!(stamps(cache.path()).len(), 1);
}

#[test]
fn a_failed_move_into_the_cache_fails_the_script() {
    let fakes = stand_ins(0, true);
    let cache = tempfile::tempdir().unwrap();
    let out = build_script(fakes.path(), cache.path(), &["flux"], &[]);
    let stderr = assert_failed_and_uncached(&out, cache.path());
    assert!(stderr.contains("cannot move the build"), "{stderr}");
}

#[test]
fn pko_builds_from_different_sources_never_share_a_cache_entry() {
    let fakes = stand_ins(0, false);
    let cache = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (src.path().join("a"), src.path().join("b"));
    for (dir, body) in [(&a, "module a\n"), (&b, "module b\n")] {
        fs::create_dir_all(dir.join("agent")).unwrap();
        fs::write(dir.join("go.mod"), body).unwrap();
    }
    let archive = src.path().join("pko.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&a)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let key = |from: &Path| {
        let out = build_script(
            fakes.path(),
            cache.path(),
            &["--dir", "pko"],
            &[("PKO_SRC", from)],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (ka, kb, karchive) = (key(&a), key(&b), key(&archive));
    assert_ne!(ka, kb, "two trees");
    assert_ne!(ka, karchive, "a tree and an archive");
    assert_eq!(ka, key(&a), "the same tree, the same entry");

    let out = build_script(
        fakes.path(),
        cache.path(),
        &["pko"],
        &[("PKO_SRC", &src.path().join("no-such-source"))],
    );
    let stderr = assert_failed_and_uncached(&out, cache.path());
    assert!(
        stderr.contains("PKO_SRC") && stderr.contains("neither a directory nor a file"),
        "{stderr}"
    );
}

#[test]
fn the_tool_script_assumes_no_path_outside_the_repository_and_shared() {
    let script = read("tests/tools/build.sh");
    for forbidden in ["/work/", ".mirror", "PKO_GIT_DIR"] {
        assert!(!script.contains(forbidden), "build.sh mentions {forbidden}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
