//! The operator: API types and generated CRDs today; controllers and the agent to come
//! (issues 6 and 7).

pub mod api;
pub mod rbac;
