//! GitHub App authentication: an RS256 JWT signed with the App's private key, exchanged for an
//! installation access token (`POST /app/installations/{id}/access_tokens`), which then
//! authenticates git over HTTPS as user `x-access-token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;

/// The git user name GitHub expects with an installation token.
pub const TOKEN_USER: &str = "x-access-token";
pub const DEFAULT_API: &str = "https://api.github.com";

#[derive(Debug, thiserror::Error)]
pub enum GitHubAppError {
    #[error(
        "GIT_GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM (PKCS#1 or PKCS#8); use \
         the .pem file GitHub generated for the App"
    )]
    Key,
    #[error("GIT_GITHUB_APP_ID and GIT_GITHUB_APP_INSTALLATION_ID must be numbers, got {0:?}")]
    Id(String),
    #[error("GITHUB_API_URL {0:?} is not an http(s) URL")]
    ApiUrl(String),
    #[error("cannot reach the GitHub API at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the GitHub API at {url} refused the App's token request ({status}{detail}); check \
         GIT_GITHUB_APP_ID, GIT_GITHUB_APP_INSTALLATION_ID and that the key belongs to the App"
    )]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the GitHub API at {0} answered without a token")]
    NoToken(String),
}

/// Exchanges the App's credentials for an installation token.
pub fn installation_token(
    api: &str,
    app_id: &str,
    installation_id: &str,
    private_key_pem: &str,
    timeout: Duration,
) -> Result<String, GitHubAppError> {
    for id in [app_id, installation_id] {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GitHubAppError::Id(id.to_string()));
        }
    }
    let jwt = jwt(app_id, private_key_pem, SystemTime::now())?;
    let base = Url::parse(api.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| GitHubAppError::ApiUrl(api.to_string()))?;
    let url = format!(
        "{}/app/installations/{installation_id}/access_tokens",
        base.as_str().trim_end_matches('/')
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .user_agent(concat!(
            "pulumi-flux-operator-fetch/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|source| GitHubAppError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let response = client
        .post(&url)
        .bearer_auth(&jwt)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .send()
        .map_err(|source| GitHubAppError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    if status != 201 && status != 200 {
        // GitHub's error bodies are {"message": ...}: safe to show, and they say what is wrong.
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(|m| format!(": {m}")))
            .unwrap_or_default();
        return Err(GitHubAppError::Refused {
            url,
            status,
            detail,
        });
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or(GitHubAppError::NoToken(url))
}

/// The App's JWT: issued a minute in the past (clock drift), valid for nine minutes (GitHub
/// allows ten).
pub fn jwt(app_id: &str, private_key_pem: &str, now: SystemTime) -> Result<String, GitHubAppError> {
    let pem = private_key_pem.trim();
    let key = RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
        .map_err(|_| GitHubAppError::Key)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"iat":{},"exp":{},"iss":"{app_id}"}}"#,
        now.saturating_sub(60),
        now + 540
    ));
    let signing_input = format!("{header}.{claims}");
    let signature = SigningKey::<Sha256>::new(key).sign(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}
