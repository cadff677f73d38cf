//! Checks an SSH private key before connecting, so that a key that cannot work fails with a
//! message saying why, instead of libssh2's "unable to extract public key".

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "GIT_SSH_PRIVATE_KEY is not a PEM or OpenSSH private key; put the whole key file, \
         with its -----BEGIN ... PRIVATE KEY----- line, in the Secret"
    )]
    NotAKey,
    #[error(
        "GIT_SSH_PRIVATE_KEY is encrypted; put its passphrase in GIT_PASSWORD, or use a key \
         without a passphrase"
    )]
    NeedsPassphrase,
    #[error("GIT_SSH_PRIVATE_KEY is a corrupt OpenSSH key ({0}); export the key again")]
    Corrupt(&'static str),
}

/// Whether the key is encrypted; errors if it is no key at all.
pub fn is_encrypted(pem: &str) -> Result<bool, KeyError> {
    let pem = pem.trim();
    let Some(begin) = pem
        .lines()
        .next()
        .filter(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----"))
    else {
        return Err(KeyError::NotAKey);
    };
    if !pem.lines().any(|l| l.starts_with("-----END ")) {
        return Err(KeyError::NotAKey);
    }
    if begin.contains("OPENSSH") {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let blob = STANDARD
            .decode(body)
            .map_err(|_| KeyError::Corrupt("not base64"))?;
        let rest = blob
            .strip_prefix(b"openssh-key-v1\0")
            .ok_or(KeyError::Corrupt("bad magic"))?;
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(KeyError::Corrupt("truncated"))?;
        let cipher = rest.get(4..4 + len).ok_or(KeyError::Corrupt("truncated"))?;
        return Ok(cipher != b"none");
    }
    Ok(begin.contains("ENCRYPTED") || pem.contains("Proc-Type: 4,ENCRYPTED"))
}

/// Refuses a key that cannot be used with the passphrase given (or none).
pub fn check(pem: &str, passphrase: Option<&str>) -> Result<(), KeyError> {
    if is_encrypted(pem)? && passphrase.is_none_or(str::is_empty) {
        return Err(KeyError::NeedsPassphrase);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssh(cipher: &str) -> String {
        let mut blob = b"openssh-key-v1\0".to_vec();
        blob.extend((cipher.len() as u32).to_be_bytes());
        blob.extend(cipher.as_bytes());
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            STANDARD.encode(blob)
        )
    }

    #[test]
    fn recognises_encryption() {
        assert_eq!(is_encrypted(&openssh("none")), Ok(false));
        assert_eq!(is_encrypted(&openssh("aes256-ctr")), Ok(true));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(is_encrypted(legacy), Ok(true));
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(is_encrypted(pkcs8), Ok(true));
        let plain = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(is_encrypted(plain), Ok(false));
    }

    #[test]
    fn refuses_what_cannot_work() {
        assert_eq!(
            check("ssh-ed25519 AAAA user@host", None),
            Err(KeyError::NotAKey)
        );
        assert_eq!(check("", None), Err(KeyError::NotAKey));
        assert_eq!(
            check(&openssh("aes256-ctr"), None),
            Err(KeyError::NeedsPassphrase)
        );
        assert_eq!(
            check(&openssh("aes256-ctr"), Some("")),
            Err(KeyError::NeedsPassphrase)
        );
        assert_eq!(check(&openssh("aes256-ctr"), Some("pw")), Ok(()));
        let bad = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(check(bad, None), Err(KeyError::Corrupt("bad magic")));
    }
}
