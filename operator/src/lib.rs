//! Shared names and contracts of the operator. The controllers and the agent arrive with
//! issues 3, 6 and 7; until then this crate holds only what the `fetch` side already relies on.
