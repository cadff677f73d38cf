//! The agent's one operation slot: a second preview, up, refresh or destroy while one runs is
//! refused, so that a retry never runs beside an operation whose caller went away and which is
//! still stopping (a self-managed backend does not lock the stack against it).

use std::sync::{Arc, Mutex};

use tonic::Status;

use crate::agent::operation::Kind;

/// The slot: empty, or the operation under way.
#[derive(Default)]
pub(super) struct OneAtATime(Arc<Mutex<Option<Running>>>);

/// An operation under way.
#[derive(Debug, Clone, Copy)]
struct Running {
    kind: Kind,
    since: jiff::Timestamp,
}

/// Holds the one operation slot until dropped (when the operation's task ends).
pub(super) struct Slot(Arc<Mutex<Option<Running>>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut r) = self.0.lock() {
            *r = None;
        }
    }
}

impl OneAtATime {
    /// Takes the slot for `kind`, or says what holds it.
    pub(super) fn claim(&self, kind: Kind) -> Result<Slot, Status> {
        let mut running = self
            .0
            .lock()
            .map_err(|_| Status::internal("the operation slot is poisoned"))?;
        if let Some(r) = *running {
            return Err(busy(r, kind));
        }
        *running = Some(Running {
            kind,
            since: jiff::Timestamp::now(),
        });
        Ok(Slot(Arc::clone(&self.0)))
    }
}

/// Why `kind` was not started: `running` still holds the workspace.
fn busy(running: Running, kind: Kind) -> Status {
    Status::aborted(format!(
        "another operation ({}, started {}) is still running in this workspace pod; this {} \
         was not started and is tried again later",
        running.kind.verb(),
        running.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        kind.verb()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operation_at_a_time_and_the_slot_frees_when_it_ends() {
        let slot = OneAtATime::default();
        let up = slot.claim(Kind::Up).expect("free");
        let refused = slot.claim(Kind::Up).err().expect("taken");
        assert_eq!(refused.code(), tonic::Code::Aborted);
        assert!(
            refused
                .message()
                .starts_with("another operation (up, started "),
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("this up was not started"));
        drop(up);
        let destroy = slot.claim(Kind::Destroy).expect("free again");
        let refused = slot.claim(Kind::Preview).err().expect("taken");
        assert!(refused.message().contains("(destroy, started"));
        drop(destroy);
        assert!(slot.0.lock().expect("lock").is_none());
    }
}
