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

use super::task::TaskRun;
use crate::events::Event;
use crate::plan::Plan;
use crate::state::journal::Record;
use crate::state::pg::PgStore;
use crate::state::replay::TaskState;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the shared journal is read for the other controllers' results.
pub const POLL: Duration = Duration::from_millis(100);

/// This controller's part of a split run.
pub struct Split {
    /// Per region of the inventory (by index): whether this controller works on it.
    local: Vec<bool>,
    local_names: HashSet<String>,
    /// Final records of tasks by node, as the shared journal has them (latest wins).
    results: Arc<Mutex<HashMap<usize, Record>>>,
    changed: tokio::sync::watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
}

impl Split {
    /// Starts reading the shared journal of `run_id` for the tasks of regions other than
    /// `regions` (names).
    /// `after`: the journal's last `seq` of the run before this controller read it
    /// (its replay holds what came before; results from then on are new).
    pub fn start(
        plan: &Plan,
        regions: &[String],
        store: PgStore,
        run_id: String,
        after: i64,
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
        let (shared, stopping) = (results.clone(), stop.clone());
        std::thread::Builder::new()
            .name("pony-regions".into())
            .spawn(move || poll(store, run_id, after, shared, notify, stopping))?;
        Ok(Split {
            local,
            local_names: regions.iter().cloned().collect(),
            results,
            changed,
            stop,
        })
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

/// The reading thread: every [`POLL`], the journal's new `task_finished` rows.
fn poll(
    store: PgStore,
    run_id: String,
    mut after: i64,
    results: Arc<Mutex<HashMap<usize, Record>>>,
    notify: tokio::sync::watch::Sender<u64>,
    stop: Arc<AtomicBool>,
) {
    let mut client = None;
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = store
                .connect()
                .map_err(|e| tracing::warn!("reading the shared journal: {e}"))
                .ok();
        }
        if let Some(c) = client.as_mut() {
            let rows = c.query(
                "SELECT seq, record::text FROM journal
                 WHERE run_id = $1 AND seq > $2 AND record->>'type' = 'task_finished'
                 ORDER BY seq",
                &[&run_id, &after],
            );
            match rows {
                Ok(rows) if !rows.is_empty() => {
                    let mut found = results.lock().unwrap_or_else(|e| e.into_inner());
                    for row in rows {
                        after = row.get(0);
                        let text: String = row.get(1);
                        // A task killed by its controller's second Ctrl-C has no result:
                        // whoever resumes its region runs it again.
                        if let Ok(record @ Record::TaskFinished { node, state, .. }) =
                            serde_json::from_str::<Record>(&text)
                        {
                            if state != TaskState::Interrupted {
                                found.insert(node, record);
                            }
                        }
                    }
                    drop(found);
                    rounds += 1;
                    if notify.send(rounds).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("reading the shared journal: {e}; reconnecting");
                    client = None;
                }
            }
        }
        std::thread::sleep(POLL);
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
