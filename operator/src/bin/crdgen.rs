//! Writes the CRDs generated from the API types to `config/crd/bases` and to the Helm chart's
//! `config/helm/pulumi-operator/crds` (or to the one directory given), or prints them with
//! `--stdout`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use operator::api::crd;

fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (file, c) in crd::all() {
        let path = dir.join(file);
        std::fs::write(&path, crd::to_yaml(&c))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--stdout") {
        for (_, c) in crd::all() {
            print!("{}", crd::to_yaml(&c));
        }
        return ExitCode::SUCCESS;
    }
    let dirs = match arg {
        Some(dir) => vec![PathBuf::from(dir)],
        None => crd::COMMITTED_DIRS
            .iter()
            .map(|d| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(d))
            .collect(),
    };
    for dir in dirs {
        if let Err(e) = write(&dir) {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
