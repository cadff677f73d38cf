use super::*;
use crate::api::stack::StackSpecV1;
use crate::api::stack_spec::StackSpec;

fn stack(edit: impl FnOnce(&mut StackSpec)) -> Stack {
    let mut spec = StackSpec {
        stack: "dev".into(),
        ..Default::default()
    };
    edit(&mut spec);
    Stack::new("app", StackSpecV1(spec))
}

#[test]
fn at_most_one_source() {
    assert_eq!(one_source(&stack(|_| {})), Ok(()));
    assert_eq!(
        one_source(&stack(|s| s.project_repo = Some("https://x/y.git".into()))),
        Ok(())
    );
    let two = stack(|s| {
        s.project_repo = Some("https://x/y.git".into());
        s.program_ref = Some(Default::default());
    });
    assert_eq!(
        one_source(&two),
        Err(Stop::SpecInvalid {
            message: "set only one of spec.projectRepo, spec.fluxSource and spec.programRef".into(),
            retry: None,
        })
    );
}

#[test]
fn a_destroy_on_deletion_runs_from_the_last_project_alone() {
    let project = ProjectInfo {
        name: "proj".into(),
        runtime: "yaml".into(),
    };
    let destroying = stack(|s| s.destroy_on_finalize = Some(true));
    assert!(matches!(
        destroy_from_project(&destroying, true, Some(&project)),
        Some(Source::ProjectInfo(p)) if p == project
    ));
    // Not deleting, no project known, a preview Stack, or one that must run its program:
    // the source is resolved as usual.
    assert!(destroy_from_project(&destroying, false, Some(&project)).is_none());
    assert!(destroy_from_project(&destroying, true, None).is_none());
    for edit in [
        (|s: &mut StackSpec| s.preview = Some(true)) as fn(&mut StackSpec),
        |s| s.run_program = Some(true),
        |s| s.destroy_on_finalize = Some(false),
    ] {
        let s = stack(|s| {
            s.destroy_on_finalize = Some(true);
            edit(s);
        });
        assert!(destroy_from_project(&s, true, Some(&project)).is_none());
    }
}

#[test]
fn a_stack_without_a_spec_is_read_and_told_what_it_lacks() {
    // PKO's CRD and ours admit a Stack without spec; it reads as the default spec.
    let bare: Stack = serde_json::from_value(serde_json::json!({
        "apiVersion": "pulumi.com/v1", "kind": "Stack", "metadata": {"name": "app"},
    }))
    .expect("a Stack without spec is read");
    let Err(Stop::SpecInvalid { message, .. }) = named(&bare) else {
        panic!("a Stack without a stack name is invalid");
    };
    assert!(message.contains("spec.stack"), "{message}");
    assert_eq!(named(&stack(|_| {})), Ok(()));
}
