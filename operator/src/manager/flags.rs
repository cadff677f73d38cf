//! The manager's command line: PKO's manager's flags (Go spellings accepted) and ours.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::ManagerError;
use crate::controller;
use crate::controller::runtime::scope::{Scope, ScopeError};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "operator",
    version,
    about = "Deploys Pulumi stacks declared as Stack objects"
)]
pub struct Flags {
    /// Address of the metrics endpoint (`/metrics`); "0" turns it off.
    #[arg(long, default_value = "0")]
    pub metrics_bind_address: String,
    /// Address of the health endpoints (`/healthz`, `/readyz`).
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Run the controllers only while holding the leader lease (`--leader-elect`,
    /// `--leader-elect=true|false` as Go's flag package takes it).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// Where the Program artifact server listens.
    #[arg(long, env = "PROGRAM_FS_ADDR", default_value = ":9090")]
    pub program_fs_addr: String,
    /// The address workspace pods reach the Program server at (default: derived from
    /// --program-fs-addr).
    #[arg(long, env = "PROGRAM_FS_ADV_ADDR", default_value = "")]
    pub program_fs_adv_addr: String,
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "60s")]
    pub leader_election_lease_duration: String,
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "45s")]
    pub leader_election_renew_deadline: String,
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "10s")]
    pub leader_election_retry_period: String,
    /// Timeout of each Kubernetes API request.
    #[arg(long, env = "KUBE_API_TIMEOUT", default_value = "30s")]
    pub kube_api_timeout: String,
    /// Reconciles run at once per controller.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 25)]
    pub max_concurrent_reconciles: u16,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level (a tracing filter: info, debug, operator=debug,...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Accepted for PKO compatibility (`console` = text, `json`).
    #[arg(long, hide = true)]
    pub zap_encoder: Option<String>,
    /// Accepted for PKO compatibility (sets the log level).
    #[arg(long, hide = true)]
    pub zap_log_level: Option<String>,
    /// Accepted for PKO compatibility; ignored.
    #[arg(long, hide = true)]
    pub zap_time_encoding: Option<String>,
    /// Serve the metrics over HTTPS to callers allowed to `get` `/metrics` (TokenReview and
    /// SubjectAccessReview, as PKO); `--metrics-secure=false` for plain HTTP. On by default,
    /// as in PKO.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub metrics_secure: Option<bool>,
    /// Accepted for PKO compatibility; ignored (PKO turns HTTP/2 off on its metrics and webhook
    /// servers by default; we serve no webhooks).
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_http2: Option<bool>,
    /// Accepted for PKO compatibility (controller-runtime's zap development mode); ignored.
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub zap_devel: Option<bool>,
    /// Accepted for PKO compatibility; ignored (errors carry their causes, not stack traces).
    #[arg(long, hide = true)]
    pub zap_stacktrace_level: Option<String>,
    /// Reconcile only the Stacks, Programs, Workspaces and Updates of these namespaces
    /// (comma-separated or repeated; `WATCH_NAMESPACE` too). Unset: every namespace. Roles in
    /// these namespaces are then all the operator needs (config/namespaced, the chart's
    /// `controller.watchNamespaces`).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Flux's: `--watch-all-namespaces=false` without `--watch-namespace` watches the
    /// operator's own namespace only.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub watch_all_namespaces: Option<bool>,
    /// Reconcile only the objects this label selector picks (Flux's sharding, e.g.
    /// `sharding.fluxcd.io/key=shard1`, and `!sharding.fluxcd.io/key` for the shard of the
    /// rest). The Workspaces and Updates made for a Stack carry its labels the selector
    /// names, so the same shard reconciles them.
    #[arg(long)]
    pub watch_label_selector: Option<String>,
    /// Flux's lockdown flag. Accepted: this operator never follows a reference out of a
    /// Stack's namespace, with or without it (Flux sources, Programs, prerequisites and
    /// Secrets are read from the Stack's own namespace; a Secret named in another is refused).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub no_cross_namespace_refs: Option<bool>,
    /// The service account of workspace pods whose Stack names none; unset: `default`, as
    /// PKO.
    #[arg(long)]
    pub default_service_account: Option<String>,
}

impl Flags {
    /// Parses a command line as PKO's manager would take it: an argv[0]-style `/manager`
    /// first (PKO's manifests pass it in `args`, and our image's entrypoint is the operator
    /// itself) and Go's single-dash long flags (`-leader-elect`) are accepted.
    pub fn parse_pko<I, T>(args: I) -> Flags
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Flags::parse_from(pko_argv(args))
    }

    pub fn try_parse_pko<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Flags::try_parse_from(pko_argv(args))
    }

    pub fn leader_elect(&self) -> bool {
        self.leader_elect.unwrap_or(false)
    }

    pub fn metrics_secure(&self) -> bool {
        self.metrics_secure.unwrap_or(true)
    }

    /// What the controllers reconcile; `own_namespace` for `--watch-all-namespaces=false`.
    pub fn scope(&self, own_namespace: &str) -> Result<Scope, ScopeError> {
        let mut namespaces = self.watch_namespace.clone();
        if self.watch_all_namespaces == Some(false)
            && namespaces.iter().all(|n| n.trim().is_empty())
        {
            namespaces = vec![own_namespace.to_string()];
        }
        Scope::new(&namespaces, self.watch_label_selector.as_deref())
    }
}

/// The command line with what PKO's manager accepts and clap does not put right: the program
/// named again first (`/manager` or `/operator`, as a Deployment's `args` does when its image
/// has no entrypoint) is dropped, and `-name[=value]` becomes `--name[=value]`.
pub fn pko_argv<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for (i, arg) in args.into_iter().map(Into::into).enumerate() {
        let text = arg.to_string_lossy();
        if i == 1 && names_the_program(&text) {
            continue;
        }
        if i > 0 && text.len() > 2 && text.starts_with('-') && !text.starts_with("--") {
            out.push(format!("-{text}").into());
            continue;
        }
        out.push(arg);
    }
    out
}

fn names_the_program(arg: &str) -> bool {
    let name = arg.rsplit('/').next().unwrap_or(arg);
    !arg.starts_with('-') && matches!(name, "manager" | "operator")
}

pub(super) fn duration_flag(flag: &'static str, v: &str) -> Result<Duration, ManagerError> {
    controller::duration::parse(v).map_err(|e| ManagerError::Flag {
        flag,
        detail: e.to_string(),
    })
}

/// `:9090` → `0.0.0.0:9090`.
pub fn bind_addr(flag: &'static str, v: &str) -> Result<Option<SocketAddr>, ManagerError> {
    if v == "0" || v.is_empty() {
        return Ok(None);
    }
    let full = if v.starts_with(':') {
        format!("0.0.0.0{v}")
    } else {
        v.to_string()
    };
    full.parse().map(Some).map_err(|e| ManagerError::Flag {
        flag,
        detail: format!("{v:?} is not host:port ({e})"),
    })
}

/// What workspace pods dial for Program artifacts: the flag, or the bind address with a
/// usable host (PKO's rule).
pub fn advertised(adv: &str, bind: &str) -> String {
    if !adv.is_empty() {
        return adv.to_string();
    }
    let (host, port) = bind.rsplit_once(':').unwrap_or((bind, "9090"));
    let host = match host {
        "" => "localhost".to_string(),
        "0.0.0.0" | "[::]" => std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        h => h.to_string(),
    };
    format!("{host}:{port}")
}
