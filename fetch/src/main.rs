//! `fetch`: the init container of the workspace pod. Thin edge over the library: parse flags,
//! run, turn the outcome into one stderr line, a termination message and an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fetch::error::{Classify, ExitKind, chain};
use fetch::flux::{self, FluxRequest, Outcome};
use fetch::git::{self, GitError, GitRequest};
use fetch::report::{self, LogFormat};
use fetch::unpack::{DEFAULT_MAX_SIZE, ModePolicy, UnpackOptions};
use fetch::workspace::Workspace;
use fetch::{digest::Digest, http, vars};
use reqwest::Url;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "fetch",
    version,
    about = "Fetches, verifies and unpacks a Pulumi program into the workspace volume",
    after_help = "Exit codes: 0 ok, 1 local I/O, 2 usage, 3 network, 4 artifact not found, \
                  5 verification failed, 6 unsafe or invalid archive, 7 --dir not in source, \
                  8 authentication refused."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FETCH_LOG_FORMAT"
    )]
    log_format: LogFormat,

    /// Where to write the failure message for Kubernetes; skipped when the file does not exist.
    #[arg(
        long,
        global = true,
        default_value = "/dev/termination-log",
        env = "FETCH_TERMINATION_LOG"
    )]
    termination_log: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download a Flux source artifact, verify its digest and unpack it.
    Flux(FluxArgs),
    /// Fetch a commit from a Git repository and check it out. Credentials come from the
    /// environment only: GIT_USERNAME + GIT_PASSWORD, GIT_TOKEN, GIT_SSH_PRIVATE_KEY (+
    /// GIT_PASSWORD as passphrase, GIT_SSH_KNOWN_HOSTS), or GIT_GITHUB_APP_ID +
    /// GIT_GITHUB_APP_INSTALLATION_ID + GIT_GITHUB_APP_PRIVATE_KEY (GITHUB_API_URL).
    Git(GitArgs),
}

#[derive(Args, Debug)]
struct GitArgs {
    /// Repository URL: https://, http://, ssh://, user@host:path or file://.
    #[arg(long, env = vars::GIT_URL)]
    url: String,

    /// Commit SHA (what the operator passes), branch or tag.
    #[arg(long, env = vars::GIT_REVISION)]
    revision: String,

    /// Directory that receives the checkout; replaced whole on success, removed on failure.
    #[arg(long)]
    target_dir: PathBuf,

    /// Sub-directory of the repository holding the program (empty: the repository root).
    #[arg(long, env = vars::GIT_DIR, default_value = "")]
    dir: String,

    /// Symlink to create pointing at the program directory (e.g. /share/workspace).
    #[arg(long)]
    link: Option<PathBuf>,

    /// Fetch only the commit (depth 1) when the server allows it.
    #[arg(long, env = vars::GIT_SHALLOW)]
    shallow: bool,

    /// Overall time limit in seconds.
    #[arg(long, default_value = "300", value_parser = seconds)]
    timeout: Duration,

    /// GitHub API base URL for GitHub App credentials (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = fetch::git::github_app::DEFAULT_API)]
    github_api_url: String,

    /// Keep the repository's permission bits instead of making the tree writable by any UID.
    #[arg(long)]
    preserve_mode: bool,
}

#[derive(Args, Debug)]
struct FluxArgs {
    /// Artifact URL (`status.artifact.url` of the Flux source).
    #[arg(long, env = vars::FLUX_URL)]
    url: String,

    /// Expected digest (`status.artifact.digest`): sha256:, sha384:, sha512: or blake3:
    /// followed by lowercase hex, or a bare sha256 hex checksum.
    #[arg(long, env = vars::FLUX_DIGEST)]
    digest: String,

    /// Directory that receives the unpacked tree; replaced whole on success, removed on failure.
    #[arg(long)]
    target_dir: PathBuf,

    /// Sub-directory of the artifact holding the program (empty: the artifact root).
    #[arg(long, env = vars::FLUX_DIR, default_value = "")]
    dir: String,

    /// Symlink to create pointing at the program directory (e.g. /share/workspace).
    #[arg(long)]
    link: Option<PathBuf>,

    /// Limit on the uncompressed archive in bytes; -1 for no limit.
    #[arg(
        long,
        env = vars::FLUX_MAX_UNTAR_SIZE_BYTES,
        default_value_t = DEFAULT_MAX_SIZE as i64,
        allow_negative_numbers = true
    )]
    max_untar_size: i64,

    /// Retries after a connection error, HTTP 429 or 5xx (except 501).
    #[arg(long, default_value_t = 3)]
    retries: u32,

    /// Overall time limit in seconds, retries included.
    #[arg(long, default_value = "300", value_parser = seconds)]
    timeout: Duration,

    /// First wait between retries in seconds; doubles each time, at most 30s. A server's
    /// Retry-After takes precedence.
    #[arg(long, default_value = "1", value_parser = seconds_or_zero)]
    retry_backoff: Duration,

    /// Replace the URL's host:port (Flux's SOURCE_CONTROLLER_LOCALHOST).
    #[arg(long, env = "SOURCE_CONTROLLER_LOCALHOST")]
    source_controller_localhost: Option<String>,

    /// Keep the archive's permission bits instead of making the tree writable by any UID.
    #[arg(long)]
    preserve_mode: bool,
}

