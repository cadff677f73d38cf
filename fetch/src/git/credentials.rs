//! Which credentials the environment carries, and refusing combinations that make no sense
//! before any connection is made. Secrets only ever come from the environment (they arrive
//! from Kubernetes Secrets), never from flags, which show in `ps` and pod specs.

use std::fmt;

use super::known_hosts::{KnownHosts, KnownHostsError};
use super::ssh_key::{self, KeyError};
use crate::vars;

#[derive(Clone)]
pub enum Credentials {
    None,
    Basic {
        username: String,
        password: String,
    },
    Token(String),
    SshKey {
        key: String,
        passphrase: Option<String>,
    },
    GitHubApp {
        app_id: String,
        installation_id: String,
        private_key: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode())
    }
}

impl Credentials {
    /// How the fetch authenticates, for messages (never the secret itself).
    pub fn mode(&self) -> &'static str {
        match self {
            Credentials::None => "no credentials",
            Credentials::Basic { .. } => "basic auth (GIT_USERNAME/GIT_PASSWORD)",
            Credentials::Token(_) => "a token (GIT_TOKEN)",
            Credentials::SshKey { .. } => "an SSH key (GIT_SSH_PRIVATE_KEY)",
            Credentials::GitHubApp { .. } => "a GitHub App installation token (GIT_GITHUB_APP_*)",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("{0} cannot be combined: set one way to authenticate")]
    Conflict(String),
    #[error("{missing} is required with {given}")]
    Incomplete { given: String, missing: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    KnownHosts(#[from] KnownHostsError),
    #[error(
        "{mode} does not work over {scheme}: use an ssh:// or user@host:path URL with \
         GIT_SSH_PRIVATE_KEY, and https:// with the others"
    )]
    WrongTransport { mode: &'static str, scheme: String },
}

/// Reads the credential variables through `env` (empty counts as unset).
pub fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Credentials, Option<KnownHosts>), CredentialsError> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let username = get(vars::GIT_USERNAME);
    let password = env(vars::GIT_PASSWORD).filter(|v| !v.is_empty());
    let token = get(vars::GIT_TOKEN);
    let key = get(vars::GIT_SSH_PRIVATE_KEY);
    let app = [
        vars::GIT_GITHUB_APP_ID,
        vars::GIT_GITHUB_APP_INSTALLATION_ID,
        vars::GIT_GITHUB_APP_PRIVATE_KEY,
    ]
    .map(&get);

    let mut given = Vec::new();
    if username.is_some() {
        given.push("GIT_USERNAME");
    }
    if token.is_some() {
        given.push("GIT_TOKEN");
    }
    if key.is_some() {
        given.push("GIT_SSH_PRIVATE_KEY");
    }
    if app.iter().any(Option::is_some) {
        given.push("GIT_GITHUB_APP_*");
    }
    if given.len() > 1 {
        return Err(CredentialsError::Conflict(given.join(" and ")));
    }

    let credentials = if let Some(key) = key {
        ssh_key::check(&key, password.as_deref())?;
        Credentials::SshKey {
            key,
            passphrase: password,
        }
    } else if let Some(token) = token {
        if password.is_some() {
            return Err(CredentialsError::Conflict(
                "GIT_TOKEN and GIT_PASSWORD".into(),
            ));
        }
        Credentials::Token(token)
    } else if let Some(username) = username {
        let password = password.ok_or_else(|| CredentialsError::Incomplete {
            given: "GIT_USERNAME".into(),
            missing: "GIT_PASSWORD".into(),
        })?;
        Credentials::Basic { username, password }
    } else if app.iter().any(Option::is_some) {
        let names = [
            "GIT_GITHUB_APP_ID",
            "GIT_GITHUB_APP_INSTALLATION_ID",
            "GIT_GITHUB_APP_PRIVATE_KEY",
        ];
        let missing: Vec<&str> = names
            .iter()
            .zip(&app)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(CredentialsError::Incomplete {
                given: "a GitHub App".into(),
                missing: missing.join(", "),
            });
        }
        let [Some(app_id), Some(installation_id), Some(private_key)] = app else {
            unreachable!("checked above");
        };
        if password.is_some() {
            return Err(CredentialsError::Conflict(
                "GIT_GITHUB_APP_* and GIT_PASSWORD".into(),
            ));
        }
        Credentials::GitHubApp {
            app_id: app_id.trim().into(),
            installation_id: installation_id.trim().into(),
            private_key,
        }
    } else if password.is_some() {
        return Err(CredentialsError::Incomplete {
            given: "GIT_PASSWORD".into(),
            missing: "GIT_USERNAME (or GIT_SSH_PRIVATE_KEY, whose passphrase it would be)".into(),
        });
    } else {
        Credentials::None
    };

    let known_hosts = get(vars::GIT_SSH_KNOWN_HOSTS)
        .map(|t| KnownHosts::parse(&t))
        .transpose()?;
    Ok((credentials, known_hosts))
}

/// Refuses credentials the URL's transport cannot use.
pub fn check_transport(creds: &Credentials, scheme: &str) -> Result<(), CredentialsError> {
    let ssh = scheme == "ssh";
    let ok = match creds {
        Credentials::None => true,
        Credentials::SshKey { .. } => ssh,
        _ => !ssh && scheme != "file",
    };
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::WrongTransport {
            mode: creds.mode(),
            scheme: format!("{scheme}://"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn creds(vars: &[(&str, &str)]) -> Result<Credentials, CredentialsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(&|k| map.get(k).cloned()).map(|(c, _)| c)
    }

    #[test]
    fn one_mode_at_a_time() {
        assert!(matches!(creds(&[]), Ok(Credentials::None)));
        assert!(matches!(
            creds(&[("GIT_USERNAME", "u"), ("GIT_PASSWORD", "p")]),
            Ok(Credentials::Basic { .. })
        ));
        assert!(matches!(
            creds(&[("GIT_TOKEN", "t")]),
            Ok(Credentials::Token(_))
        ));
        assert_eq!(
            creds(&[("GIT_TOKEN", "t"), ("GIT_SSH_PRIVATE_KEY", "k")]).err(),
            Some(CredentialsError::Conflict(
                "GIT_TOKEN and GIT_SSH_PRIVATE_KEY".into()
            ))
        );
        assert!(matches!(
            creds(&[("GIT_USERNAME", "u"), ("GIT_GITHUB_APP_ID", "1")]),
            Err(CredentialsError::Conflict(_))
        ));
        assert!(matches!(
            creds(&[("GIT_USERNAME", "u")]),
            Err(CredentialsError::Incomplete { .. })
        ));
        assert!(matches!(
            creds(&[("GIT_PASSWORD", "p")]),
            Err(CredentialsError::Incomplete { .. })
        ));
        let err = creds(&[("GIT_GITHUB_APP_ID", "1")])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(
                |e| e.contains("GIT_GITHUB_APP_INSTALLATION_ID, GIT_GITHUB_APP_PRIVATE_KEY")
            ),
            "{err:?}"
        );
        assert_eq!(
            creds(&[("GIT_SSH_PRIVATE_KEY", "not a key")]).err(),
            Some(CredentialsError::Key(KeyError::NotAKey))
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn transports() {
        let key = Credentials::SshKey {
            key: String::new(),
            passphrase: None,
        };
        assert!(check_transport(&key, "ssh").is_ok());
        assert!(check_transport(&key, "https").is_err());
        assert!(check_transport(&Credentials::Token("t".into()), "ssh").is_err());
        assert!(check_transport(&Credentials::None, "file").is_ok());
    }
}
