//! `fetch git` against real repositories: `file://`, and smart HTTP through `git http-backend`
//! (the control-plane harness's server) with basic and token auth.

mod support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use e2e::git_server::{Credentials, GitServer, Repo};
use support::{Volume, mode};

const PROGRAM: &str = "name: prog\nruntime: yaml\noutputs:\n  v: 1\n";

fn server(user: &str, password: &str) -> GitServer {
    GitServer::start(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Credentials {
            username: user.into(),
            password: password.into(),
        },
    )
    .expect("git server")
}

/// Three commits on main; returns their SHAs, oldest first.
fn history(repo: &Repo) -> Vec<String> {
    let a = repo
        .commit(
            &[("app/Pulumi.yaml", PROGRAM), ("README.md", "v1\n")],
            "one",
        )
        .expect("commit");
    let b = repo
        .commit(
            &[
                ("app/index.txt", "two\n"),
                ("run.sh", "#!/bin/sh\n"),
                ("app/lib/deep/mod.txt", "deep\n"),
                // Written as committed (PKO's go-git applies no attributes either).
                (".gitattributes", "*.bat eol=crlf\n"),
                ("app/win.bat", "echo hi\n"),
            ],
            "two",
        )
        .expect("commit");
    let c = repo
        .commit(&[("README.md", "v3\n")], "three")
        .expect("commit");
    vec![a, b, c]
}

