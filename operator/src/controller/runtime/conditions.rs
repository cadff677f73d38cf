//! Status conditions (`metav1.Condition`), kept the way `meta.SetStatusCondition` keeps them:
//! the transition time changes only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// A list of conditions with set/remove/find.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions(pub Vec<Condition>);

impl Conditions {
    pub fn from(existing: Option<&Vec<Condition>>) -> Conditions {
        Conditions(existing.cloned().unwrap_or_default())
    }

    pub fn get(&self, type_: &str) -> Option<&Condition> {
        self.0.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.get(type_).is_some_and(|c| c.status == TRUE)
    }

    pub fn reason(&self, type_: &str) -> Option<&str> {
        self.get(type_).map(|c| c.reason.as_str())
    }

    /// Sets a condition; returns whether anything changed.
    pub fn set(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) -> bool {
        let now = Time(jiff::Timestamp::now());
        if let Some(c) = self.0.iter_mut().find(|c| c.type_ == type_) {
            let before = c.clone();
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = now;
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
            return *c != before;
        }
        self.0.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now,
        });
        true
    }

    pub fn remove(&mut self, type_: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|c| c.type_ != type_);
        self.0.len() != before
    }

    pub fn into_vec(self) -> Vec<Condition> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut c = Conditions::default();
        assert!(c.set("Ready", FALSE, "A", "a", Some(1)));
        let t0 = c.get("Ready").expect("set").last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(c.set("Ready", FALSE, "B", "b", Some(1)));
        assert_eq!(c.get("Ready").expect("set").last_transition_time, t0);
        assert!(!c.set("Ready", FALSE, "B", "b", Some(1)), "no change");
        assert!(c.set("Ready", TRUE, "Ok", "", Some(2)));
        assert_ne!(c.get("Ready").expect("set").last_transition_time, t0);
        assert!(c.is_true("Ready"));
        assert!(c.remove("Ready"));
        assert!(!c.remove("Ready"));
    }
}
