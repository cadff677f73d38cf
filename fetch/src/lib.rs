//! The `fetch` init container: turns a program source (a Flux artifact or a Git commit) into a
//! complete, verified program directory on the workspace pod's shared volume, or fails with a
//! message and an exit code that say why. See README.md, "fetch reference".

pub mod digest;
pub mod error;
pub mod flux;
pub mod git;
pub mod http;
pub mod report;
pub mod safe_path;
pub mod unpack;
pub mod vars;
pub mod workspace;
