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
    pub last_handled_reconcile_at: Option<String>,
    pub drift: Option<crate::api::stack::DriftStatus>,
    pub pending_plan: Option<crate::api::stack::PendingPlan>,
    pub applied_plan: Option<String>,
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
            last_handled_reconcile_at: s.last_handled_reconcile_at,
            drift: s.drift,
            pending_plan: s.pending_plan,
            applied_plan: s.applied_plan,
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

    /// `spec.suspend`: Ready keeps its status (what was deployed stays as it was) with the
    /// reason `Suspended`; nothing is in progress or stalled.
    pub fn suspended(&mut self) {
        let g = self.generation();
        let was = self
            .conditions
            .get(condition::READY)
            .map_or(FALSE, |c| if c.status == TRUE { TRUE } else { FALSE });
        let message = if was == TRUE {
            "reconciliation is suspended (spec.suspend); the last update succeeded"
        } else {
            "reconciliation is suspended (spec.suspend); the stack is not up to date"
        };
        self.conditions
            .set(condition::READY, was, reason::SUSPENDED, message, g);
        self.conditions.remove(condition::RECONCILING);
        self.conditions.remove(condition::STALLED);
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
            last_handled_reconcile_at: self.last_handled_reconcile_at.clone(),
            drift: self.drift.clone(),
            pending_plan: self.pending_plan.clone(),
            applied_plan: self.applied_plan.clone(),
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

    #[test]
    fn suspended_keeps_ready_as_it_was_with_its_own_reason() {
        let mut d = Draft::new(&Stack::new("s", StackSpecV1::default()));
        d.ready();
        d.suspended();
        let ready = d.conditions.get(condition::READY).expect("Ready").clone();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (TRUE, reason::SUSPENDED)
        );
        d.stalled(reason::SPEC_INVALID, "bad");
        d.suspended();
        assert_eq!(
            d.conditions
                .get(condition::READY)
                .map(|c| c.status.as_str()),
            Some(FALSE)
        );
        assert_eq!(d.conditions.0.len(), 1, "no Stalled, no Reconciling");
    }
}
