//! The real Pulumi CLI, built by tests/tools/build.sh, runs a provider-free YAML program offline
//! on a `file://` backend: what every workspace pod's main container will do.

use std::path::Path;
use std::process::{Command, Output};

fn pulumi(bin_dir: &Path, home: &Path, workdir: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(bin_dir.join("pulumi"))
        .args(args)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("PULUMI_HOME", home.join(".pulumi"))
        .env(
            "PULUMI_BACKEND_URL",
            format!("file://{}", home.join("state").display()),
        )
        .env("PULUMI_CONFIG_PASSPHRASE", "e2e")
        .env("PULUMI_SKIP_UPDATE_CHECK", "true")
        .env("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
        .env("PULUMI_SKIP_CONFIRMATIONS", "true")
        .output()
        .expect("pulumi runs")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pulumi_up_of_a_yaml_program_on_a_file_backend_offline() {
    let dirs = e2e::tools::dirs(&["pulumi"]).expect("pulumi built");
    let bin = e2e::tools::find(&dirs, "pulumi").expect("pulumi binary");
    let bin_dir = bin.parent().expect("bin dir").to_path_buf();
    assert!(
        bin_dir.join("pulumi-language-yaml").is_file(),
        "YAML host next to pulumi"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let program = tmp.path().join("program");
    std::fs::create_dir_all(home.join("state")).expect("state dir");
    std::fs::create_dir_all(&program).expect("program dir");
    std::fs::write(
        program.join("Pulumi.yaml"),
        "name: e2e-offline\nruntime: yaml\nvariables:\n  who: world\n\
         outputs:\n  greeting: hello ${who}\n  answer: 42\n",
    )
    .expect("program written");

    let version = ok(
        pulumi(&bin_dir, &home, &program, &["version"]),
        "pulumi version",
    );
    assert!(
        version.trim().starts_with("v3."),
        "version is stamped: {version}"
    );

    ok(
        pulumi(
            &bin_dir,
            &home,
            &program,
            &["stack", "init", "dev", "--non-interactive"],
        ),
        "pulumi stack init",
    );
    let up = ok(
        pulumi(
            &bin_dir,
            &home,
            &program,
            &[
                "up",
                "--yes",
                "--non-interactive",
                "--skip-preview",
                "--stack",
                "dev",
            ],
        ),
        "pulumi up",
    );
    assert!(up.contains("greeting"), "{up}");

    let outputs = ok(
        pulumi(
            &bin_dir,
            &home,
            &program,
            &["stack", "output", "--json", "--stack", "dev"],
        ),
        "pulumi stack output",
    );
    let value: serde_json::Value = serde_json::from_str(&outputs).expect("JSON outputs");
    assert_eq!(
        value,
        serde_json::json!({"greeting": "hello world", "answer": 42})
    );

    // The state really is on the file backend.
    let state = home.join("state/.pulumi/stacks/e2e-offline/dev.json");
    assert!(state.is_file(), "{} exists", state.display());
}
