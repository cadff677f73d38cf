//! The environment `fetch` reads: the contract between the workspace pod the operator builds
//! (`operator/src/controller/workspace/desired.rs` sets these) and this binary. Defined once,
//! used by both, so a renamed variable cannot reach only one side.

/// Repository URL.
pub const GIT_URL: &str = "GIT_URL";
/// Commit SHA, branch or tag.
pub const GIT_REVISION: &str = "GIT_REVISION";
/// Sub-directory holding the program.
pub const GIT_DIR: &str = "GIT_DIR";
/// `true`: fetch only the commit.
pub const GIT_SHALLOW: &str = "GIT_SHALLOW";
pub const GIT_USERNAME: &str = "GIT_USERNAME";
pub const GIT_PASSWORD: &str = "GIT_PASSWORD";
pub const GIT_TOKEN: &str = "GIT_TOKEN";
pub const GIT_SSH_PRIVATE_KEY: &str = "GIT_SSH_PRIVATE_KEY";
/// known_hosts lines that pin the server's host key.
pub const GIT_SSH_KNOWN_HOSTS: &str = "GIT_SSH_KNOWN_HOSTS";
pub const GIT_GITHUB_APP_ID: &str = "GIT_GITHUB_APP_ID";
pub const GIT_GITHUB_APP_INSTALLATION_ID: &str = "GIT_GITHUB_APP_INSTALLATION_ID";
pub const GIT_GITHUB_APP_PRIVATE_KEY: &str = "GIT_GITHUB_APP_PRIVATE_KEY";
/// GitHub's API, where the App's token is asked for (GitHub Enterprise: `https://HOST/api/v3`).
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";

/// The artifact's URL (`status.artifact.url` of the Flux source).
pub const FLUX_URL: &str = "FLUX_URL";
/// The artifact's digest (`status.artifact.digest`).
pub const FLUX_DIGEST: &str = "FLUX_DIGEST";
/// Sub-directory of the artifact holding the program.
pub const FLUX_DIR: &str = "FLUX_DIR";
/// Limit on the unpacked size in bytes (-1: none); the operator's own setting of the same name.
pub const FLUX_MAX_UNTAR_SIZE_BYTES: &str = "FLUX_MAX_UNTAR_SIZE_BYTES";
