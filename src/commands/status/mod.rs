//! `pony status [RUN]`: the state of a run (the latest without RUN) from its journal,
//! with the plan rebuilt from the run's snapshot to count what is still pending.
//!
//! Human output: a header, task counts per wave and per region, failed tasks with their
//! error and output tail, rollbacks, gates passed and what the run waits for (with the
//! command that goes on). `--output json` prints the same as one JSON object on one line.

use crate::events::RunOutcome;
use crate::exit::Exit;
use crate::hint::pony as hint;
use crate::plan::Plan;
use crate::report::OutputFormat;
use crate::settings::Settings;
use crate::state::backend::Access;
use crate::state::runs::{
    self, Activity, RollbackRecord, RunDetail, RunState, RunSummary, TaskStatus,
};
use crate::state::store::Store;
use serde::Serialize;
use std::io::Write;

pub mod eta;
mod human;
mod switches;

pub fn run(settings: &Settings, run: Option<&str>, check_hosts: bool) -> anyhow::Result<Exit> {
    let store = Store::open(&crate::commands::store_settings(settings), Access::Read)?;
    let id = match run {
        Some(run) => store.resolve(run).map_err(|e| {
            let hint = match e {
                runs::ResolveError::Ambiguous { .. } => "give more of the run id".to_string(),
                _ => format!("`{}` lists the runs", hint("history")),
            };
            anyhow::anyhow!("{e}\n  hint: {hint}")
        })?,
        None => store.list()?.into_iter().next().ok_or_else(|| {
            let note = store
                .empty_note()
                .map(|note| format!("\n  note: {note}"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "no runs under {}{note}\n  hint: start one with `pony deploy`, or pass --state-dir",
                store.place().display()
            )
        })?,
    };
    let detail = store.read(&id);
    let plan = runs::snapshot_plan(&detail.summary.path).map_err(|e| e.to_string());
    let mut report = Report::new(&detail, plan.as_ref().map_err(String::as_str));
    report.controllers = store.controller_parts(&id, plan.as_ref().ok());
    if !report.controllers.is_empty() {
        report.split(store.region_leases(&id));
    }
    if let Ok(plan) = &plan {
        if detail.summary.state != RunState::Running {
            report.switches = switches::Switches::of(&detail, plan);
        }
        if let (true, Some(switches)) = (check_hosts, report.switches.as_mut()) {
            switches.check(settings, plan, &id)?;
        }
    } else if check_hosts {
        anyhow::bail!(
            "--hosts: the run's plan does not rebuild from its snapshot, so which hosts to read is unknown"
        );
    }
    report.files_changed = crate::state::snapshot::Snapshot::load(&detail.summary.path)
        .map(|snapshot| snapshot.changed_files())
        .unwrap_or_default();
    let mut out = crate::term::Stdout;
    match settings.output {
        OutputFormat::Json => {
            serde_json::to_writer(&mut out, &report)?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Human => out.write_all(report.human().as_bytes())?,
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// Everything `pony status` shows; serialized as is for `--output json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    #[serde(flatten)]
    pub run: &'a RunSummary,
    pub tasks: runs::TaskBreakdown,
    /// Tasks whose last state is failed.
    pub failed: Vec<Failed<'a>>,
    /// Tasks started and not finished (running now, or when the controller stopped).
    pub running: Vec<&'a str>,
    /// Tasks journaled as interrupted (killed by a second Ctrl-C).
    pub interrupted: Vec<&'a str>,
    pub rollbacks: Rollbacks<'a>,
    pub gates_passed: &'a [String],
    /// Waves approved ahead of their gate (`pony approve RUN WAVE`) not passed yet.
    pub pre_approved: &'a [String],
    /// The wave whose failure stopped the rollout, and why.
    pub stopped_wave: Option<StoppedWave<'a>>,
    /// What the run waits for, if anything.
    pub waiting: Option<Waiting>,
    /// A running run's ETA from its journal (`eta.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<eta::Eta>,
    /// Commands from other shells (`pony pause|continue|abort|approve`), oldest first.
    pub controls: &'a [runs::ControlRecord],
    /// A run split by region (`--regions`): each controller's regions, tasks and lease.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<crate::state::split::ControllerPart>,
    /// A run split by region: the controllers holding a live lease now, each with its
    /// regions (the run has no one pid: each controller has its own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live_controllers: Vec<LiveController>,
    /// A run split by region: regions with tasks left that no live controller holds
    /// (never joined, or their controller was lost).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions_without_controller: Vec<String>,
    /// The run's files (playbook, inventory, template and upload sources) that differ on
    /// disk from the run's snapshot, which a resume or rollback uses.
    pub files_changed: Vec<crate::state::snapshot::FileChange>,
    /// A stopped run's hosts left in flight under a dead man's switch (and, with
    /// `--hosts`, what each shows now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switches: Option<switches::Switches>,
}

/// A controller of a split run holding a live lease.
#[derive(Debug, Serialize)]
pub struct LiveController {
    pub controller: String,
    pub pid: i32,
    pub machine: String,
    pub regions: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StoppedWave<'a> {
    pub wave: &'a str,
    pub reason: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Failed<'a> {
    pub label: &'a str,
    pub step: &'a str,
    /// The host, region or `run` the task ran for.
    pub target: &'a str,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: Option<u64>,
    pub output_tail: &'a str,
    /// Whether the task's rollback ran and succeeded (`None`: it did not run or is
    /// unfinished).
    pub rolled_back: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Rollbacks<'a> {
    pub ok: usize,
    pub failed: usize,
    /// Started and not finished.
    pub unfinished: usize,
    /// Not run because an earlier rollback of their host failed.
    pub not_attempted: usize,
    /// The failed, unfinished and not attempted ones.
    pub problems: Vec<&'a RollbackRecord>,
}

#[derive(Debug, Serialize)]
pub struct Waiting {
    /// Of a running run: `stopping` (an abort, an interrupt, a halt: hosts in flight
    /// finish), `rollback` (every touched host rolls back), `continue` (paused by `pony
    /// pause`), `soak` (a wave's `pause:`), `window` (a change window not open yet),
    /// `checks` (a gate's `verify:` checks before its approval question) or `approval`.
    /// Of a run that ended: `approval`, `failed_wave`, `resume` (stopped or interrupted)
    /// `attention` (failed, halted or rollback incomplete) or `controller` (a split run's
    /// region that no live controller holds).
    pub reason: String,
    /// The wave whose `approve:` gate holds the run.
    pub wave: Option<String>,
    pub message: String,
    /// Commands that go on from here.
    pub next: Vec<String>,
}

impl<'a> Report<'a> {
    pub fn new(detail: &'a RunDetail, plan: Result<&Plan, &str>) -> Report<'a> {
        let tasks = runs::count_tasks(detail, plan);
        let with_state = |state: TaskStatus| -> Vec<&'a str> {
            detail
                .tasks
                .iter()
                .filter(|t| t.state == state)
                .map(|t| t.label.as_str())
                .collect()
        };
        let rollback_of: std::collections::HashMap<&str, Option<bool>> = detail
            .rollbacks
            .iter()
            .map(|r| (r.label.as_str(), r.ok))
            .collect();
        let failed = detail
            .tasks
            .iter()
            .filter(|t| t.state == TaskStatus::Failed)
            .map(|t| {
                let (step, target) = t.label.rsplit_once('@').unwrap_or((&t.label, ""));
                Failed {
                    label: &t.label,
                    step,
                    target,
                    exit_code: t.exit_code,
                    error: t.error.as_deref(),
                    duration_ms: t.duration_ms,
                    output_tail: &t.output_tail,
                    rolled_back: rollback_of.get(t.label.as_str()).copied().flatten(),
                }
            })
            .collect();
        let rollbacks = Rollbacks {
            ok: detail
                .rollbacks
                .iter()
                .filter(|r| r.ok == Some(true))
                .count(),
            failed: detail
                .rollbacks
                .iter()
                .filter(|r| r.ok == Some(false))
                .count(),
            unfinished: detail
                .rollbacks
                .iter()
                .filter(|r| r.ok.is_none() && r.not_attempted.is_none())
                .count(),
            not_attempted: detail
                .rollbacks
                .iter()
                .filter(|r| r.not_attempted.is_some())
                .count(),
            problems: detail
                .rollbacks
                .iter()
                .filter(|r| r.ok != Some(true))
                .collect(),
        };
        let waiting = waiting(detail, plan.ok());
        let eta = eta::of(detail, plan.ok(), waiting.is_some());
        Report {
            run: &detail.summary,
            tasks,
            failed,
            running: with_state(TaskStatus::Running),
            interrupted: with_state(TaskStatus::Interrupted),
            rollbacks,
            gates_passed: &detail.gates_passed,
            pre_approved: &detail.pre_approved,
            stopped_wave: detail
                .stopped_wave
                .as_ref()
                .map(|(wave, reason)| StoppedWave { wave, reason }),
            waiting,
            eta,
            controls: &detail.controls,
            controllers: Vec::new(),
            live_controllers: Vec::new(),
            regions_without_controller: Vec::new(),
            files_changed: Vec::new(),
            switches: None,
        }
    }

    /// A run split by region, with its region leases: who works it now, and which
    /// regions with work left wait for a controller. A running run that waits for
    /// nothing else waits for those (never "nothing").
    fn split(&mut self, leases: Vec<crate::state::split::RegionRow>) {
        for row in leases.iter().filter(|r| r.live) {
            match self
                .live_controllers
                .iter_mut()
                .find(|c| c.controller == row.controller && c.pid == row.pid)
            {
                Some(known) => known.regions.push(row.region.clone()),
                None => self.live_controllers.push(LiveController {
                    controller: row.controller.clone(),
                    pid: row.pid,
                    machine: row.machine.clone(),
                    regions: vec![row.region.clone()],
                }),
            }
        }
        let held = |region: &str| leases.iter().any(|r| r.live && r.region == region);
        self.regions_without_controller = self
            .tasks
            .regions
            .iter()
            .filter(|g| g.counts.pending.unwrap_or(0) + g.counts.running > 0)
            .filter(|g| !held(&g.name))
            .map(|g| g.name.clone())
            .collect();
        if self.run.state != RunState::Running
            || self.waiting.is_some()
            || self.regions_without_controller.is_empty()
        {
            return;
        }
        let id = &self.run.run_id;
        let listed = self.regions_without_controller.join(",");
        // A region that had a controller (its lease expired) is taken over with
        // `resume --regions`; one that never had any is joined.
        let lost = |region: &String| leases.iter().any(|r| &r.region == region);
        let (next, done) = if self.regions_without_controller.iter().any(lost) {
            (
                hint(format_args!("resume {id} --regions {listed}")),
                "taken over",
            )
        } else {
            (hint(format_args!("join {id} --regions {listed}")), "joined")
        };
        let regions = &self.regions_without_controller;
        self.waiting = Some(Waiting {
            reason: "controller".into(),
            wave: None,
            message: format!(
                "for region{} {} to be {done} (no live controller holds {}; the run's other controllers wait for {} tasks)",
                if regions.len() == 1 { "" } else { "s" },
                regions.join(", "),
                if regions.len() == 1 { "it" } else { "them" },
                if regions.len() == 1 { "its" } else { "their" },
            ),
            next: vec![next],
        });
    }
}

/// The step every host of `wave` failed at, when each of them failed and all at the same
/// step; `None` otherwise (or without the plan to know the wave's hosts).
fn failed_alike<'d>(detail: &'d RunDetail, plan: Option<&Plan>, wave: &str) -> Option<&'d str> {
    let plan = plan?;
    let wave = plan.waves.iter().find(|w| w.name == wave)?;
    let hosts: std::collections::HashSet<&str> = wave
        .hosts
        .iter()
        .map(|&h| plan.inventory.hosts[h].name.as_str())
        .collect();
    let mut steps = std::collections::BTreeSet::new();
    let mut failed = std::collections::HashSet::new();
    for task in detail
        .tasks
        .iter()
        .filter(|t| t.state == TaskStatus::Failed)
    {
        let (step, target) = task.label.rsplit_once('@').unwrap_or((&task.label, ""));
        if hosts.contains(target) {
            steps.insert(step);
            failed.insert(target);
        }
    }
    let alike = !hosts.is_empty() && failed.len() == hosts.len() && steps.len() == 1;
    alike.then(|| steps.into_iter().next()).flatten()
}

/// What the run waits for and the commands that go on.
fn waiting(detail: &RunDetail, plan: Option<&Plan>) -> Option<Waiting> {
    let run = &detail.summary;
    let id = &run.run_id;
    let resume = |more: &str| hint(format_args!("resume {id}{more}"));
    let controller = format!(
        "pid {}",
        run.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
    );
    let waiting = |reason: &str, wave: Option<String>, message: String, next: Vec<String>| {
        Some(Waiting {
            reason: reason.into(),
            wave,
            message,
            next,
        })
    };
    match run.state {
        RunState::Running => running_waiting(detail),
        RunState::Unknown => None,
        RunState::Stopped => waiting(
            "resume",
            None,
            format!("stopped: its controller ({controller}) is not running on this host; resume goes on from the journal"),
            vec![resume("")],
        ),
        RunState::Finished if detail.stopped_wave.is_some() => {
            let wave = detail.stopped_wave.as_ref().map(|(w, _)| w.clone());
            let shown = wave.clone().unwrap_or_default();
            // Every host of the wave failed at the same step: the release is at fault,
            // and skipping the wave would carry it to the next one. Not offered then.
            match failed_alike(detail, plan, &shown) {
                Some(step) => waiting(
                    "failed_wave",
                    wave,
                    format!("wave {shown} failed beyond its failure budget: every host of it failed at step {step}, so the release is at fault: fix it (or its hosts), then resume (its failed hosts run again), or roll back"),
                    vec![resume(""), hint(format_args!("rollback {id}"))],
                ),
                None => waiting(
                    "failed_wave",
                    wave,
                    format!("wave {shown} failed beyond its failure budget: fix its hosts, then resume (its failed hosts run again), or skip the wave, or roll back"),
                    vec![
                        resume(""),
                        resume(" --skip-failed-wave"),
                        hint(format_args!("rollback {id}")),
                    ],
                ),
            }
        }
        RunState::Finished => match run.outcome {
            Some(RunOutcome::AwaitingApproval) => {
                let wave = run.awaiting_wave.clone().or_else(|| plan.and_then(|plan| {
                    let last = plan.waves.len().saturating_sub(1);
                    plan.waves
                        .iter()
                        .enumerate()
                        .find(|(w, wave)| {
                            *w < last
                                && plan.playbook.strategy.waves[*w].approve
                                && !detail.gates_passed.contains(&wave.name)
                        })
                        .map(|(_, wave)| wave.name.clone())
                }));
                let shown = wave.clone().unwrap_or_else(|| "WAVE".into());
                waiting(
                    "approval",
                    wave,
                    format!("approval of wave {shown} (the run keeps the inventory's lock until it is resumed or `pony unlock`ed); or roll it back"),
                    vec![
                        resume(&format!(" --approve {shown}")),
                        hint(format_args!("rollback {id}")),
                    ],
                )
            }
            Some(RunOutcome::Interrupted) => waiting(
                "resume",
                None,
                "interrupted; resume goes on from the journal".into(),
                vec![resume("")],
            ),
            Some(RunOutcome::NeedsAttention) => waiting(
                "attention",
                None,
                "a person must look (failed beyond what was rolled back, halted, or a rollback failed); then resume or roll back".into(),
                vec![resume(""), hint(format_args!("rollback {id}"))],
            ),
            _ => None,
        },
    }
}

/// What a running run is doing, from its journal (see [`Activity`]), and the commands
/// that act on it from another shell.
fn running_waiting(detail: &RunDetail) -> Option<Waiting> {
    let run = &detail.summary;
    let id = &run.run_id;
    let time = runs::format_time;
    let abort = || hint(format_args!("abort {id}"));
    let approve = |wave: &str| hint(format_args!("approve {id} {wave}"));
    let (reason, wave, message, next) = match run.activity.as_ref()? {
        // The reason says what happens to the hosts (`aborted by …: rolling back every
        // host the run touched`, `…: hosts in flight finish all their tasks`).
        Activity::Stopping {
            rollback: true,
            reason,
            ..
        } => (
            "rollback",
            None,
            format!("rollback in progress: {reason}"),
            Vec::new(),
        ),
        Activity::Stopping { cause, reason, .. } => (
            "stopping",
            None,
            format!(
                "{}: {reason}",
                if cause == "abort" {
                    "abort in progress"
                } else {
                    "the run is stopping"
                }
            ),
            vec![hint(format_args!("abort --rollback {id}"))],
        ),
        Activity::Paused { by, since, gate } => {
            // A pause at an approval gate holds both: the gate still wants its answer.
            let mut next = vec![hint(format_args!("continue {id}"))];
            let mut message = format!(
                "paused by {by} since {}: no new host starts until the run is continued",
                time(since)
            );
            if let Some(wave) = &gate {
                message.push_str(&format!("; wave {wave}'s gate also waits for approval"));
                next.push(approve(wave));
            }
            next.push(abort());
            ("continue", gate.clone(), message, next)
        }
        Activity::Soaking {
            wave,
            until,
            checks_ok,
            checks_failed,
        } => {
            let mut message = match until {
                Some(until) => format!(
                    "wave {wave} soaks until {} (its `pause:`) before its gate passes",
                    time(until)
                ),
                None => format!("wave {wave} soaks (its `pause:`) before its gate passes"),
            };
            if checks_ok + checks_failed > 0 {
                message.push_str(&format!(
                    "; its checks so far: {checks_ok} ok, {checks_failed} failed"
                ));
            }
            ("soak", Some(wave.clone()), message, vec![abort()])
        }
        Activity::Checks { wave } => (
            "checks",
            Some(wave.clone()),
            format!("wave {wave}'s `verify:` checks run before its gate asks for approval"),
            vec![abort()],
        ),
        Activity::Approval { wave } => (
            "approval",
            Some(wave.clone()),
            format!("approval of wave {wave}: its gate asks a person before the next wave starts"),
            vec![approve(wave), abort()],
        ),
        Activity::Window { wave, windows } => {
            let zones: Vec<String> = windows
                .iter()
                .map(|w| format!("{} in {}, opens at {}", w.window, w.zone, time(&w.opens)))
                .collect();
            (
                "window",
                Some(wave.clone()),
                format!(
                    "wave {wave}'s hosts wait for the change window ({})",
                    zones.join("; ")
                ),
                vec![abort()],
            )
        }
    };
    Some(Waiting {
        reason: reason.into(),
        wave,
        message,
        next,
    })
}
