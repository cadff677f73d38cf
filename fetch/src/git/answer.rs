//! What to answer when a git server asks who we are. The fetch container and the operator's
//! `ls-remote` answer alike, so the rules are written once: credentials go only to the
//! configured host and port, a connection answers a few times at most, and what is offered
//! must be of a kind the server accepts.

use std::cell::Cell;
use std::fmt;

use git2::{Cred, CredentialType};

use super::{Endpoint, credentials_go_to};

/// What a connection can offer when the server asks.
#[derive(Clone, PartialEq, Eq)]
pub enum Offer {
    None,
    Basic {
        username: String,
        password: String,
    },
    SshKey {
        key: String,
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Offer::None => "None",
            Offer::Basic { .. } => "Basic",
            Offer::SshKey { .. } => "SshKey",
        })
    }
}

/// Why a request for credentials is not answered.
#[derive(Debug)]
pub enum Refusal {
    /// It came from another host or port than the configured one (a redirect).
    OtherHost,
    /// It came again after [`MAX_ANSWERS`] answers: the server refused them.
    Refused,
    /// Nothing is offered, or nothing of a kind the server accepts.
    NothingFits,
    /// libgit2 could not make the credential.
    Invalid(git2::Error),
}

/// The most answers a connection gives: libgit2 asks again after every refusal, and an honest
/// credential needs two (for SSH, the user name, then the key).
pub const MAX_ANSWERS: u32 = 3;

/// Answers libgit2's credential callback for a connection to `configured`. `asked` and
/// `username` are the callback's URL and user name, `allowed` the kinds the server accepts;
/// `answers` counts this connection's answers so far.
pub fn answer(
    configured: &Endpoint,
    answers: &Cell<u32>,
    asked: &str,
    username: Option<&str>,
    allowed: CredentialType,
    offer: &Offer,
) -> Result<Cred, Refusal> {
    if !credentials_go_to(configured, asked) {
        return Err(Refusal::OtherHost);
    }
    let n = answers.get() + 1;
    answers.set(n);
    if n > MAX_ANSWERS {
        return Err(Refusal::Refused);
    }
    match offer {
        Offer::Basic { username, password }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
        {
            Cred::userpass_plaintext(username, password).map_err(Refusal::Invalid)
        }
        Offer::SshKey { key, passphrase } => {
            let user = username.unwrap_or("git");
            if allowed.contains(CredentialType::USERNAME) {
                Cred::username(user)
            } else {
                Cred::ssh_key_from_memory(user, None, key, passphrase.as_deref())
            }
            .map_err(Refusal::Invalid)
        }
        _ => Err(Refusal::NothingFits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::endpoint;

    fn basic() -> Offer {
        Offer::Basic {
            username: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn credentials_go_only_to_the_configured_host() {
        let ep = endpoint("https://git.example/r.git").expect("endpoint");
        let n = Cell::new(0);
        let plain = CredentialType::USER_PASS_PLAINTEXT;
        let other = answer(&ep, &n, "https://evil.example/r.git", None, plain, &basic());
        assert!(matches!(other, Err(Refusal::OtherHost)));
        assert_eq!(n.get(), 0, "a refused host is not an answer");
        let port = answer(
            &ep,
            &n,
            "https://git.example:8443/r.git",
            None,
            plain,
            &basic(),
        );
        assert!(matches!(port, Err(Refusal::OtherHost)));
        assert!(answer(&ep, &n, "https://git.example/r.git", None, plain, &basic()).is_ok());
    }

    #[test]
    fn a_connection_answers_three_times_at_most() {
        let ep = endpoint("https://git.example/r.git").expect("endpoint");
        let n = Cell::new(0);
        let ask = || {
            answer(
                &ep,
                &n,
                "https://git.example/r.git",
                None,
                CredentialType::USER_PASS_PLAINTEXT,
                &basic(),
            )
        };
        for _ in 0..MAX_ANSWERS {
            assert!(ask().is_ok());
        }
        assert!(matches!(ask(), Err(Refusal::Refused)));
    }

    #[test]
    fn what_is_offered_must_be_what_the_server_accepts() {
        let ep = endpoint("ssh://git@git.example/r.git").expect("endpoint");
        let n = Cell::new(0);
        let url = "ssh://git@git.example/r.git";
        let key_only = CredentialType::SSH_KEY;
        let basic_over_ssh = answer(&ep, &n, url, Some("git"), key_only, &basic());
        assert!(matches!(basic_over_ssh, Err(Refusal::NothingFits)));
        let nothing = answer(&ep, &n, url, Some("git"), key_only, &Offer::None);
        assert!(matches!(nothing, Err(Refusal::NothingFits)));
        let key = Offer::SshKey {
            key: "not a key".into(),
            passphrase: None,
        };
        // The user name first, when the server asks for it.
        let user = answer(&ep, &n, url, Some("git"), CredentialType::USERNAME, &key);
        assert!(user.is_ok());
        assert_eq!(format!("{key:?}"), "SshKey", "no secret in Debug");
    }
}