fn head_of(dir: &std::path::Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit_count(dir: &std::path::Path) -> usize {
    let out = Command::new("git")
        .args(["rev-list", "--count", "HEAD"])
        .current_dir(dir)
        .output()
        .expect("git rev-list");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn file_url_by_sha_branch_and_tag_with_dir_and_modes() {
    let git = server("u", "p");
    let repo = git.create_repo("local").expect("repo");
    let shas = history(&repo);
    repo.tag("v1").expect("tag");
    let url = format!("file://{}", repo.bare_path().display());

    // An older commit by SHA: exactly that tree, HEAD verified.
    let v = Volume::new();
    v.fetch_git(&url, &shas[1], &[], &["--dir", "app"])
        .assert_code(0);
    assert_eq!(head_of(&v.source()), shas[1]);
    assert_eq!(
        fs::read_to_string(v.source().join("README.md")).expect("readme"),
        "v1\n"
    );
    assert_eq!(
        fs::read_link(v.workspace()).expect("link"),
        v.source().join("app")
    );
    assert_eq!(
        fs::read_to_string(v.workspace().join("Pulumi.yaml")).expect("program"),
        PROGRAM
    );
    // Shared by default: any UID in the pod can write, executables stay executable.
    assert_eq!(mode(&v.source().join("app")), 0o777);
    assert_eq!(mode(&v.source().join("README.md")), 0o666);

    assert_eq!(mode(&v.source().join("app/lib/deep")), 0o777);
    assert_eq!(mode(&v.source().join("app/lib/deep/mod.txt")), 0o666);
    assert_eq!(mode(&v.source().join("run.sh")), 0o777);
    assert_eq!(mode(&v.source()), 0o777);
    assert_eq!(mode(&v.source().join(".git")), 0o777);
    assert_eq!(
        fs::read_to_string(v.source().join("app/win.bat")).expect("bat"),
        "echo hi\n"
    );

    // A branch and a tag resolve to their commits.
    let v = Volume::new();
    v.fetch_git(&url, "main", &[], &[]).assert_code(0);
    assert_eq!(head_of(&v.source()), shas[2]);
    let v = Volume::new();
    v.fetch_git(&url, "v1", &[], &[]).assert_code(0);
    assert_eq!(head_of(&v.source()), shas[2]);

    // --dir must exist in the checkout, and may not escape it.
    let v = Volume::new();
    v.fetch_git(&url, &shas[0], &[], &["--dir", "nope"])
        .assert_code(7)
        .assert_stderr_has("nope");
    v.assert_nothing_left();
    let v = Volume::new();
    v.fetch_git(&url, &shas[0], &[], &["--dir", "../etc"])
        .assert_code(2);
}

#[test]
fn unknown_commit_and_branch_are_not_found_and_leave_nothing() {
    let git = server("u", "p");
    let repo = git.create_repo("unknown").expect("repo");
    history(&repo);
    let url = format!("file://{}", repo.bare_path().display());
    let missing = "0123456789abcdef0123456789abcdef01234567";
    for rev in [missing, "no-such-branch"] {
        let v = Volume::new();
        let run = v.fetch_git(&url, rev, &[], &["--shallow"]);
        run.assert_code(4).assert_stderr_has(rev);
        assert!(
            v.termination_message().contains(rev),
            "{}",
            v.termination_message()
        );
        v.assert_nothing_left();
    }
}

#[test]
fn smart_http_basic_auth_token_and_refusals() {
    let git = server("alice", "correct horse");
    let repo = git.create_repo("private").expect("repo");
    let shas = history(&repo);
    let url = git.url("private");

    let v = Volume::new();
    v.fetch_git(
        &url,
        &shas[2],
        &[("GIT_USERNAME", "alice"), ("GIT_PASSWORD", "correct horse")],
        &[],
    )
    .assert_code(0);
    assert_eq!(head_of(&v.source()), shas[2]);

    // A wrong password: exit 8, the mode named, the secret never shown.
    let v = Volume::new();
    let run = v.fetch_git(
        &url,
        &shas[2],
        &[("GIT_USERNAME", "alice"), ("GIT_PASSWORD", "hunter2-wrong")],
        &[],
    );
    run.assert_code(8)
        .assert_stderr_has("GIT_USERNAME/GIT_PASSWORD");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    assert!(!v.termination_message().contains("hunter2"));
    v.assert_nothing_left();

    // No credentials at all: says how to configure them.
    let v = Volume::new();
    v.fetch_git(&url, &shas[2], &[], &[])
        .assert_code(8)
        .assert_stderr_has("gitAuth");

    // Conflicting credentials are refused before connecting.
    let before = git.requests();
    let v = Volume::new();
    v.fetch_git(
        &url,
        &shas[2],
        &[("GIT_TOKEN", "t"), ("GIT_USERNAME", "alice")],
        &[],
    )
    .assert_code(2)
    .assert_stderr_has("cannot be combined");
    assert_eq!(git.requests(), before, "nothing was sent");

    // A token is basic auth with user `git`.
    let tokened = server("git", "tok-123");
    let repo2 = tokened.create_repo("tok").expect("repo");
    let sha = history(&repo2).pop().expect("sha");
    let v = Volume::new();
    v.fetch_git(&tokened.url("tok"), &sha, &[("GIT_TOKEN", "tok-123")], &[])
        .assert_code(0);
    assert_eq!(head_of(&v.source()), sha);
}

#[test]
fn shallow_fetches_one_commit_or_falls_back_to_the_same_tree() {
    let git = server("u", "p");
    let repo = git.create_repo("shallow").expect("repo");
    let shas = history(&repo);
    let creds = [("GIT_USERNAME", "u"), ("GIT_PASSWORD", "p")];
    let url = git.url("shallow");

    // Default git refuses unadvertised SHAs in a want: the fetch falls back to all refs.
    let full = Volume::new();
    full.fetch_git(&url, &shas[1], &creds, &["--shallow"])
        .assert_code(0);
    assert_eq!(head_of(&full.source()), shas[1]);

    // A server that allows it sends only that commit.
    repo.set_config("uploadpack.allowReachableSHA1InWant", "true")
        .expect("config");
    let shallow = Volume::new();
    shallow
        .fetch_git(&url, &shas[1], &creds, &["--shallow"])
        .assert_code(0);
    assert_eq!(head_of(&shallow.source()), shas[1]);
    assert_eq!(commit_count(&shallow.source()), 1, "depth 1");
    assert!(commit_count(&full.source()) >= 2);

    // The same tree either way.
    let tree = |v: &Volume| {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD^{tree}"])
            .current_dir(v.source())
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(tree(&full), tree(&shallow));
    let diff = Command::new("diff")
        .args(["-r", "--exclude=.git"])
        .arg(full.source())
        .arg(shallow.source())
        .status()
        .expect("diff");
    assert!(diff.success(), "checkouts differ");

    // A branch, shallow.
    let v = Volume::new();
    v.fetch_git(&url, "main", &creds, &["--shallow"])
        .assert_code(0);
    assert_eq!(commit_count(&v.source()), 1);
}

#[test]
fn pod_restart_rerun_reuses_the_checkout_without_fetching() {
    let git = server("u", "p");
    let repo = git.create_repo("rerun").expect("repo");
    let shas = history(&repo);
    let creds = [("GIT_USERNAME", "u"), ("GIT_PASSWORD", "p")];
    let v = Volume::new();
    v.fetch_git(&git.url("rerun"), &shas[2], &creds, &[])
        .assert_code(0);
    fs::write(v.workspace().join("Pulumi.dev.yaml"), "config: {}\n").expect("stack file");
    let before = git.requests();
    v.fetch_git(&git.url("rerun"), &shas[2], &creds, &[])
        .assert_code(0)
        .assert_stderr_has("already checked out");
    assert_eq!(git.requests(), before, "no request on a re-run");
    assert!(
        v.workspace().join("Pulumi.dev.yaml").exists(),
        "the tree is kept as is"
    );

    // A new commit replaces the tree.
    v.fetch_git(&git.url("rerun"), &shas[0], &creds, &[])
        .assert_code(0);
    assert_eq!(head_of(&v.source()), shas[0]);
    assert_eq!(
        v.share_entries(),
        vec![
            ".source.fetched".to_string(),
            "source".into(),
            "workspace".into()
        ]
    );
}

#[test]
fn unreachable_host_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let v = Volume::new();
    v.fetch_git(
        &format!("http://127.0.0.1:{port}/nothing.git"),
        "main",
        &[],
        &["--timeout", "10"],
    )
    .assert_code(3)
    .assert_stderr_has("cannot reach");
    v.assert_nothing_left();
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    let trap = e2e::redirect::OffsiteRedirect::start().expect("servers");
    for creds in [
        &[("GIT_USERNAME", "u"), ("GIT_PASSWORD", "s3cret-pass")][..],
        &[("GIT_TOKEN", "s3cret-token")][..],
    ] {
        let v = Volume::new();
        let run = v.fetch_git(&trap.url, "main", creds, &[]);
        assert_ne!(run.code, 0, "nothing to fetch there: {}", run.stderr);
        assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
        v.assert_nothing_left();
    }
    assert!(
        trap.requests_elsewhere() > 0,
        "the client followed the redirect to {}",
        trap.other_host
    );
    assert_eq!(
        trap.credentials_seen_elsewhere(),
        Vec::<String>::new(),
        "the redirect target ({}) was sent credentials",
        trap.other_host
    );
}
