//! Initializing a new workspace pod through its agent, once per pod: the CLI version (and
//! whether it can take structured config), `pulumi install`, then each stack's selection,
//! configuration and environments.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Draft;
use crate::agent::config::from_json;
use crate::api::names::{condition, event, workspace_reason as reason};
use crate::api::workspace::{ConfigItem, Workspace};
use crate::controller::connect::AgentClient;
use crate::controller::events::EventType;
use crate::controller::{Context, Error};
use crate::proto::{self as pb, config_item, config_value_from};

/// The first CLI release that takes structured (JSON) config values.
pub const JSON_CONFIG_MIN: (u64, u64, u64) = (3, 202, 0);

pub enum Outcome {
    Done,
    Stop(Action),
}

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

pub async fn initialize(
    ctx: &Context,
    ws: &Workspace,
    agent: &mut AgentClient,
    draft: &mut Draft,
) -> Result<Outcome, Error> {
    let name = ws.name_any();
    let ns = ws.namespace().unwrap_or_default();
    draft.conditions.remove(condition::STALLED);

    let version = match agent.pulumi_version(pb::PulumiVersionRequest {}).await {
        Ok(r) => r.into_inner().version,
        Err(st) => {
            let (why, msg) = status_reason(&st);
            ctx.workspace_events
                .publish(ws, EventType::Warning, event::CONNECTION_FAILURE, &msg)
                .await;
            draft.ready(super::FALSE, &why, &msg);
            draft.save(ctx, &name, &ns);
            return Err(Error::Agent(format!("PulumiVersion: {why}: {msg}")));
        }
    };
    draft.pulumi_version = Some(version.clone());

    let items: Vec<&ConfigItem> = ws
        .spec
        .stacks
        .iter()
        .flatten()
        .flat_map(|s| s.config.iter().flatten())
        .collect();
    if items.iter().any(|i| is_structured(i)) {
        let ok = parse_version(&version).is_some_and(|v| v >= JSON_CONFIG_MIN);
        if !ok {
            let msg = format!(
                "Pulumi CLI version {version} is too old for JSON configuration support, require >= v3.202.0"
            );
            ctx.workspace_events
                .publish(
                    ws,
                    EventType::Warning,
                    event::STACK_INITIALIZATION_FAILURE,
                    &msg,
                )
                .await;
            draft.ready(super::FALSE, reason::INCOMPATIBLE_CONFIGURATION, &msg);
            draft.stalled(reason::INCOMPATIBLE_CONFIGURATION, &msg);
            draft.save(ctx, &name, &ns);
            return Ok(Outcome::Stop(Action::await_change()));
        }
    }

    draft.ready(
        super::FALSE,
        reason::INSTALLING,
        "Installing packages and plugins required by the program",
    );
    draft.save(ctx, &name, &ns);
    if let Err(st) = agent.install(pb::InstallRequest {}).await {
        let msg = st.message().to_string();
        ctx.workspace_events
            .publish(ws, EventType::Warning, event::INSTALLATION_FAILURE, &msg)
            .await;
        draft.ready(super::FALSE, reason::INSTALLATION_FAILED, &msg);
        draft.stalled(reason::INSTALLATION_FAILED, &msg);
        draft.save(ctx, &name, &ns);
        return Ok(Outcome::Stop(Action::await_change()));
    }

    draft.ready(
        super::FALSE,
        reason::INITIALIZING,
        "Initializing and selecting a Pulumi stack",
    );
    draft.save(ctx, &name, &ns);
    for stack in ws.spec.stacks.iter().flatten() {
        if let Err(msg) = init_stack(agent, stack).await {
            let msg = format!("Failed to initialize stack \"{}\": {msg}", stack.name);
            ctx.workspace_events
                .publish(
                    ws,
                    EventType::Warning,
                    event::STACK_INITIALIZATION_FAILURE,
                    &msg,
                )
                .await;
            draft.ready(super::FALSE, reason::INITIALIZATION_FAILED, &msg);
            draft.stalled(reason::INITIALIZATION_FAILED, &msg);
            draft.save(ctx, &name, &ns);
            return Ok(Outcome::Stop(Action::await_change()));
        }
    }
    Ok(Outcome::Done)
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
