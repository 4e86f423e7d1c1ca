//! A run split between controllers by region (`--regions`): which regions this
//! controller works on, and the outcomes of the other regions' tasks, read from the
//! shared journal.
//!
//! Every controller runs the whole plan. A task of a region it does not own is *remote*:
//! it is never started here; the scheduler waits for its `task_finished` record, which
//! the owning controller commits to the database, and then goes on exactly as if the
//! task had run here (its dependents, the wave's gate, the budgets and `rollback-all`
//! see it). So wave barriers hold across controllers (a gate waits for every region's
//! tasks of its wave), a `per: run` step runs once (on its host's controller; the others
//! read its result and captures), and a failure counts in every controller's budgets.
//! Events of remote hosts are not emitted here: their owner journals them.
//!
//! The records are read by polling the journal every [`POLL`] on one connection per
//! controller: simpler than LISTEN/NOTIFY (no channel per run, nothing missed while
//! reconnecting), and one indexed query per tenth of a second per controller.
//!
//! The same thread watches the other controllers' region leases every
//! [`LEASE_ROUNDS`] polls: a controller whose leases expired (it died, was cut off, or
//! stopped with work left) is *lost*, and is reported once to the scheduler
//! ([`Split::take_losses`]), which waits for its regions or stops by
//! `strategy.on_controller_loss`.

use super::task::TaskRun;
use crate::events::Event;
use crate::plan::Plan;
use crate::playbook::OnControllerLoss;
use crate::state::journal::Record;
use crate::state::pg::regions::RegionRow;
use crate::state::pg::PgStore;
use crate::state::replay::TaskState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// How often the shared journal is read for the other controllers' results.
pub const POLL: Duration = Duration::from_millis(100);

/// The other controllers' leases are read every this many polls (once a second): a lost
/// controller is noticed at most one lease and a second after its last renewal.
pub const LEASE_ROUNDS: u64 = 10;

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

/// This controller's part of a split run.
pub struct Split {
    /// Per region of the inventory (by index): whether this controller works on it.
    local: Vec<bool>,
    local_names: HashSet<String>,
    /// Final records of tasks by node, as the shared journal has them (latest wins).
    results: Arc<Mutex<HashMap<usize, Record>>>,
    changed: tokio::sync::watch::Receiver<u64>,
    /// Lost controllers, for the scheduler (taken once).
    losses: Mutex<Option<UnboundedReceiver<ControllerLoss>>>,
    on_loss: OnControllerLoss,
    stop: Arc<AtomicBool>,
}

impl Split {
    /// Starts reading the shared journal of `run_id` for the tasks of regions other than
    /// `regions` (names).
    /// `after`: the journal's last `seq` of the run before this controller read it
    /// (its replay holds what came before; results from then on are new). `on_loss`:
    /// what this controller does when another one is lost.
    pub fn start(
        plan: &Plan,
        regions: &[String],
        store: PgStore,
        run_id: String,
        after: i64,
        on_loss: OnControllerLoss,
    ) -> std::io::Result<Split> {
        let local: Vec<bool> = plan
            .inventory
            .regions
            .iter()
            .map(|r| regions.contains(&r.name))
            .collect();
        let results: Arc<Mutex<HashMap<usize, Record>>> = Arc::default();
        let (notify, changed) = tokio::sync::watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let (lost, losses) = tokio::sync::mpsc::unbounded_channel();
        let reader = Reader {
            store,
            run_id,
            after,
            results: results.clone(),
            notify,
            watch: LossWatch::new(regions),
            lost,
        };
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("pony-regions".into())
            .spawn(move || reader.poll(stopping))?;
        Ok(Split {
            local,
            local_names: regions.iter().cloned().collect(),
            results,
            changed,
            losses: Mutex::new(Some(losses)),
            on_loss,
            stop,
        })
    }

    /// The other controllers as they are lost, once each; `None` once taken.
    pub fn take_losses(&self) -> Option<UnboundedReceiver<ControllerLoss>> {
        self.losses.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// What this controller does when another one is lost.
    pub fn on_loss(&self) -> OnControllerLoss {
        self.on_loss
    }

    /// Whether a remote task's result has been read from the shared journal (its
    /// [`Split::outcome`] resolves without waiting for anyone).
    pub fn has_result(&self, node: usize) -> bool {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&node)
    }

    /// Whether this controller works on the region (by index).
    pub fn is_local(&self, region: usize) -> bool {
        self.local.get(region).copied().unwrap_or(false)
    }

