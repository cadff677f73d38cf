//! GitHub App credentials: `e2e::github`'s stand-in for GitHub's API (no real one can run
//! here) checks what GitHub checks and returns an installation token that the git server then
//! accepts as the password of `x-access-token`.

mod support;

use e2e::github::{APP_ID, AppFixture, INSTALLATION};
use support::Volume;

#[test]
fn github_app_token_is_exchanged_and_used() {
    let AppFixture {
        pem,
        other_pem,
        github,
        git,
        sha,
        ..
    } = AppFixture::start(&[("Pulumi.yaml", "name: a\nruntime: yaml\n")]);
    let ca = github.ca_path().display().to_string();
    let api = github.url();
    let env = |key: &str| {
        vec![
            ("GIT_GITHUB_APP_ID", APP_ID.to_string()),
            ("GIT_GITHUB_APP_INSTALLATION_ID", INSTALLATION.to_string()),
            ("GIT_GITHUB_APP_PRIVATE_KEY", key.to_string()),
            ("GITHUB_API_URL", api.clone()),
            ("SSL_CERT_FILE", ca.clone()),
        ]
    };
    let as_refs = |v: &Vec<(&'static str, String)>| -> Vec<(&'static str, String)> { v.clone() };

    let v = Volume::new();
    let vars = as_refs(&env(&pem));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    v.fetch_git(&git.url("app-repo"), &sha, &pairs, &[])
        .assert_code(0);
    assert!(v.workspace().join("Pulumi.yaml").is_file());
    assert_eq!(github.accepted(), 1);

    // A key that is not the App's: GitHub refuses, exit 8, its message shown, no key.
    let v = Volume::new();
    let vars = as_refs(&env(&other_pem));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = v.fetch_git(&git.url("app-repo"), &sha, &pairs, &[]);
    run.assert_code(8)
        .assert_stderr_has("could not be decoded")
        .assert_stderr_has("GIT_GITHUB_APP_ID");
    assert!(!run.stderr.contains("PRIVATE KEY"), "{}", run.stderr);
    assert_eq!(github.rejected(), 1);
    v.assert_nothing_left();

    // Not an RSA key at all: refused before any request.
    let v = Volume::new();
    let vars = as_refs(&env(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    v.fetch_git(&git.url("app-repo"), &sha, &pairs, &[])
        .assert_code(2)
        .assert_stderr_has("GIT_GITHUB_APP_PRIVATE_KEY");
    assert_eq!(github.accepted() + github.rejected(), 2);
}
