//! What the operator's deployment decides for every workspace pod: images, pull policies, the
//! operator's own identity, and the overrides for local runs. Read once from the environment
//! (the names PKO's manager reads, plus `FETCH_IMAGE`).

use std::collections::HashMap;

pub const DEFAULT_AGENT_IMAGE: &str = concat!(
    "ghcr.io/example/pulumi-flux-operator:",
    env!("CARGO_PKG_VERSION")
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Image of the `bootstrap` init container (holds `/agent`).
    pub agent_image: String,
    pub agent_image_pull_policy: String,
    /// Image of the `fetch` init container (`FETCH_IMAGE`; the agent's image, which carries
    /// `/fetch` too, when unset: PKO's manifests name one image, and switching means changing
    /// only that).
    pub fetch_image: String,
    pub fetch_image_pull_policy: String,
    /// `FLUX_MAX_UNTAR_SIZE_BYTES`, passed to `fetch flux` when set.
    pub flux_max_untar_size: Option<String>,
    /// `sizeLimit` of the workspace pod's `share` emptyDir (`WORKSPACE_SHARE_SIZE_LIMIT`, a
    /// Kubernetes quantity; `none` for no limit). A Stack's `workspaceTemplate` can set its own
    /// by naming the `share` volume.
    pub share_size_limit: Option<String>,
    /// Dial every workspace agent here instead of its Service (local runs: `localhost:50051`).
    pub workspace_localhost: Option<String>,
    /// GitHub's API for GitHub App credentials (`GITHUB_API_URL`; GitHub Enterprise:
    /// `https://HOST/api/v3`): used by the operator's own look at the repository and passed to
    /// `fetch`, so both ask the same GitHub. None: `https://api.github.com`.
    pub github_api_url: Option<String>,
    /// Whether `AGENT_IMAGE` and `FETCH_IMAGE` were given; unset, they are the image the
    /// operator runs from (see [`Settings::with_own_image`]).
    pub agent_image_given: bool,
    pub fetch_image_given: bool,
    /// The service account of workspace pods whose Stack names none
    /// (`--default-service-account`; None: `default`, the Workspace CRD's default, as PKO's).
    pub default_service_account: Option<String>,
    /// The operator's namespace and service account (for the tokens it presents to agents).
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{name}={value:?} is not a pull policy; use Always, IfNotPresent or Never")]
    PullPolicy { name: &'static str, value: String },
    #[error("FLUX_MAX_UNTAR_SIZE_BYTES={0:?} is not a number of bytes (or -1 for no limit)")]
    UntarSize(String),
    #[error(
        "WORKSPACE_SHARE_SIZE_LIMIT={0:?} is not a quantity; use e.g. 4Gi or 500Mi, or none for \
         no limit"
    )]
    ShareSize(String),
    #[error(
        "GITHUB_API_URL={0:?} is not an http(s) URL; use e.g. https://github.example.com/api/v3"
    )]
    GitHubApi(String),
}

/// What the share volume may hold unless configured otherwise: room for the agent, a program
/// at the default untar limit and its installed dependencies many times over, yet bounded, so
/// a workspace cannot fill its node's disk.
pub const DEFAULT_SHARE_SIZE_LIMIT: &str = "4Gi";

/// A Kubernetes quantity as users write them for sizes: digits, an optional fraction, an
/// optional binary or decimal suffix.
fn is_quantity(v: &str) -> bool {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && matches!(
            suffix,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
        )
}

impl Settings {
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(env: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let policy = |name: &'static str| -> Result<String, SettingsError> {
            match get(name) {
                None => Ok("IfNotPresent".into()),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "always" => Ok("Always".into()),
                    "ifnotpresent" => Ok("IfNotPresent".into()),
                    "never" => Ok("Never".into()),
                    _ => Err(SettingsError::PullPolicy { name, value: v }),
                },
            }
        };
        let untar = get(fetch::vars::FLUX_MAX_UNTAR_SIZE_BYTES);
        if let Some(v) = &untar
            && v.parse::<i64>().map_or(true, |n| n < -1)
        {
            return Err(SettingsError::UntarSize(v.clone()));
        }
        let share_size_limit = match get("WORKSPACE_SHARE_SIZE_LIMIT") {
            None => Some(DEFAULT_SHARE_SIZE_LIMIT.to_string()),
            Some(v) if v.eq_ignore_ascii_case("none") => None,
            Some(v) if is_quantity(&v) => Some(v),
            Some(v) => return Err(SettingsError::ShareSize(v)),
        };
        let github_api_url = get("GITHUB_API_URL");
        if let Some(v) = &github_api_url
            && !["https://", "http://"]
                .iter()
                .any(|s| v.strip_prefix(s).is_some_and(|host| !host.is_empty()))
        {
            return Err(SettingsError::GitHubApi(v.clone()));
        }
        let agent_image_given = get("AGENT_IMAGE").is_some();
        let agent_image = get("AGENT_IMAGE").unwrap_or_else(|| DEFAULT_AGENT_IMAGE.into());
        let agent_image_pull_policy = policy("AGENT_IMAGE_PULL_POLICY")?;
        // Without a fetch image of its own, fetch runs from the agent's image, pulled as it is
        // unless its own pull policy is given.
        let fetch_image = get("FETCH_IMAGE");
        let fetch_image_given = fetch_image.is_some();
        let fetch_image_pull_policy = match (&fetch_image, get("FETCH_IMAGE_PULL_POLICY")) {
            (None, None) => agent_image_pull_policy.clone(),
            _ => policy("FETCH_IMAGE_PULL_POLICY")?,
        };
        let fetch_image = fetch_image.unwrap_or_else(|| agent_image.clone());
        Ok(Settings {
            agent_image,
            agent_image_pull_policy,
            fetch_image,
            fetch_image_pull_policy,
            flux_max_untar_size: untar,
            share_size_limit,
            workspace_localhost: get("WORKSPACE_LOCALHOST"),
            github_api_url,
            agent_image_given,
            fetch_image_given,
            default_service_account: None,
            namespace: get("POD_NAMESPACE").unwrap_or_else(|| "pulumi-kubernetes-operator".into()),
            service_account: get("POD_SA_NAME").unwrap_or_else(|| "controller-manager".into()),
        })
    }
}

