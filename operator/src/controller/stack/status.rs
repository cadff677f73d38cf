//! The Stack status a reconcile writes, and PKO's three condition shapes: ready, reconciling
//! (with a reason), stalled (with a reason).

use std::collections::BTreeMap;

use crate::api::names::{condition, stack_reason as reason};
use crate::api::stack::{CurrentStackUpdate, ProjectInfo, Stack, StackUpdateState};
use crate::controller::runtime::conditions::{Conditions, FALSE, TRUE};

#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub conditions: Conditions,
    pub last_update: Option<StackUpdateState>,
    pub current_update: Option<CurrentStackUpdate>,
    pub outputs: Option<BTreeMap<String, serde_json::Value>>,
    pub project_info: Option<ProjectInfo>,
    pub observed_generation: Option<i64>,
    pub observed_reconcile_request: Option<String>,
}

impl Draft {
    pub fn new(stack: &Stack) -> Draft {
        let s = stack.status.clone().unwrap_or_default();
        Draft {
            conditions: Conditions::from(s.conditions.as_ref()),
            last_update: s.last_update,
            current_update: s.current_update,
            outputs: s.outputs,
            project_info: s.project_info,
            observed_generation: stack.metadata.generation,
            observed_reconcile_request: super::sync::reconcile_request(stack),
        }
    }

    fn generation(&self) -> Option<i64> {
        self.observed_generation
    }

    pub fn ready(&mut self) {
        let g = self.generation();
        self.conditions.set(
            condition::READY,
            TRUE,
            reason::PROCESSING_COMPLETED,
            "the stack has been processed and is up to date",
            g,
        );
        self.conditions.remove(condition::RECONCILING);
        self.conditions.remove(condition::STALLED);
    }

    pub fn reconciling(&mut self, why: &str, message: &str) {
        let g = self.generation();
        self.conditions.set(
            condition::READY,
            FALSE,
            reason::NOT_READY_IN_PROGRESS,
            "reconciliation is in progress",
            g,
        );
        self.conditions
            .set(condition::RECONCILING, TRUE, why, message, g);
        self.conditions.remove(condition::STALLED);
    }

    pub fn stalled(&mut self, why: &str, message: &str) {
        let g = self.generation();
        self.conditions.set(
            condition::READY,
            FALSE,
            reason::NOT_READY_STALLED,
            "reconciliation is stalled",
            g,
        );
        self.conditions
            .set(condition::STALLED, TRUE, why, message, g);
        self.conditions.remove(condition::RECONCILING);
    }

    pub fn status(&self) -> crate::api::stack::StackStatus {
        crate::api::stack::StackStatus {
            outputs: self.outputs.clone(),
            last_update: self.last_update.clone(),
            observed_generation: self.observed_generation,
            observed_reconcile_request: self.observed_reconcile_request.clone(),
            conditions: Some(self.conditions.0.clone()),
            current_update: self.current_update.clone(),
            project_info: self.project_info.clone(),
        }
    }

    /// The status apply: every field this manager owns, so leaving one out clears it.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "pulumi.com/v1",
            "kind": "Stack",
            "status": self.status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::StackSpecV1;

    #[test]
    fn each_shape_clears_the_others() {
        let mut d = Draft::new(&Stack::new("s", StackSpecV1::default()));
        d.stalled(reason::SPEC_INVALID, "bad");
        assert!(d.conditions.is_true(condition::STALLED));
        assert_eq!(
            d.conditions.reason(condition::READY),
            Some(reason::NOT_READY_STALLED)
        );
        d.reconciling(reason::STACK_PROCESSING, "stack is being processed");
        assert!(d.conditions.get(condition::STALLED).is_none());
        assert!(d.conditions.is_true(condition::RECONCILING));
        d.ready();
        assert!(d.conditions.is_true(condition::READY));
        assert_eq!(d.conditions.0.len(), 1);
        let body = d.body();
        assert_eq!(
            body["status"]["conditions"][0]["reason"],
            "ProcessingCompleted"
        );
        assert!(body["status"]["currentUpdate"].is_null());
    }
}
