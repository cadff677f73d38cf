//! The operator's own look at a Stack's git repository (`ls-remote`, which picks the commit that
//! gets deployed), against real servers on loopback: an OpenSSH server whose host key the Stack
//! pins or does not, and an HTTP endpoint that redirects to another host.

use std::net::{IpAddr, Ipv4Addr};

use e2e::git_server::{Credentials, GitServer};
use e2e::sshd::{Sshd, keygen};
use operator::controller::stack::git::{Creds, GitSourceError, ls_remote};

struct Fixture {
    sshd: Sshd,
    _git: GitServer,
    url: String,
    sha: String,
    key: String,
    _keys: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, key_pub) = keygen(&keys.path().join("id"), "");
    let sshd = Sshd::start(&[&key_pub]);
    let git = GitServer::start(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    )
    .expect("git server");
    let repo = git.create_repo("pinned").expect("repo");
    let sha = repo
        .commit(&[("Pulumi.yaml", "name: p\nruntime: yaml\n")], "c")
        .expect("commit");
    Fixture {
        url: sshd.url(repo.bare_path()),
        sshd,
        _git: git,
        sha,
        key,
        _keys: keys,
    }
}

fn ssh(f: &Fixture, known_hosts: Option<String>) -> Creds {
    Creds::Ssh {
        key: f.key.clone(),
        passphrase: None,
        known_hosts,
    }
}

#[test]
fn a_pinned_host_key_is_checked_where_the_commit_is_chosen() {
    let f = fixture();
    assert_eq!(
        ls_remote(&f.url, &ssh(&f, Some(f.sshd.known_hosts())), "main").as_deref(),
        Ok(f.sha.as_str()),
        "the pinned key matches"
    );
    assert_eq!(
        ls_remote(&f.url, &ssh(&f, None), "main").as_deref(),
        Ok(f.sha.as_str()),
        "no pin: any key is accepted, as PKO does"
    );

    // Someone in the middle: the server presents a key other than the pinned one.
    let other = tempfile::tempdir().expect("tempdir");
    let (_, other_pub) = keygen(&other.path().join("k"), "");
    let other_key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let wrong = format!("[127.0.0.1]:{} {}\n", f.sshd.port, other_key.join(" "));
    match ls_remote(&f.url, &ssh(&f, Some(wrong)), "main") {
        Err(GitSourceError::Spec(m)) => {
            assert!(m.contains("does not match"), "{m}");
            assert!(m.contains("spec.gitAuth.sshAuth.knownHosts"), "{m}");
        }
        other => panic!("a mismatched host key must be refused: {other:?}"),
    }
    let elsewhere = format!("[example.com]:22 {}\n", other_key.join(" "));
    match ls_remote(&f.url, &ssh(&f, Some(elsewhere)), "main") {
        Err(GitSourceError::Spec(m)) => assert!(m.contains("is not in"), "{m}"),
        other => panic!("an unlisted host must be refused: {other:?}"),
    }
    match ls_remote(&f.url, &ssh(&f, Some("garbage line".into())), "main") {
        Err(GitSourceError::Spec(m)) => {
            assert!(m.starts_with("spec.gitAuth.sshAuth.knownHosts"), "{m}")
        }
        other => panic!("unparsable known hosts must be refused: {other:?}"),
    }
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    let trap = e2e::redirect::OffsiteRedirect::start().expect("servers");
    let creds = Creds::Basic {
        username: "u".into(),
        password: "s3cret".into(),
    };
    let result = ls_remote(&trap.url, &creds, "main");
    assert!(result.is_err(), "{result:?}");
    assert!(!format!("{result:?}").contains("s3cret"));
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
