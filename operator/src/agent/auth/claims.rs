//! What a bearer token says of itself, read before asking the apiserver about it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a bearer says of itself, read from its (unverified) JWT claims; the apiserver verifies
/// the signature. Service-account tokens always carry `exp`, `aud` and `iss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claims {
    /// How long the token may still be used.
    pub(super) expires_in: Duration,
    pub(super) audiences: Vec<String>,
    pub(super) issuer: Option<String>,
}

impl Claims {
    /// Something that is not a JWT, has no `exp`, or has expired is refused here, without
    /// asking the apiserver.
    pub(super) fn read(token: &str, now: u64) -> Result<Claims, String> {
        let mut parts = token.split('.');
        let (Some(_header), Some(claims), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the bearer token is not a JWT".into());
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims.trim_end_matches('='))
            .map_err(|_| "the bearer token is not a JWT".to_string())?;
        let claims: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|_| "the bearer token is not a JWT".to_string())?;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| "the bearer token has no expiry (exp)".to_string())?;
        if exp <= now {
            return Err("the bearer token has expired".into());
        }
        // RFC 7519: `aud` is one string or an array of them.
        let audiences = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Claims {
            expires_in: Duration::from_secs(exp - now),
            audiences,
            issuer: claims
                .get("iss")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
        })
    }

    /// Refuses, without a review, a token that cannot pass one: not for one of `audiences`
    /// (the review asks for them, so it would refuse the token too).
    pub(super) fn precheck(&self, audiences: &[String]) -> Result<(), String> {
        if !self.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(format!(
                "the bearer token is not for this workspace (audience {})",
                audiences.join(", ")
            ));
        }
        Ok(())
    }
}

/// A JWT with `claims` and no real signature (the apiserver is what checks signatures).
#[cfg(test)]
pub(super) fn jwt(claims: &str) -> String {
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(token: &str, now: u64) -> Result<Duration, String> {
        Claims::read(token, now).map(|c| c.expires_in)
    }

    #[test]
    fn a_token_is_trusted_no_longer_than_its_expiry() {
        assert_eq!(
            expiry(&jwt(r#"{"exp":1100,"sub":"x"}"#), 1000),
            Ok(Duration::from_secs(100))
        );
        assert_eq!(
            expiry(&jwt(r#"{"exp":900}"#), 1000),
            Err("the bearer token has expired".into())
        );
        assert_eq!(
            expiry(&jwt(r#"{"sub":"x"}"#), 1000),
            Err("the bearer token has no expiry (exp)".into())
        );
        for junk in [
            "junk",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("x.{}.y", "e30"),
        ] {
            assert!(expiry(junk, 1000).is_err(), "{junk}");
        }
    }

    #[test]
    fn tokens_for_another_audience_are_refused_unreviewed() {
        let ours = vec!["ws1.ns".to_string()];
        let read = |claims: &str| Claims::read(&jwt(claims), 1000).expect("claims");
        let one = read(r#"{"exp":2000,"aud":"ws1.ns","iss":"https://k8s"}"#);
        assert_eq!(one.precheck(&ours), Ok(()));
        assert_eq!(one.issuer.as_deref(), Some("https://k8s"));
        let listed = read(r#"{"exp":2000,"aud":["api","ws1.ns"]}"#);
        assert_eq!(listed.precheck(&ours), Ok(()));
        assert_eq!(listed.issuer, None);
        for other in [
            r#"{"exp":2000,"aud":"ws2.ns","iss":"https://k8s"}"#,
            r#"{"exp":2000,"aud":["api"],"iss":"https://k8s"}"#,
            r#"{"exp":2000,"iss":"https://k8s"}"#,
        ] {
            let e = read(other).precheck(&ours).unwrap_err();
            assert!(e.contains("not for this workspace"), "{other}: {e}");
        }
    }
}
