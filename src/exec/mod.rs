//! The executor: runs a sealed plan. [`scheduler`] is the sole owner of run state
//! (readiness, `max_unavailable` windows, failure budgets, gates, rollback); [`task`]
//! runs one task; [`hosts`] owns connections. The executor reports only through
//! [`crate::events::Event`]s and the journal; it never prints.

pub mod hosts;
pub mod probe;
pub mod scheduler;
pub mod task;

pub use scheduler::{run, ExecOptions, RunReport};
