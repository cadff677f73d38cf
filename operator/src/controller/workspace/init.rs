//! Initializing a new workspace pod through its agent, once per pod: the CLI version (and
//! whether it can take structured config), `pulumi install`, then each stack's selection,
//! configuration and environments; and configuring it again in place when only the stacks'
//! config changed ([`super::reconfigure`]).

use super::stop::{Announce, Halt, Stop};
use super::{FALSE, Run};
use crate::agent::config::from_json;
use crate::api::names::{condition, event, workspace_reason as reason};
use crate::api::workspace::{ConfigItem, Workspace};
use crate::controller::runtime::connect::AgentClient;
use crate::proto::{self as pb, config_item, config_value_from};

/// The first CLI release that takes structured (JSON) config values.
pub const JSON_CONFIG_MIN: (u64, u64, u64) = (3, 202, 0);

/// `v3.202.0`, `3.202.0-alpha.1+dirty` → (3, 202, 0).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    let patch = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor, patch))
}

/// Whether a config item needs the CLI's JSON config support.
pub fn is_structured(item: &ConfigItem) -> bool {
    item.value.as_ref().is_some_and(|v| !v.is_string())
        || item
            .value_from
            .as_ref()
            .is_some_and(|f| f.json.unwrap_or(false))
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ItemError {
    #[error(
        "config item {0:?}: path=true is incompatible with structured values (objects, arrays, numbers, booleans)"
    )]
    PathWithStructured(String),
}

/// A Workspace config item as the protocol carries it.
pub fn to_proto(item: &ConfigItem) -> Result<pb::ConfigItem, ItemError> {
    let mut v = None;
    if let Some(value) = &item.value {
        if item.path == Some(true) && !(value.is_string() || value.is_null()) {
            return Err(ItemError::PathWithStructured(item.key.clone()));
        }
        v = Some(config_item::V::Value(from_json(value)));
    }
    if let Some(from) = &item.value_from {
        let f = match (&from.env, &from.path) {
            (Some(e), _) if !e.is_empty() => Some(config_value_from::F::Env(e.clone())),
            (_, Some(p)) if !p.is_empty() => Some(config_value_from::F::Path(p.clone())),
            _ => None,
        };
        v = Some(config_item::V::ValueFrom(pb::ConfigValueFrom {
            f,
            json: from.json,
        }));
    }
    Ok(pb::ConfigItem {
        key: item.key.clone(),
        path: item.path,
        v,
        secret: item.secret,
    })
}

/// The reason a failed call is reported under: the agent's `PulumiErrorInfo` reason, or the
/// gRPC code's name (as grpc-go spells it).
pub fn status_reason(st: &tonic::Status) -> (String, String) {
    if let Some(info) = pb::error_info(st) {
        return (info.reason, info.message);
    }
    let code = match st.code() {
        tonic::Code::Cancelled => "Canceled".to_string(),
        other => format!("{other:?}"),
    };
    (code, st.message().to_string())
}

/// Initializes the pod through `agent`, saving each phase as it starts; a failure stalls the
/// workspace (only a new pod, from a spec or program change, tries again).
pub(super) async fn initialize(run: &mut Run<'_>, agent: &mut AgentClient) -> Result<(), Halt> {
    let ws = run.ws;
    run.draft.conditions.remove(condition::STALLED);

    let version = pulumi_version(agent).await?;
    run.draft.pulumi_version = Some(version.clone());
    json_config_supported(ws, &version)?;

    run.draft.ready(
        FALSE,
        reason::INSTALLING,
        "Installing packages and plugins required by the program",
    );
    run.save();
    if let Err(st) = agent.install(pb::InstallRequest {}).await {
        return Err(stalled(
            reason::INSTALLATION_FAILED,
            st.message().to_string(),
            event::INSTALLATION_FAILURE,
        ));
    }

    run.draft.ready(
        FALSE,
        reason::INITIALIZING,
        "Initializing and selecting a Pulumi stack",
    );
    run.save();
    configure_stacks(ws, agent).await
}

/// Applies a changed configuration to a pod initialized before ([`super::reconfigure`]):
/// each stack selected and configured again; nothing installed again.
pub(super) async fn reconfigure(run: &mut Run<'_>, agent: &mut AgentClient) -> Result<(), Halt> {
    let ws = run.ws;
    run.draft.conditions.remove(condition::STALLED);
    let version = match run.draft.pulumi_version.clone() {
        Some(v) => v,
        None => pulumi_version(agent).await?,
    };
    run.draft.pulumi_version = Some(version.clone());
    json_config_supported(ws, &version)?;
    run.draft.ready(
        FALSE,
        reason::INITIALIZING,
        "Applying the new stack configuration",
    );
    run.save();
    configure_stacks(ws, agent).await
}

/// The CLI's version, as the agent reports it.
async fn pulumi_version(agent: &mut AgentClient) -> Result<String, Halt> {
    match agent.pulumi_version(pb::PulumiVersionRequest {}).await {
        Ok(r) => Ok(r.into_inner().version),
        Err(st) => {
            let (why, message) = status_reason(&st);
            Err(Stop::AgentFailed {
                reason: why,
                message,
                call: "PulumiVersion",
            }
            .into())
        }
    }
}

async fn configure_stacks(ws: &Workspace, agent: &mut AgentClient) -> Result<(), Halt> {
    for stack in ws.spec.stacks.iter().flatten() {
        if let Err(msg) = init_stack(agent, stack).await {
            return Err(stalled(
                reason::INITIALIZATION_FAILED,
                format!("Failed to initialize stack \"{}\": {msg}", stack.name),
                event::STACK_INITIALIZATION_FAILURE,
            ));
        }
    }
    Ok(())
}

