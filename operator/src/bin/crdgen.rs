//! Writes the CRDs generated from the API types to `config/crd/bases` (or the directory given),
//! or prints them with `--stdout`.

use std::path::PathBuf;
use std::process::ExitCode;

use operator::api::crd;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--stdout") {
        for (_, c) in crd::all() {
            print!("{}", crd::to_yaml(&c));
        }
        return ExitCode::SUCCESS;
    }
    let dir = arg
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd/bases"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (file, c) in crd::all() {
        let path = dir.join(file);
        if let Err(e) = std::fs::write(&path, crd::to_yaml(&c)) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
