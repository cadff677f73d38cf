//! The engine operations' command lines, from the protocol's request messages (pure, so the
//! mapping of every request field is tested without running anything).

use crate::proto::{DestroyRequest, PreviewRequest, RefreshRequest, UpRequest};

/// Identifies the operator in the backend's update metadata (`--exec-agent`).
pub const EXEC_AGENT: &str = concat!("pulumi-flux-operator/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Preview,
    Up,
    Refresh,
    Destroy,
}

impl Kind {
    pub fn verb(self) -> &'static str {
        match self {
            Kind::Preview => "preview",
            Kind::Up => "up",
            Kind::Refresh => "refresh",
            Kind::Destroy => "destroy",
        }
    }
}

#[derive(Default)]
struct Flags(Vec<String>);

impl Flags {
    fn flag(&mut self, name: &str, on: Option<bool>) {
        if on == Some(true) {
            self.0.push(format!("--{name}"));
        }
    }
    fn value(&mut self, name: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.0.push(format!("--{name}={v}"));
        }
    }
    fn each(&mut self, name: &str, values: &[String]) {
        for v in values {
            self.0.push(format!("--{name}={v}"));
        }
    }
    fn parallel(&mut self, n: Option<i32>) {
        if let Some(n) = n.filter(|n| *n > 0) {
            self.0.push(format!("--parallel={n}"));
        }
    }
    fn run_program(&mut self, v: Option<bool>) {
        if let Some(v) = v {
            self.0.push(format!("--run-program={v}"));
        }
    }
}

fn head(kind: Kind, debug: &[String]) -> Flags {
    head_as(kind, kind != Kind::Preview, debug)
}

/// The verb, then `--yes --skip-preview` for an operation that changes things (`changes`).
fn head_as(kind: Kind, changes: bool, debug: &[String]) -> Flags {
    let mut f = Flags::default();
    f.0.push(kind.verb().to_string());
    if changes {
        f.0.push("--yes".into());
        f.0.push("--skip-preview".into());
    }
    f.0.extend(debug.iter().cloned());
    f.0.push("--exec-kind=auto.local".into());
    f.0.push(format!("--exec-agent={EXEC_AGENT}"));
    f
}

fn tail(mut f: Flags, stack: &str) -> Vec<String> {
    f.0.push("--stack".into());
    f.0.push(stack.to_string());
    f.0
}

pub fn preview(r: &PreviewRequest, stack: &str, debug: &[String]) -> Vec<String> {
    let mut f = head(Kind::Preview, debug);
    f.0.push("--diff".into());
    f.parallel(r.parallel);
    f.value("message", r.message.as_deref());
    f.flag("expect-no-changes", r.expect_no_changes);
    f.each("replace", &r.replace);
    f.each("target", &r.target);
    f.flag("target-dependents", r.target_dependents);
    f.flag("refresh", r.refresh);
    tail(f, stack)
}

pub fn up(r: &UpRequest, stack: &str, debug: &[String]) -> Vec<String> {
    let mut f = head(Kind::Up, debug);
    f.0.push("--diff".into());
    f.0.push("--suppress-progress".into());
    f.parallel(r.parallel);
    f.value("message", r.message.as_deref());
    f.flag("expect-no-changes", r.expect_no_changes);
    f.each("replace", &r.replace);
    f.each("target", &r.target);
    f.flag("target-dependents", r.target_dependents);
    f.flag("refresh", r.refresh);
    f.flag("continue-on-error", r.continue_on_error);
    tail(f, stack)
}

pub fn refresh(r: &RefreshRequest, stack: &str, debug: &[String]) -> Vec<String> {
    // A preview-only refresh is a preview: the CLI refuses `--skip-preview` with it, and
    // there is nothing to say yes to.
    let preview_only = r.preview_only == Some(true);
    let mut f = head_as(Kind::Refresh, !preview_only, debug);
    f.flag("preview-only", r.preview_only);
    f.parallel(r.parallel);
    f.value("message", r.message.as_deref());
    f.flag("expect-no-changes", r.expect_no_changes);
    f.each("target", &r.target);
    f.run_program(r.run_program);
    tail(f, stack)
}

/// `remove` is not a flag here: the stack is removed (`stack rm`) after the summary is read,
/// as the Automation API does.
pub fn destroy(r: &DestroyRequest, stack: &str, debug: &[String]) -> Vec<String> {
    let mut f = head(Kind::Destroy, debug);
    f.parallel(r.parallel);
    f.value("message", r.message.as_deref());
    f.each("target", &r.target);
    f.flag("target-dependents", r.target_dependents);
    f.flag("refresh", r.refresh);
    f.flag("continue-on-error", r.continue_on_error);
    f.run_program(r.run_program);
    tail(f, stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_maps_every_request_field() {
        let r = UpRequest {
            parallel: Some(4),
            message: Some("New commit detected".into()),
            expect_no_changes: Some(true),
            replace: vec!["urn:a".into()],
            target: vec!["urn:b".into(), "urn:c".into()],
            target_dependents: Some(true),
            policy_pack: vec![],
            refresh: Some(true),
            continue_on_error: Some(true),
            // Not a flag: the agent acts on it before the `up` (recovery.rs).
            pending_operations: Some(crate::proto::PendingOperationsPolicy::Refresh as i32),
            // Not a flag here either: the server writes it to a file (plan.rs).
            plan: None,
        };
        let args = up(&r, "dev", &["-v=3".into()]);
        assert_eq!(
            args,
            [
                "up",
                "--yes",
                "--skip-preview",
                "-v=3",
                "--exec-kind=auto.local",
                &format!("--exec-agent={EXEC_AGENT}"),
                "--diff",
                "--suppress-progress",
                "--parallel=4",
                "--message=New commit detected",
                "--expect-no-changes",
                "--replace=urn:a",
                "--target=urn:b",
                "--target=urn:c",
                "--target-dependents",
                "--refresh",
                "--continue-on-error",
                "--stack",
                "dev",
            ]
        );
    }

    #[test]
    fn unset_fields_add_nothing_and_preview_never_says_yes() {
        let args = preview(&PreviewRequest::default(), "org/p/dev", &[]);
        assert_eq!(
            args,
            [
                "preview",
                "--exec-kind=auto.local",
                &format!("--exec-agent={EXEC_AGENT}"),
                "--diff",
                "--stack",
                "org/p/dev"
            ]
        );
        let r = RefreshRequest {
            parallel: Some(0),
            run_program: Some(false),
            ..Default::default()
        };
        assert!(refresh(&r, "s", &[]).contains(&"--run-program=false".to_string()));
        let check = RefreshRequest {
            preview_only: Some(true),
            ..Default::default()
        };
        assert_eq!(
            refresh(&check, "s", &[]),
            [
                "refresh",
                "--exec-kind=auto.local",
                &format!("--exec-agent={EXEC_AGENT}"),
                "--preview-only",
                "--stack",
                "s"
            ],
            "the CLI refuses --skip-preview with --preview-only"
        );
        assert!(
            !refresh(&r, "s", &[])
                .iter()
                .any(|a| a.starts_with("--parallel"))
        );
    }

    #[test]
    fn destroy_never_passes_remove_as_a_flag() {
        let r = DestroyRequest {
            remove: Some(true),
            run_program: Some(true),
            ..Default::default()
        };
        let args = destroy(&r, "s", &[]);
        assert!(args.iter().all(|a| !a.contains("remove")), "{args:?}");
        assert!(args.contains(&"--run-program=true".to_string()));
        assert_eq!(&args[..3], ["destroy", "--yes", "--skip-preview"]);
    }
}