fn seconds_or_zero(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    let d = seconds_or_zero(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be more than zero seconds"));
    }
    Ok(d)
}

/// A failure ready to be told: what kind, and one line saying what happened and what to do.
struct Failure {
    kind: ExitKind,
    message: String,
}

impl<E: Classify + std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            kind: e.exit_kind(),
            message: chain(&e),
        }
    }
}

fn usage(message: String) -> Failure {
    Failure {
        kind: ExitKind::Usage,
        message,
    }
}

fn main() -> ExitCode {
    // Modes are set exactly as the mode policy says (0666/0777 by default), not masked by the
    // inherited umask: the program is shared with containers running as other UIDs.
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0) };

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let message = one_line_clap_error(&e);
            eprintln!("fetch: error: {message}");
            report::termination_message(&termination_log_from_raw_args(), &message);
            return ExitCode::from(ExitKind::Usage.code());
        }
    };
    report::init_logging(cli.log_format);
    let result = match cli.command {
        Command::Flux(args) => run_flux(args),
        Command::Git(args) => run_git(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            error!(exit_code = f.kind.code(), "{}", f.message);
            report::termination_message(&cli.termination_log, &f.message);
            ExitCode::from(f.kind.code())
        }
    }
}

/// When the flags did not parse, the termination-log path is still honoured if it was given.
fn termination_log_from_raw_args() -> PathBuf {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--termination-log" {
            if let Some(path) = args.next() {
                return path.into();
            }
        } else if let Some(path) = arg
            .to_str()
            .and_then(|a| a.strip_prefix("--termination-log="))
        {
            return path.into();
        }
    }
    std::env::var_os("FETCH_TERMINATION_LOG")
        .unwrap_or_else(|| "/dev/termination-log".into())
        .into()
}

fn one_line_clap_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let text: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = text.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("{text} (run `fetch --help`)")
}

fn run_flux(args: FluxArgs) -> Result<(), Failure> {
    let modes = if args.preserve_mode {
        ModePolicy::Preserve
    } else {
        ModePolicy::Shared
    };
    let ws = Workspace::new(&args.target_dir, &args.dir, args.link.as_deref(), modes)?;
    let result = flux_request(&args, modes).and_then(|req| Ok(flux::fetch(&req, &ws)?));
    match result {
        Ok(Outcome::Reused) => Ok(()),
        Ok(Outcome::Fetched(_)) => Ok(()),
        Err(f) => {
            ws.clear();
            Err(f)
        }
    }
    .inspect(|()| info!(target_dir = %ws.target().display(), "workspace ready"))
}

fn run_git(args: GitArgs) -> Result<(), Failure> {
    let modes = if args.preserve_mode {
        ModePolicy::Preserve
    } else {
        ModePolicy::Shared
    };
    let ws = Workspace::new(&args.target_dir, &args.dir, args.link.as_deref(), modes)?;
    let (credentials, known_hosts) =
        git::credentials::from_env(&|k| std::env::var(k).ok()).map_err(GitError::from)?;
    let req = GitRequest {
        url: args.url,
        revision: args.revision,
        shallow: args.shallow,
        timeout: args.timeout,
        credentials,
        known_hosts,
        github_api: args.github_api_url,
    };
    match git::fetch(&req, &ws) {
        Ok(_) => {
            info!(target_dir = %ws.target().display(), "workspace ready");
            Ok(())
        }
        Err(e) => {
            ws.clear();
            Err(e.into())
        }
    }
}

fn flux_request(args: &FluxArgs, modes: ModePolicy) -> Result<FluxRequest, Failure> {
    let digest: Digest = args
        .digest
        .parse()
        .map_err(|e| usage(format!("--digest (FLUX_DIGEST): {e}")))?;
    let mut url = Url::parse(&args.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| usage("--url (FLUX_URL) must be an http:// or https:// URL".into()))?;
    if let Some(host) = args
        .source_controller_localhost
        .as_deref()
        .filter(|h| !h.is_empty())
    {
        http::override_host(&mut url, host)
            .map_err(|e| usage(format!("SOURCE_CONTROLLER_LOCALHOST: {e}")))?;
    }
    let max_size = match args.max_untar_size {
        -1 => None,
        n if n > 0 => Some(n as u64),
        n => {
            return Err(usage(format!(
                "--max-untar-size (FLUX_MAX_UNTAR_SIZE_BYTES) is {n}; use a positive number of \
                 bytes, or -1 for no limit"
            )));
        }
    };
    Ok(FluxRequest {
        url,
        digest,
        retries: args.retries,
        timeout: args.timeout,
        backoff: args.retry_backoff,
        unpack: UnpackOptions {
            max_size,
            modes,
            // flux::fetch sets it from --timeout when the fetch starts.
            deadline: None,
        },
    })
}
