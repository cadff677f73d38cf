//! Status conditions (`metav1.Condition`), kept the way `meta.SetStatusCondition` keeps them:
//! the transition time changes only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::schema::MAX_CONDITION_MESSAGE;

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

    /// Sets a condition; returns whether anything changed. The reason and message are made
    /// to fit what the CRDs admit (as `metav1.Condition`), since a status the apiserver
    /// refuses would never be written.
    pub fn set(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) -> bool {
        let reason = &admissible_reason(reason);
        let message = &admissible_message(message);
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

/// A reason as `metav1.Condition` admits it (a letter, then letters, digits, `_`, `,`, `:`,
/// not ending in `,` or `:`; at most 1024): ours are constants that are; anything else is
/// reduced to its admissible characters, or `Unknown`.
fn admissible_reason(reason: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':');
    let kept: String = reason
        .chars()
        .filter(|c| ok(*c))
        .skip_while(|c| !c.is_ascii_alphabetic())
        .take(1024)
        .collect();
    let kept = kept.trim_end_matches([',', ':']);
    if kept.is_empty() {
        UNKNOWN.to_string()
    } else {
        kept.to_string()
    }
}

/// A message as the CRDs admit it: at most [`MAX_CONDITION_MESSAGE`] characters, its head
/// kept (where a failure says what it is) and the cut said.
fn admissible_message(message: &str) -> std::borrow::Cow<'_, str> {
    const CUT: &str = " [... truncated]";
    if message.chars().count() <= MAX_CONDITION_MESSAGE {
        return message.into();
    }
    let keep = MAX_CONDITION_MESSAGE - CUT.chars().count();
    let mut out: String = message.chars().take(keep).collect();
    out.push_str(CUT);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_messages_are_made_admissible() {
        assert_eq!(admissible_reason("UpdateFailed"), "UpdateFailed");
        assert_eq!(admissible_reason("a:b,c_1"), "a:b,c_1");
        assert_eq!(admissible_reason("1 bad-reason!:"), "badreason");
        assert_eq!(admissible_reason(""), "Unknown");
        assert_eq!(admissible_reason("--"), "Unknown");
        assert_eq!(admissible_reason(&"R".repeat(2000)).len(), 1024);
        let long = "é".repeat(MAX_CONDITION_MESSAGE + 10);
        let m = admissible_message(&long);
        assert_eq!(m.chars().count(), MAX_CONDITION_MESSAGE);
        assert!(m.starts_with("éé") && m.ends_with("[... truncated]"));
        assert_eq!(admissible_message("short"), "short");
        let mut c = Conditions::default();
        c.set("Ready", FALSE, "", &long, None);
        let set = c.get("Ready").expect("set");
        assert_eq!(
            (set.reason.as_str(), set.message.chars().count()),
            ("Unknown", MAX_CONDITION_MESSAGE)
        );
    }

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