/// A failed initialization step: told every time (it runs once per pod).
fn stalled(why: &'static str, message: String, event: &'static str) -> Halt {
    Stop::Stalled {
        reason: why,
        message,
        announce: Announce::Always(event),
    }
    .into()
}

/// Structured (JSON) config needs a CLI that takes it.
pub fn json_config_supported(ws: &Workspace, version: &str) -> Result<(), Stop> {
    let structured = ws
        .spec
        .stacks
        .iter()
        .flatten()
        .flat_map(|s| s.config.iter().flatten())
        .any(is_structured);
    if !structured || parse_version(version).is_some_and(|v| v >= JSON_CONFIG_MIN) {
        return Ok(());
    }
    Err(Stop::Stalled {
        reason: reason::INCOMPATIBLE_CONFIGURATION,
        message: format!(
            "Pulumi CLI version {version} is too old for JSON configuration support, require >= v3.202.0"
        ),
        announce: Announce::Always(event::STACK_INITIALIZATION_FAILURE),
    })
}

async fn init_stack(
    agent: &mut AgentClient,
    stack: &crate::api::workspace::WorkspaceStack,
) -> Result<(), String> {
    agent
        .select_stack(pb::SelectStackRequest {
            stack_name: stack.name.clone(),
            create: stack.create,
            secrets_provider: stack.secrets_provider.clone(),
        })
        .await
        .map_err(|st| st.message().to_string())?;
    if let Some(config) = stack.config.as_ref().filter(|c| !c.is_empty()) {
        let items = config
            .iter()
            .map(to_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        agent
            .set_all_config(pb::SetAllConfigRequest { config: items })
            .await
            .map_err(|st| st.message().to_string())?;
    }
    if let Some(envs) = stack.environment.as_ref().filter(|e| !e.is_empty()) {
        agent
            .add_environments(pb::AddEnvironmentsRequest {
                environment: envs.clone(),
            })
            .await
            .map_err(|st| st.message().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workspace::ConfigValueFrom;
    use serde_json::json;

    #[test]
    fn versions_parse_tolerantly_and_gate_json_config() {
        assert_eq!(parse_version("v3.202.0"), Some((3, 202, 0)));
        assert_eq!(parse_version("3.197.1-alpha.5+dirty"), Some((3, 197, 1)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("3.201.9").is_some_and(|v| v < JSON_CONFIG_MIN));
        assert!(parse_version("v3.259.0").is_some_and(|v| v >= JSON_CONFIG_MIN));
    }

    #[test]
    fn structured_items_are_recognised_and_converted() {
        let s = ConfigItem {
            key: "k".into(),
            value: Some(json!("text")),
            ..Default::default()
        };
        assert!(!is_structured(&s));
        let o = ConfigItem {
            key: "k".into(),
            value: Some(json!({"a": 1})),
            ..Default::default()
        };
        assert!(is_structured(&o));
        let f = ConfigItem {
            key: "k".into(),
            value_from: Some(ConfigValueFrom {
                path: Some("/x".into()),
                json: Some(true),
                env: None,
            }),
            secret: Some(true),
            ..Default::default()
        };
        assert!(is_structured(&f));
        let p = to_proto(&f).expect("converts");
        assert_eq!(p.secret, Some(true));
        assert!(matches!(
            p.v,
            Some(config_item::V::ValueFrom(pb::ConfigValueFrom {
                f: Some(config_value_from::F::Path(_)),
                json: Some(true)
            }))
        ));
        let bad = ConfigItem {
            key: "k".into(),
            path: Some(true),
            value: Some(json!([1])),
            ..Default::default()
        };
        assert_eq!(
            to_proto(&bad),
            Err(ItemError::PathWithStructured("k".into()))
        );
    }

    #[test]
    fn only_structured_config_needs_a_cli_that_takes_json() {
        use crate::api::workspace::{WorkspaceSpec, WorkspaceStack};
        let with = |value: serde_json::Value| {
            let spec = WorkspaceSpec {
                stacks: Some(vec![WorkspaceStack {
                    name: "dev".into(),
                    config: Some(vec![ConfigItem {
                        key: "k".into(),
                        value: Some(value),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            };
            Workspace::new("app", spec)
        };
        assert_eq!(
            json_config_supported(&with(json!("text")), "3.100.0"),
            Ok(())
        );
        assert_eq!(json_config_supported(&with(json!([1])), "v3.202.0"), Ok(()));
        assert_eq!(
            json_config_supported(&with(json!([1])), "3.201.9"),
            Err(Stop::Stalled {
                reason: reason::INCOMPATIBLE_CONFIGURATION,
                message: "Pulumi CLI version 3.201.9 is too old for JSON configuration \
                          support, require >= v3.202.0"
                    .into(),
                announce: Announce::Always(event::STACK_INITIALIZATION_FAILURE),
            })
        );
    }

    #[test]
    fn failures_are_reported_by_reason_or_code_name() {
        let st = tonic::Status::unauthenticated("TokenReview API is unavailable");
        assert_eq!(
            status_reason(&st),
            (
                "Unauthenticated".into(),
                "TokenReview API is unavailable".into()
            )
        );
        let info = pb::PulumiErrorInfo {
            code: 401,
            reason: "InvalidAccessToken".into(),
            message: "bad token".into(),
        };
        let st = pb::status_with_error_info(tonic::Code::Unknown, "x".into(), &info);
        assert_eq!(
            status_reason(&st),
            ("InvalidAccessToken".into(), "bad token".into())
        );
    }
}
