//! Following the other controllers of a run split by region (`--regions`): a thread
//! reads the shared journal for their tasks' results and their region leases for
//! controllers lost, and feeds both to this controller's scheduler through channels
//! ([`SplitFeed`]).
//!
//! The records are read by polling the journal every [`POLL`] on one connection per
//! controller: simpler than LISTEN/NOTIFY (no channel per run, nothing missed while
//! reconnecting), and one indexed query per tenth of a second per controller. Between
//! polls the thread waits on its stop channel, so dropping the feed ends it at once.
//!
//! The same thread watches the other controllers' region leases every
//! [`LEASE_ROUNDS`] polls: a controller whose leases expired (it died, was cut off, or
//! stopped with work left) is *lost*, and is reported once.

use super::PgStore;
use crate::state::journal::Record;
use crate::state::replay::TaskState;
use crate::state::split::{ControllerLoss, RegionRow, SplitFeed};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How often the shared journal is read for the other controllers' results.
pub const POLL: Duration = Duration::from_millis(100);

/// The other controllers' leases are read every this many polls (once a second): a lost
/// controller is noticed at most one lease and a second after its last renewal.
pub const LEASE_ROUNDS: u64 = 10;

/// Starts reading the shared journal of `run_id` for the tasks of regions other than
/// `regions` (names). `after`: the journal's last `seq` of the run before this controller
/// read it (its replay holds what came before; results from then on are new).
pub fn follow(
    store: PgStore,
    run_id: String,
    after: i64,
    regions: &[String],
) -> std::io::Result<SplitFeed> {
    let (results, feed) = tokio::sync::watch::channel(HashMap::new());
    let (lost, losses) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = mpsc::channel::<()>();
    let reader = Reader {
        store,
        run_id,
        after,
        results,
        watch: LossWatch::new(regions),
        lost,
    };
    std::thread::Builder::new()
        .name("pony-regions".into())
        .spawn(move || reader.poll(stopped))?;
    Ok(SplitFeed {
        results: feed,
        losses,
        reader: Box::new(Mutex::new(stop)),
    })
}

/// Which other controllers are lost, each reported once: a controller is known by its
/// lease token, so one whose regions are taken over and lost again (a new token) is
/// reported again, and a region taken over (live again) is no longer lost.
#[derive(Debug, Default)]
pub struct LossWatch {
    local: HashSet<String>,
    reported: HashSet<String>,
}

impl LossWatch {
    pub fn new(local: &[String]) -> LossWatch {
        LossWatch {
            local: local.iter().cloned().collect(),
            reported: HashSet::new(),
        }
    }

    /// The controllers lost since the last look, given the run's region leases now.
    pub fn lost(&mut self, rows: &[RegionRow]) -> Vec<ControllerLoss> {
        let mut lost: BTreeMap<&str, ControllerLoss> = BTreeMap::new();
        for row in rows {
            if row.live || self.local.contains(&row.region) {
                continue;
            }
            lost.entry(&row.holder)
                .or_insert_with(|| ControllerLoss {
                    controller: row.controller.clone(),
                    machine: row.machine.clone(),
                    pid: row.pid,
                    regions: Vec::new(),
                })
                .regions
                .push(row.region.clone());
        }
        self.reported
            .retain(|holder| rows.iter().any(|r| &r.holder == holder));
        lost.into_iter()
            .filter(|(holder, _)| self.reported.insert(holder.to_string()))
            .map(|(_, mut loss)| {
                loss.regions.sort();
                loss
            })
            .collect()
    }
}

/// The task results committed since the last `seq` read.
const NEW_RESULTS: &str = "SELECT seq, record::text FROM journal
     WHERE run_id = $1 AND seq > $2 AND record->>'type' = 'task_finished'
     ORDER BY seq";

/// The reading thread's state: where it is in the shared journal, and who is lost.
struct Reader {
    store: PgStore,
    run_id: String,
    /// The last `seq` read.
    after: i64,
    results: tokio::sync::watch::Sender<HashMap<usize, Record>>,
    watch: LossWatch,
    lost: UnboundedSender<ControllerLoss>,
}

