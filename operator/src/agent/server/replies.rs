//! The agent's replies in the protocol's terms: what the CLI printed (its JSON, times and
//! version) turned into messages, and its failures into gRPC statuses with PKO's reasons.

use serde::Deserialize;
use serde_json::Value;
use tonic::Status;

use crate::agent::config::ConfigError;
use crate::agent::operation::Kind;
use crate::agent::pulumi::CliError;
use crate::proto::{self as pb, PulumiErrorInfo};

pub(super) fn is_no_such_stack(e: &CliError) -> bool {
    let text = e.full_text();
    text.contains("no stack named") && text.contains("found")
}

/// The CLI's history and stack list times (`2025-10-10T12:34:56.000Z`).
pub fn timestamp(s: &str) -> Option<prost_types::Timestamp> {
    let t: jiff::Timestamp = s.parse().ok()?;
    Some(prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    })
}

pub(super) fn now() -> prost_types::Timestamp {
    let t = jiff::Timestamp::now();
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StackListEntry {
    pub(super) name: String,
    #[serde(default)]
    pub(super) current: bool,
    pub(super) last_update: Option<String>,
    #[serde(default)]
    pub(super) update_in_progress: bool,
    pub(super) resource_count: Option<i32>,
    pub(super) url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryEntry {
    pub(super) start_time: Option<String>,
    pub(super) end_time: Option<String>,
    pub(super) result: Option<String>,
    pub(super) message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WhoAmI {
    #[serde(default)]
    pub(super) user: String,
    #[serde(default)]
    pub(super) organizations: Option<Vec<String>>,
    #[serde(default)]
    pub(super) url: String,
}

/// Failures a caller can act on, recognised in the CLI's output and passed on as a
/// `PulumiErrorInfo` detail (PKO's reasons, plus the file backend's lock message).
pub fn known_error(text: &str) -> Option<PulumiErrorInfo> {
    if text.contains("Conflict: Another update is currently in progress")
        || text.contains("the stack is currently locked by")
    {
        return Some(PulumiErrorInfo {
            code: 409,
            reason: "UpdateConflict".into(),
            message: "Another update is currently in progress".into(),
        });
    }
    if text.contains("invalid access token")
        || text.contains("Unauthorized: No credentials provided or are invalid")
    {
        return Some(PulumiErrorInfo {
            code: 401,
            reason: "InvalidAccessToken".into(),
            message: "Invalid access token used to authenticate with Pulumi Cloud".into(),
        });
    }
    None
}

pub(super) fn with_known_error(code: tonic::Code, message: String, e: &CliError) -> Status {
    match known_error(&e.full_text()) {
        Some(info) => pb::status_with_error_info(code, message, &info),
        None => Status::new(code, message),
    }
}

pub(super) fn operation_failed(kind: Kind, e: &CliError) -> Status {
    with_known_error(
        tonic::Code::Unknown,
        format!("{} failed: {e}", kind.verb()),
        e,
    )
}

pub(super) fn config_error(e: ConfigError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// `v3.259.0\n` → `3.259.0` (the form PKO's agent reports).
pub fn normalize_version(out: &str) -> String {
    let v = out.trim();
    v.strip_prefix('v').unwrap_or(v).to_string()
}

/// A preview's summary from its engine summary event (the history has no previews).
pub(super) fn preview_summary(
    started: prost_types::Timestamp,
    events: &[Value],
    message: Option<String>,
) -> pb::UpdateSummary {
    let summary = events.iter().rev().find_map(|e| e.get("summaryEvent"));
    let result = summary
        .and_then(|s| s.get("result"))
        .and_then(Value::as_str)
        .unwrap_or(pb::RESULT_SUCCEEDED)
        .to_string();
    pb::UpdateSummary {
        start_time: Some(started),
        end_time: Some(now()),
        result,
        message: message.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_failures_carry_their_reason() {
        let locked = "error: the stack is currently locked by 1 lock(s). Either wait for the other \
                      process(es) to end or delete the lock file with `pulumi cancel`.";
        assert_eq!(
            known_error(locked).map(|i| i.reason),
            Some("UpdateConflict".into())
        );
        assert_eq!(
            known_error("[409] Conflict: Another update is currently in progress.").map(|i| i.code),
            Some(409)
        );
        assert_eq!(
            known_error("error: Unauthorized: No credentials provided or are invalid.")
                .map(|i| i.reason),
            Some("InvalidAccessToken".into())
        );
        assert_eq!(known_error("error: resource failed"), None);
    }

    #[test]
    fn cli_times_and_versions_parse() {
        let t = timestamp("2025-10-10T12:34:56.500Z").expect("parses");
        assert_eq!((t.seconds, t.nanos), (1_760_099_696, 500_000_000));
        assert_eq!(timestamp("yesterday"), None);
        assert_eq!(normalize_version("v3.259.0\n"), "3.259.0");
    }

    #[test]
    fn a_preview_summary_takes_the_engine_result() {
        let ev = vec![serde_json::json!({"summaryEvent": {"result": "failed"}})];
        let s = preview_summary(now(), &ev, Some("why".into()));
        assert_eq!((s.result.as_str(), s.message.as_str()), ("failed", "why"));
        assert_eq!(preview_summary(now(), &[], None).result, "succeeded");
    }
}
