//! OpenSSH `known_hosts` (the `GIT_SSH_KNOWN_HOSTS` contents): plain and hashed host patterns,
//! `[host]:port` for non-default ports, wildcards and negation, `@revoked` entries.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KnownHostsError {
    #[error("GIT_SSH_KNOWN_HOSTS line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("GIT_SSH_KNOWN_HOSTS is set but holds no host keys")]
    Empty,
}

#[derive(Debug, Clone)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    hosts: Hosts,
    revoked: bool,
    key: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// What the known hosts say of a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// The host is listed, with other keys (or this key is revoked).
    Mismatch,
    /// The host is not listed.
    Unknown,
}

impl KnownHosts {
    pub fn parse(text: &str) -> Result<KnownHosts, KnownHostsError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| KnownHostsError::Line {
                line: i + 1,
                reason,
            };
            let mut fields = line.split_whitespace();
            let mut first = fields.next().ok_or(err("empty"))?;
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    // Certificate authorities need certificate support from libssh2; such a
                    // line cannot vouch for a plain host key.
                    "cert-authority" => continue,
                    _ => return Err(err("unknown marker (use @revoked or @cert-authority)")),
                }
                first = fields
                    .next()
                    .ok_or(err("no host pattern after the marker"))?;
            }
            let _key_type = fields.next().ok_or(err("no key type"))?;
            let key_b64 = fields.next().ok_or(err("no key"))?;
            let key = STANDARD
                .decode(key_b64)
                .map_err(|_| err("the key is not base64"))?;
            let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
                let (salt, hash) = hashed.split_once('|').ok_or(err("malformed hashed host"))?;
                Hosts::Hashed {
                    salt: STANDARD
                        .decode(salt)
                        .map_err(|_| err("malformed hashed host"))?,
                    hash: STANDARD
                        .decode(hash)
                        .map_err(|_| err("malformed hashed host"))?,
                }
            } else {
                Hosts::Patterns(first.split(',').map(str::to_string).collect())
            };
            entries.push(Entry {
                hosts,
                revoked,
                key,
            });
        }
        if entries.is_empty() {
            return Err(KnownHostsError::Empty);
        }
        Ok(KnownHosts { entries })
    }

    /// Checks `key` (the SSH wire-format public key blob) for `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = host_name(host, port);
        let mut listed = false;
        let mut trusted = false;
        for e in self.entries.iter().filter(|e| e.hosts.matches(&name)) {
            if e.key == key {
                if e.revoked {
                    return Verdict::Mismatch;
                }
                trusted = true;
            } else if !e.revoked {
                listed = true;
            }
        }
        if trusted {
            Verdict::Trusted
        } else if listed {
            Verdict::Mismatch
        } else {
            Verdict::Unknown
        }
    }
}

/// How known_hosts names a host: bare for port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if let Some(negated) = p.strip_prefix('!') {
                        if glob(negated, name) {
                            return false;
                        }
                    } else if glob(p, name) {
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

/// `*` and `?` wildcards, case-insensitive as OpenSSH compares host names.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn key(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).expect("test key")
    }

    #[test]
    fn plain_ports_wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\
             github.com,140.82.112.3 ssh-ed25519 {KEY_A}\n\
             [git.example.com]:2222 ssh-ed25519 {KEY_A}\n\
             *.corp,!bad.corp ssh-ed25519 {KEY_B}\n"
        ))
        .expect("parses");
        assert_eq!(kh.check("github.com", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("GitHub.com", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("github.com", 22, &key(KEY_B)), Verdict::Mismatch);
        assert_eq!(kh.check("gitlab.com", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            kh.check("git.example.com", 2222, &key(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            kh.check("git.example.com", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        assert_eq!(kh.check("a.corp", 22, &key(KEY_B)), Verdict::Trusted);
        assert_eq!(kh.check("bad.corp", 22, &key(KEY_B)), Verdict::Unknown);
    }

    #[test]
    fn hashed_hosts_and_revocation() {
        // |1|salt|HMAC-SHA1(salt, "[127.0.0.1]:2022")
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).expect("hmac");
        mac.update(b"[127.0.0.1]:2022");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        let kh = KnownHosts::parse(&line).expect("parses");
        assert_eq!(kh.check("127.0.0.1", 2022, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("127.0.0.1", 2023, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("anything", 22, &key(KEY_B)), Verdict::Mismatch);
    }

    #[test]
    fn bad_input_names_the_line() {
        assert_eq!(
            KnownHosts::parse("# nothing\n").err(),
            Some(KnownHostsError::Empty)
        );
        assert_eq!(
            KnownHosts::parse("host ssh-ed25519 !!!\n").err(),
            Some(KnownHostsError::Line {
                line: 1,
                reason: "the key is not base64"
            })
        );
        assert!(KnownHosts::parse("\nhost ssh-ed25519\n").is_err());
    }
}
