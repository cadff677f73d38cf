//! End-to-end checks of the repository as a whole (images, manifests); the local control plane
//! arrives with issue 4.

pub mod schema_check;
