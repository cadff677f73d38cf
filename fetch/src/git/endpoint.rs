//! Where a git URL points: scheme, host and port (to tell whether credentials may go to a host
//! libgit2 asks for), and the URL as it may be shown.

use reqwest::Url;

use super::GitError;

/// Scheme, host and port of a git URL (scp-like `user@host:path` is ssh on port 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The URL with any password replaced, for messages.
    pub shown: String,
}

pub fn endpoint(url: &str) -> Result<Endpoint, GitError> {
    let bad = || GitError::BadUrl(redact(url));
    if url.contains("://")
        && let Ok(u) = Url::parse(url)
    {
        let scheme = u.scheme().to_string();
        let port = u.port_or_known_default().unwrap_or(match scheme.as_str() {
            "ssh" => 22,
            _ => 0,
        });
        if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "file") {
            return Err(bad());
        }
        if scheme != "file" && u.host_str().is_none_or(str::is_empty) {
            return Err(bad());
        }
        return Ok(Endpoint {
            host: u
                .host_str()
                .unwrap_or("")
                .trim_matches(['[', ']'])
                .to_string(),
            scheme,
            port,
            shown: redact(url),
        });
    }
    // scp-like: [user@]host:path, no scheme; a ':' before any '/'.
    let (before, _path) = url.split_once(':').ok_or_else(bad)?;
    if before.is_empty() || before.contains('/') {
        return Err(bad());
    }
    let host = before.rsplit('@').next().unwrap_or(before);
    Ok(Endpoint {
        scheme: "ssh".into(),
        host: host.to_string(),
        port: 22,
        shown: url.to_string(),
    })
}

/// Whether libgit2 may send credentials to `asked` (the URL its credential callback names): only
/// to the host and port the source is configured with. libgit2 follows a redirect on the first
/// request, and a redirect to another host must not take the Stack's credentials with it.
pub fn credentials_go_to(configured: &Endpoint, asked: &str) -> bool {
    match endpoint(asked) {
        Ok(e) => e.host.eq_ignore_ascii_case(&configured.host) && e.port == configured.port,
        Err(_) => false,
    }
}

/// The URL with its password (or token) replaced by `***`.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(mut u) if !u.username().is_empty() && u.scheme() != "ssh" => {
            // A lone user part of an https URL is often a token.
            let _ = u.set_username("***");
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = endpoint("https://user:s3cret@git.example.com/org/repo.git").expect("https");
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("https", "git.example.com", 443)
        );
        assert!(!e.shown.contains("s3cret"), "{}", e.shown);
        let e = endpoint("ssh://git@127.0.0.1:2222/srv/repo.git").expect("ssh");
        assert_eq!((e.scheme.as_str(), e.port), ("ssh", 2222));
        let e = endpoint("git@github.com:org/repo.git").expect("scp-like");
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("ssh", "github.com", 22)
        );
        assert_eq!(endpoint("file:///srv/repo").expect("file").scheme, "file");
        assert!(endpoint("ftp://host/repo").is_err());
        assert!(endpoint("/just/a/path").is_err());
    }

    #[test]
    fn credentials_only_go_to_the_configured_host_and_port() {
        let ep = endpoint("https://git.example.com/org/repo.git").expect("https");
        assert!(credentials_go_to(
            &ep,
            "https://git.example.com/org/repo.git/info/refs"
        ));
        assert!(credentials_go_to(&ep, "https://GIT.example.com:443/other"));
        assert!(!credentials_go_to(
            &ep,
            "https://evil.example.net/org/repo.git"
        ));
        assert!(!credentials_go_to(
            &ep,
            "https://git.example.com:8443/org/repo.git"
        ));
        assert!(!credentials_go_to(&ep, "not a url"));
        let ssh = endpoint("git@github.com:org/repo.git").expect("scp-like");
        assert!(credentials_go_to(&ssh, "ssh://git@github.com/org/repo.git"));
    }
}