impl Settings {
    /// With `image`, the one the operator's own container runs, as the agent's (and fetch's)
    /// where `AGENT_IMAGE` (`FETCH_IMAGE`) is not given: a manifest that names one image, as
    /// PKO's quickstart does (PKO falls back to its own release's image), needs nothing more
    /// when that image is changed to ours.
    pub fn with_own_image(mut self, image: &str) -> Settings {
        if !self.agent_image_given {
            self.agent_image = image.to_string();
        }
        if !self.fetch_image_given {
            self.fetch_image = self.agent_image.clone();
        }
        self
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_vars(&HashMap::new()).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::default();
        assert_eq!(s.agent_image_pull_policy, "IfNotPresent");
        assert_eq!(s.service_account, "controller-manager");
        let s = Settings::from_vars(&vars(&[
            ("AGENT_IMAGE_PULL_POLICY", "always"),
            ("FETCH_IMAGE", "reg/fetch:1"),
            ("FLUX_MAX_UNTAR_SIZE_BYTES", "-1"),
        ]))
        .expect("valid");
        assert_eq!(s.agent_image_pull_policy, "Always");
        assert_eq!(s.fetch_image, "reg/fetch:1");
        assert_eq!(s.flux_max_untar_size.as_deref(), Some("-1"));
    }

    #[test]
    fn fetch_runs_from_the_agent_image_unless_given_its_own() {
        let s = Settings::from_vars(&vars(&[
            ("AGENT_IMAGE", "reg/pko:2"),
            ("AGENT_IMAGE_PULL_POLICY", "Always"),
        ]))
        .expect("valid");
        assert_eq!(
            (s.fetch_image.as_str(), s.fetch_image_pull_policy.as_str()),
            ("reg/pko:2", "Always")
        );
        assert_eq!(Settings::default().fetch_image, DEFAULT_AGENT_IMAGE);
        let s = Settings::from_vars(&vars(&[
            ("AGENT_IMAGE_PULL_POLICY", "Always"),
            ("FETCH_IMAGE", "reg/fetch:1"),
        ]))
        .expect("valid");
        assert_eq!(
            (s.fetch_image.as_str(), s.fetch_image_pull_policy.as_str()),
            ("reg/fetch:1", "IfNotPresent")
        );
        let s = Settings::from_vars(&vars(&[("FETCH_IMAGE_PULL_POLICY", "Never")])).expect("valid");
        assert_eq!(s.fetch_image_pull_policy, "Never");
    }

    #[test]
    fn an_unset_image_is_the_operators_own() {
        let own = "registry.example/ours:1";
        let s = Settings::default().with_own_image(own);
        assert_eq!((s.agent_image.as_str(), s.fetch_image.as_str()), (own, own));
        let s = Settings::from_vars(&vars(&[("AGENT_IMAGE", "reg/agent:2")]))
            .expect("valid")
            .with_own_image(own);
        assert_eq!(
            (s.agent_image.as_str(), s.fetch_image.as_str()),
            ("reg/agent:2", "reg/agent:2")
        );
        let s = Settings::from_vars(&vars(&[("FETCH_IMAGE", "reg/fetch:3")]))
            .expect("valid")
            .with_own_image(own);
        assert_eq!(
            (s.agent_image.as_str(), s.fetch_image.as_str()),
            (own, "reg/fetch:3")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e =
            Settings::from_vars(&vars(&[("FETCH_IMAGE_PULL_POLICY", "sometimes")])).unwrap_err();
        assert!(e.to_string().contains("FETCH_IMAGE_PULL_POLICY"), "{e}");
        assert!(Settings::from_vars(&vars(&[("FLUX_MAX_UNTAR_SIZE_BYTES", "lots")])).is_err());
        let e =
            Settings::from_vars(&vars(&[("GITHUB_API_URL", "github.example.com")])).unwrap_err();
        assert!(e.to_string().contains("GITHUB_API_URL"), "{e}");
        let s = Settings::from_vars(&vars(&[("GITHUB_API_URL", "https://gh.example/api/v3")]))
            .expect("valid");
        assert_eq!(
            s.github_api_url.as_deref(),
            Some("https://gh.example/api/v3")
        );
    }

    #[test]
    fn the_share_volume_is_bounded_unless_told_otherwise() {
        assert_eq!(
            Settings::default().share_size_limit.as_deref(),
            Some(DEFAULT_SHARE_SIZE_LIMIT)
        );
        let limit = |v: &str| {
            Settings::from_vars(&vars(&[("WORKSPACE_SHARE_SIZE_LIMIT", v)]))
                .map(|s| s.share_size_limit)
        };
        assert_eq!(limit("500Mi"), Ok(Some("500Mi".into())));
        assert_eq!(limit("1.5G"), Ok(Some("1.5G".into())));
        assert_eq!(limit("2147483648"), Ok(Some("2147483648".into())));
        assert_eq!(limit("None"), Ok(None));
        for bad in ["lots", "4GB", "-1Gi", ".5Gi", "1.Gi", "Gi"] {
            let e = limit(bad).unwrap_err();
            assert!(
                e.to_string().contains("WORKSPACE_SHARE_SIZE_LIMIT"),
                "{bad}: {e}"
            );
        }
    }
}