    /// Whether the event is about a host of another controller's region: its owner
    /// emits and journals it, not this controller.
    pub fn concerns_remote(&self, event: &Event) -> bool {
        let region = match event {
            Event::TaskStarted { task }
            | Event::TaskFinished { task, .. }
            | Event::TaskSkipped { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskInterrupted { task, .. }
            | Event::RollbackTaskStarted { task }
            | Event::RollbackNotAttempted { task, .. }
            | Event::RollbackTask { task, .. } => &task.region,
            Event::HostFinished { region, .. } => region,
            _ => return false,
        };
        !self.local_names.contains(region)
    }

    /// The result of a remote task, once its owner journaled it.
    pub fn outcome(&self, node: usize) -> impl std::future::Future<Output = TaskRun> {
        let results = self.results.clone();
        let mut changed = self.changed.clone();
        async move {
            loop {
                let found = results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&node)
                    .cloned();
                if let Some(record) = found {
                    return run_of(&record);
                }
                if changed.changed().await.is_err() {
                    return TaskRun::not_started("the shared journal is no longer read".into());
                }
            }
        }
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A remote task's journaled result, as the scheduler takes a finished task.
fn run_of(record: &Record) -> TaskRun {
    let Record::TaskFinished {
        state,
        exit_code,
        duration_ms,
        captures,
        output_tail,
        error,
        changed,
        ..
    } = record
    else {
        return TaskRun::not_started("not a task result".into());
    };
    let mut run = TaskRun::not_started(String::new());
    run.error = error.clone();
    run.ok = matches!(state, TaskState::Succeeded | TaskState::Skipped);
    run.changed = *changed;
    run.reached = *changed;
    run.exit_code = *exit_code;
    run.duration = Duration::from_millis(*duration_ms);
    run.captured = captures.first().cloned();
    run.stdout = output_tail.clone().into_bytes();
    run.attempts = 1;
    if *state == TaskState::Skipped {
        run.skipped_reason = Some(error.clone().unwrap_or_else(|| "skipped".into()));
    }
    run
}

/// The reading thread's state: where it is in the shared journal, and who is lost.
/// The task results committed since the last `seq` read.
const NEW_RESULTS: &str = "SELECT seq, record::text FROM journal
     WHERE run_id = $1 AND seq > $2 AND record->>'type' = 'task_finished'
     ORDER BY seq";

struct Reader {
    store: PgStore,
    run_id: String,
    /// The last `seq` read.
    after: i64,
    results: Arc<Mutex<HashMap<usize, Record>>>,
    notify: tokio::sync::watch::Sender<u64>,
    watch: LossWatch,
    lost: UnboundedSender<ControllerLoss>,
}

impl Reader {
    /// Every [`POLL`], the journal's new `task_finished` rows; every [`LEASE_ROUNDS`]
    /// polls, the other controllers' leases.
    fn poll(mut self, stop: Arc<AtomicBool>) {
        let mut connection = None;
        let mut rounds = 0u64;
        while !stop.load(Ordering::Relaxed) {
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
            std::thread::sleep(POLL);
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
            match crate::state::pg::regions::rows(client, &self.run_id) {
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
        let mut found = self.results.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            self.after = row.get(0);
            let text: String = row.get(1);
            // A task killed by its controller's second Ctrl-C has no result: whoever
            // resumes its region runs it again.
            if let Ok(record @ Record::TaskFinished { node, state, .. }) =
                serde_json::from_str::<Record>(&text)
            {
                if state != TaskState::Interrupted {
                    found.insert(node, record);
                }
            }
        }
        drop(found);
        // Every receiver is the split's own or a waiting task's: the split outlives them.
        self.notify.send_modify(|version| *version += 1);
        Ok(())
    }
}

/// The inventory's regions that `globs` names: globs separated by `,`, each `!`-prefixed
/// one excluding (`'!cn-*'` is every region but those). Naming none is an error.
pub fn select(plan: &Plan, globs: &str) -> Result<Vec<String>, crate::diag::Diagnostics> {
    use crate::diag::Diagnostic;
    let place = std::path::Path::new("--regions");
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for part in globs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (negated, text) = match part.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, part),
        };
        let pattern = glob::Pattern::new(text).map_err(|e| {
            Diagnostic::new(place, format!("bad glob `{text}`: {e}"))
                .hint("give region names or shell globs, e.g. 'cn-*' or '!cn-*'")
        })?;
        if negated {
            exclude.push(pattern);
        } else {
            include.push(pattern);
        }
    }
    let regions = &plan.inventory.regions;
    let chosen: Vec<String> = regions
        .iter()
        .map(|r| r.name.clone())
        .filter(|name| include.is_empty() || include.iter().any(|p| p.matches(name)))
        .filter(|name| !exclude.iter().any(|p| p.matches(name)))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        return Err(Diagnostic::new(
            place,
            format!(
                "`{globs}` names no region of inventory `{}`",
                plan.inventory.name
            ),
        )
        .hint(format!("regions are: {}", names.join(", ")))
        .into());
    }
    Ok(chosen)
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
