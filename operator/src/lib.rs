//! The operator: the API types and generated CRDs (`api`), the controllers (`controller`) and
//! the manager that runs them (`manager`), the agent that runs in workspace pods
//! (`agent`), and the protocol between them (`proto`).

pub mod agent;
pub mod api;
pub mod controller;
pub mod manager;
pub mod proto;
pub mod rbac;
mod verdicts;