impl Reader {
    /// Every [`POLL`], the journal's new `task_finished` rows; every [`LEASE_ROUNDS`]
    /// polls, the other controllers' leases; until the feed is dropped (its stop sender
    /// with it).
    fn poll(mut self, stop: mpsc::Receiver<()>) {
        let mut connection = None;
        let mut rounds = 0u64;
        loop {
            if connection.is_none() {
                connection = self
                    .store
                    .connect()
                    .map_err(|e| e.to_string())
                    .and_then(|mut client| {
                        // Prepared once: each poll is then one round trip, not two.
                        let results = client.prepare(NEW_RESULTS).map_err(|e| e.to_string())?;
                        Ok((client, results))
                    })
                    .map_err(|e| tracing::warn!("reading the shared journal: {e}"))
                    .ok();
            }
            if let Some((client, results)) = connection.as_mut() {
                if !self.read_round(client, results, rounds) {
                    connection = None;
                }
            }
            rounds += 1;
            match stop.recv_timeout(POLL) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// One round; false when the connection failed.
    fn read_round(
        &mut self,
        client: &mut postgres::Client,
        results: &postgres::Statement,
        round: u64,
    ) -> bool {
        // The leases are read before the journal: a controller writes all its records
        // before its leases expire (it dies, or leaves with work left), so a loss seen
        // here comes with every result of its that the journal read below returns, and
        // the scheduler takes those results before it acts on the loss.
        let leases = if round.is_multiple_of(LEASE_ROUNDS) {
            match super::regions::rows(client, &self.run_id) {
                Ok(rows) => Some(rows),
                Err(e) => {
                    tracing::warn!("reading the region leases: {e}; reconnecting");
                    return false;
                }
            }
        } else {
            None
        };
        if let Err(e) = self.read_results(client, results) {
            tracing::warn!("reading the shared journal: {e}; reconnecting");
            return false;
        }
        for loss in leases
            .map(|rows| self.watch.lost(&rows))
            .unwrap_or_default()
        {
            let _ = self.lost.send(loss);
        }
        true
    }

    fn read_results(
        &mut self,
        client: &mut postgres::Client,
        results: &postgres::Statement,
    ) -> Result<(), postgres::Error> {
        let rows = client.query(results, &[&self.run_id, &self.after])?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut found = Vec::new();
        for row in rows {
            self.after = row.get(0);
            let text: String = row.get(1);
            // A task killed by its controller's second Ctrl-C has no result: whoever
            // resumes its region runs it again.
            if let Ok(record @ Record::TaskFinished { node, state, .. }) =
                serde_json::from_str::<Record>(&text)
            {
                if state != TaskState::Interrupted {
                    found.push((node, record));
                }
            }
        }
        // Sent even with no receiver left: the map is the feed's state, not a message.
        self.results.send_modify(|results| results.extend(found));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(region: &str, holder: &str, live: bool) -> RegionRow {
        RegionRow {
            region: region.into(),
            controller: format!("ctl-{holder}"),
            machine: "m".into(),
            pid: 7,
            live,
            holder: holder.into(),
        }
    }

    #[test]
    fn a_controller_is_lost_once_when_its_leases_expired_and_again_after_a_takeover_is_lost() {
        let mut watch = LossWatch::new(&["r1".to_string()]);
        // Our own expired region is the heartbeat's business; live ones are not lost.
        assert!(watch
            .lost(&[row("r1", "a", false), row("r2", "b", true)])
            .is_empty());
        let expired = [
            row("r1", "a", true),
            row("r3", "b", false),
            row("r2", "b", false),
        ];
        assert_eq!(
            watch.lost(&expired),
            [ControllerLoss {
                controller: "ctl-b".into(),
                machine: "m".into(),
                pid: 7,
                regions: vec!["r2".into(), "r3".into()],
            }]
        );
        assert!(watch.lost(&expired).is_empty(), "reported once");
        // r2 and r3 taken over by c: live again, not lost; c dies in turn: lost again.
        assert!(watch
            .lost(&[row("r2", "c", true), row("r3", "c", true)])
            .is_empty());
        let lost = watch.lost(&[row("r2", "c", false), row("r3", "c", false)]);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].controller, "ctl-c");
    }

    #[test]
    fn controllers_lost_together_are_reported_each() {
        let mut watch = LossWatch::new(&["r1".to_string()]);
        let lost = watch.lost(&[row("r2", "b", false), row("r3", "c", false)]);
        let names: Vec<&str> = lost.iter().map(|l| l.controller.as_str()).collect();
        assert_eq!(names, ["ctl-b", "ctl-c"]);
    }
}
