//! Update plans on disk for the CLI: where `pulumi preview --save-plan` writes one, and where
//! the plan an `up` is constrained to (`pulumi up --plan`) is put for it to read. Each lives
//! in a directory of its own that only this user can read (a plan holds the stack's config,
//! its secrets encrypted), removed when the operation is done with it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest plan returned: the operator keeps it in a Secret (1 MiB in all), beside its
/// metadata.
pub const MAX_PLAN_BYTES: usize = 900 * 1024;

static PLANS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot prepare the update plan's file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the update plan is {0} bytes, more than the {MAX_PLAN_BYTES} a Secret can hold with \
         its metadata; approval cannot be used for a stack this large"
    )]
    TooLarge(usize),
}

/// A plan file in a private directory, removed on drop.
#[derive(Debug)]
pub struct PlanFile {
    dir: PathBuf,
}

impl PlanFile {
    fn new() -> Result<PlanFile, PlanError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "pulumi-agent-plan-{}-{}",
            std::process::id(),
            PLANS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PlanFile { dir })
    }

    /// Where a preview is to save its plan.
    pub fn for_preview() -> Result<PlanFile, PlanError> {
        PlanFile::new()
    }

    /// `plan` written for an `up` to read.
    pub fn holding(plan: &[u8]) -> Result<PlanFile, PlanError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let f = PlanFile::new()?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(f.path())?
            .write_all(plan)?;
        Ok(f)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("plan.json")
    }

    /// The plan the preview saved.
    pub fn read(&self) -> Result<Vec<u8>, PlanError> {
        let bytes = std::fs::read(self.path())?;
        if bytes.len() > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// `argv` with the flag that points the CLI at this file (`save-plan` or `plan`).
    pub fn flag(&self, argv: &mut Vec<String>, name: &str) {
        argv.push(format!("--{name}={}", self.path().display()));
    }
}

impl Drop for PlanFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn a_plan_is_private_and_gone_when_dropped() {
        let f = PlanFile::holding(b"{\"manifest\":{}}").expect("written");
        let dir = f.path().parent().map(Path::to_path_buf).expect("dir");
        assert!(dir.display().to_string().contains("pulumi-agent-plan-"));
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&f.path())), (0o700, 0o600));
        assert_eq!(f.read().expect("read"), b"{\"manifest\":{}}");
        let mut argv = vec!["up".to_string()];
        f.flag(&mut argv, "plan");
        assert_eq!(argv[1], format!("--plan={}", f.path().display()));
        drop(f);
        assert!(!dir.exists());
    }

    #[test]
    fn a_plan_too_large_for_a_secret_says_so() {
        let f = PlanFile::holding(&vec![b' '; MAX_PLAN_BYTES + 1]).expect("written");
        let e = f.read().expect_err("too large").to_string();
        assert!(e.contains("more than the 921600 a Secret can hold"), "{e}");
    }
}
