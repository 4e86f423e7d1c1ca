//! Durable state under the state directory: run folders with their snapshot, the
//! journal and per-host logs.

pub mod backend;
pub mod deadline;
pub mod journal;
pub mod local;
pub mod lock;
pub mod pg;
pub mod recorder;
pub mod replay;
pub mod run_dir;
pub mod runs;
pub mod snapshot;
pub mod split;
pub mod store;
