//! What the Stack controller's unit tests build their objects from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::stack::{Stack, StackSpecV1};
use crate::api::stack_spec::StackSpec;

/// Stack `team/app` for Pulumi stack `dev`.
pub fn stack() -> Stack {
    let mut s = Stack::new(
        "app",
        StackSpecV1(StackSpec {
            stack: "dev".into(),
            ..Default::default()
        }),
    );
    s.metadata.namespace = Some("team".into());
    s
}

pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}
