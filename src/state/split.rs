//! A run split between controllers by region (`--regions`), as the state backends show
//! it to the rest of pony: the other controllers' progress a controller follows
//! ([`SplitFeed`]), the controllers it finds lost, and the region leases and controller
//! parts `pony status` shows. Backend-neutral: a backend that can share a run fills
//! them (`state/pg/split.rs`), the scheduler (`exec/regions.rs`) only reads them.

use super::journal::Record;
use std::collections::HashMap;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

/// The other controllers' progress in a split run, as a backend's reader feeds it to
/// this controller's scheduler. Dropping it stops the reader.
pub struct SplitFeed {
    /// Final records of the other regions' tasks by node, as the shared journal has them
    /// (latest wins); the reader sends a new map whenever results arrive.
    pub results: watch::Receiver<HashMap<usize, Record>>,
    /// The other controllers as they are lost, each once.
    pub losses: UnboundedReceiver<ControllerLoss>,
    /// The reader's handle: dropping it stops the reading.
    pub reader: Box<dyn Send + Sync>,
}

/// Another controller of the run whose region leases expired: it died, was cut off from
/// the database, or stopped with work left. Its regions go on only once `pony resume RUN
/// --regions …` takes them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerLoss {
    pub controller: String,
    pub machine: String,
    pub pid: i32,
    /// Its regions, by name, sorted.
    pub regions: Vec<String>,
}

/// One region lease as read, for `pony status`.
#[derive(Debug, Clone)]
pub struct RegionRow {
    pub region: String,
    pub controller: String,
    pub machine: String,
    pub pid: i32,
    pub live: bool,
    /// The holding controller's token: a takeover replaces it.
    pub holder: String,
}

/// One controller's part of a split run, as `pony status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControllerPart {
    pub controller: String,
    /// The regions whose tasks it journaled, in inventory order.
    pub regions: Vec<String>,
    pub started: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// `live` while it holds a region lease, `expired` when its lease ran out (it died or
    /// was cut off: `pony resume RUN --regions …` takes its regions over), `left` once it
    /// gave its regions back.
    pub lease: &'static str,
}
