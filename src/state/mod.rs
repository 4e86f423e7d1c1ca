//! Durable state under the state directory: run folders with their snapshot, the
//! journal and per-host logs.

pub mod journal;
pub mod run_dir;
