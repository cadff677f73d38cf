//! The API: PKO v2's four kinds, field for field, plus the few documented additions, and the
//! names every part of the product shares.

pub mod crd;
mod list_markers;
#[macro_use]
mod lenient;
pub mod names;
pub mod program;
pub mod schema;
pub mod stack;
pub mod stack_spec;
pub mod update;
pub mod workspace;
