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
//! The results come from the state backend's reader ([`SplitFeed`]: for PostgreSQL,
//! `state/pg/split.rs`) through a watch channel; a controller whose leases expired (it
//! died, was cut off, or stopped with work left) is *lost*, and is reported once to the
//! scheduler ([`Split::take_losses`]), which waits for its regions or stops by
//! `strategy.on_controller_loss`.

use super::task::TaskRun;
use crate::events::Event;
use crate::plan::Plan;
use crate::playbook::OnControllerLoss;
use crate::state::journal::Record;
use crate::state::replay::TaskState;
use crate::state::split::{ControllerLoss, SplitFeed};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// This controller's part of a split run.
pub struct Split {
    /// Per region of the inventory (by index): whether this controller works on it.
    local: Vec<bool>,
    local_names: HashSet<String>,
    /// Final records of tasks by node, as the shared journal has them (latest wins).
    results: tokio::sync::watch::Receiver<HashMap<usize, Record>>,
    /// Lost controllers, for the scheduler (taken once).
    losses: Mutex<Option<UnboundedReceiver<ControllerLoss>>>,
    on_loss: OnControllerLoss,
    /// Dropped with the split: the backend's reader stops.
    _reader: Box<dyn Send + Sync>,
}

impl Split {
    /// This controller's part: `regions` (names) are its own, `feed` brings the other
    /// regions' results (the state backend's reader, [`crate::state::backend::Backend::follow_split`]).
    /// `on_loss`: what this controller does when another one is lost.
    pub fn start(
        plan: &Plan,
        regions: &[String],
        feed: SplitFeed,
        on_loss: OnControllerLoss,
    ) -> Split {
        let local: Vec<bool> = plan
            .inventory
            .regions
            .iter()
            .map(|r| regions.contains(&r.name))
            .collect();
        Split {
            local,
            local_names: regions.iter().cloned().collect(),
            results: feed.results,
            losses: Mutex::new(Some(feed.losses)),
            on_loss,
            _reader: feed.reader,
        }
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
        self.results.borrow().contains_key(&node)
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
        let mut results = self.results.clone();
        async move {
            loop {
                let found = results.borrow_and_update().get(&node).cloned();
                if let Some(record) = found {
                    return run_of(&record);
                }
                if results.changed().await.is_err() {
                    return TaskRun::not_started("the shared journal is no longer read".into());
                }
            }
        }
    }
}

/// A remote task's journaled result, as the scheduler takes a finished task.
fn run_of(record: &Record) -> TaskRun {
    let Record::TaskFinished {
        state,
        exit_code,
        duration_ms,
        record:
            crate::events::TaskRecord {
                captures,
                output_tail,
                error,
                changed,
                ..
            },
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
