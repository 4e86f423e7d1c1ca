//! Folding a run's journal, record by record, into its [`RunDetail`]: every kind of
//! record names what it changes (the summary, a task, a rollback, a gate, the activity).

use super::{
    activity, ControlRecord, RollbackRecord, RunDetail, TaskRecord, TaskStatus, HEALTH_PREFIX,
};
use crate::events::{Control, GateReason, HealthAfter, HealthChecked, WaveSkipped};
use crate::state::journal::{Record, RunKind, Stamped};
use crate::state::runs::parse_time;
use crate::state::runs::summary::{
    controller_alive, result_words, who, Activity, Paused, Resumed, RunState, RunSummary,
    WindowWait,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(in crate::state::runs) fn fold(
    id: &str,
    path: PathBuf,
    records: &[Record],
    problem: Option<String>,
) -> RunDetail {
    let mut folding = Folding::new(id, path, problem);
    for record in records {
        folding.record(record);
    }
    folding.finish()
}

/// The state of a journal read so far, record by record.
struct Folding {
    summary: RunSummary,
    /// What the latest controller is doing, beyond working through tasks (see `Activity`).
    stopping: Option<Activity>,
    aborted: bool,
    windows: Vec<(String, WindowWait)>,
    soak_until: Option<String>,
    /// Checks passed and failed during the soak the run waits in.
    soak_checks: (usize, usize),
    tasks: Vec<TaskRecord>,
    task_index: BTreeMap<String, usize>,
    rollbacks: Vec<RollbackRecord>,
    rollback_index: BTreeMap<String, usize>,
    gates_passed: Vec<String>,
    stopped_wave: Option<(String, String)>,
    controls: Vec<ControlRecord>,
    gate_waiting: Option<(String, GateReason)>,
    pre_approved: Vec<String>,
    started_any: bool,
    /// Where the latest controller runs (its pid is only checkable there).
    controller_host: String,
}

impl Folding {
    fn new(id: &str, path: PathBuf, problem: Option<String>) -> Folding {
        Folding {
            summary: RunSummary {
                run_id: id.to_string(),
                playbook: None,
                inventory: None,
                who: None,
                user: None,
                host: None,
                pid: None,
                started: None,
                finished: None,
                duration_ms: None,
                state: RunState::Unknown,
                outcome: None,
                exit_code: None,
                result: String::new(),
                path,
                resumes: Vec::new(),
                journal_problem: problem,
                paused: None,
                activity: None,
                awaiting_wave: None,
            },
            stopping: None,
            aborted: false,
            windows: Vec::new(),
            soak_until: None,
            soak_checks: (0, 0),
            tasks: Vec::new(),
            task_index: BTreeMap::new(),
            rollbacks: Vec::new(),
            rollback_index: BTreeMap::new(),
            gates_passed: Vec::new(),
            stopped_wave: None,
            controls: Vec::new(),
            gate_waiting: None,
            pre_approved: Vec::new(),
            started_any: false,
            controller_host: String::new(),
        }
    }

    /// Takes in one record; every kind of record is named here, so a new one must say
    /// what it changes.
    fn record(&mut self, record: &Record) {
        self.gate_ends(record);
        match record {
            Record::GateWaiting { .. }
            | Record::WindowWaiting { .. }
            | Record::GatePassed { .. }
            | Record::WaveStopped { .. }
            | Record::WaveSkipped(_)
            | Record::VerifyCheck(_) => self.gate(record),
            Record::RunStarted { .. } | Record::RunResumed { .. } => self.started(record),
            Record::Stopping { .. } | Record::RunFinished { .. } => self.ending(record),
            Record::TaskStarted { .. } | Record::TaskFinished { .. } => self.task(record),
            Record::TaskNotRun { label, .. } => self.not_run(label),
            Record::RollbackStarted { .. }
            | Record::RollbackFinished { .. }
            | Record::RollbackNotAttempted { .. } => self.rollback(record),
            Record::HealthChecked(_) => self.health(record),
            // `pony status` shows a split run's controllers from their leases as they
            // are now (a lost controller's regions may have been taken over since).
            Record::ControllerLost(_) => {}
            Record::Control(_) => self.control(record),
        }
    }

    /// A gate waits no more once it passed or stopped, or its controller went away.
    fn gate_ends(&mut self, record: &Record) {
        match record {
            Record::GatePassed { wave, .. } | Record::WaveStopped { wave, .. }
                if self.gate_waiting.as_ref().is_some_and(|(w, _)| w == wave) =>
            {
                self.gate_waiting = None
            }
            Record::RunStarted { .. } | Record::RunResumed { .. } | Record::RunFinished { .. } => {
                // An approval the run stopped at (exit 10) is what it awaits.
                if let (Record::RunFinished { .. }, Some((wave, reason))) =
                    (record, &self.gate_waiting)
                {
                    self.summary.awaiting_wave = (record.outcome()
                        == Some(crate::events::RunOutcome::AwaitingApproval)
                        && *reason == GateReason::Approve)
                        .then(|| wave.clone());
                } else {
                    self.summary.awaiting_wave = None;
                }
                self.gate_waiting = None;
                self.stopping = None;
                self.aborted = false;
                self.windows.clear();
            }
            _ => {}
        }
    }

    /// Gates, change windows and waves: waiting, passed, stopped, skipped, checked.
    fn gate(&mut self, record: &Record) {
        match record {
            Record::GateWaiting {
                wave,
                reason,
                until,
                ..
            } => {
                // Journals written before the soak was so named say `pause`: read as a soak
                // (`GateReason`'s text).
                self.gate_waiting = Some((wave.clone(), reason.clone()));
                self.soak_until = until.clone();
                self.soak_checks = (0, 0);
            }
            Record::WindowWaiting {
                wave,
                window,
                zone,
                opens,
                ..
            } => {
                self.windows
                    .retain(|(w, wait)| !(w == wave && &wait.zone == zone));
                self.windows.push((
                    wave.clone(),
                    WindowWait {
                        window: window.clone(),
                        zone: zone.clone(),
                        opens: opens.clone(),
                    },
                ));
            }
            Record::GatePassed { wave, .. } => {
                if !self.gates_passed.contains(wave) {
                    self.gates_passed.push(wave.clone());
                }
                if self.stopped_wave.as_ref().is_some_and(|(w, _)| w == wave) {
                    self.stopped_wave = None;
                }
            }
            Record::WaveStopped { wave, reason, .. } => {
                self.stopped_wave = Some((wave.clone(), reason.clone()));
            }
            Record::WaveSkipped(Stamped {
                fact: WaveSkipped { wave, user },
                ..
            }) => {
                self.stopped_wave = None;
                let skipped = format!("{wave} (failed; skipped by {user})");
                if !self.gates_passed.contains(&skipped) {
                    self.gates_passed.push(skipped);
                }
            }
            // The failing check is named in the wave's `WaveStopped` reason; passing
            // checks are in the journal for `pony log`-style reading.
            Record::VerifyCheck(Stamped { fact: check, .. })
                if self
                    .gate_waiting
                    .as_ref()
                    .is_some_and(|(w, reason)| *w == check.wave && *reason == GateReason::Soak) =>
            {
                if check.ok {
                    self.soak_checks.0 += 1;
                } else {
                    self.soak_checks.1 += 1;
                }
            }
            _ => {}
        }
    }

    /// A controller started or resumed the run (or rolls it back).
    fn started(&mut self, record: &Record) {
        match record {
            Record::RunStarted {
                playbook,
                inventory,
                time,
                pid,
                user,
                host,
                ..
            } => {
                let summary = &mut self.summary;
                if !self.started_any {
                    self.started_any = true;
                    summary.playbook = Some(playbook.clone());
                    summary.inventory = Some(inventory.clone());
                    summary.started = Some(time.clone());
                    summary.user = Some(user.clone());
                    summary.host = Some(host.clone());
                    summary.who = Some(who(user, host));
                }
                // A second start (older resumes): the run is going again.
                going_again(summary, *pid);
                self.controller_host = host.clone();
            }
            // A resume or rollback: the run is going again.
            Record::RunResumed {
                command,
                time,
                pid,
                user,
                host,
            } => {
                self.summary.resumes.push(Resumed {
                    command: *command,
                    time: time.clone(),
                    who: who(user, host),
                    pid: *pid,
                });
                going_again(&mut self.summary, *pid);
                self.controller_host = host.clone();
                if *command == RunKind::Rollback {
                    self.stopping = Some(Activity::Stopping {
                        rollback: true,
                        cause: "rollback".into(),
                        reason: format!("`pony rollback` by {} (pid {pid})", who(user, host)),
                        since: time.clone(),
                    });
                }
            }
            _ => {}
        }
    }

    /// The run stopping (and why), and finished.
    fn ending(&mut self, record: &Record) {
        match record {
            Record::Stopping {
                reason,
                rollback,
                time,
            } => {
                let rolling_back = matches!(
                    self.stopping,
                    Some(Activity::Stopping { rollback: true, .. })
                );
                let cause = if self.aborted || reason.starts_with("interrupted") {
                    "abort"
                } else {
                    "run"
                };
                self.stopping = Some(Activity::Stopping {
                    rollback: *rollback || rolling_back,
                    cause: cause.into(),
                    reason: reason.clone(),
                    since: time.clone(),
                });
            }
            Record::RunFinished {
                exit_code, time, ..
            } => {
                self.summary.paused = None;
                self.summary.outcome = record.outcome();
                self.summary.exit_code = Some(*exit_code);
                self.summary.finished = Some(time.clone());
            }
            _ => {}
        }
    }

    /// A task journaled as started that never ran: it leaves the list, as a task never
    /// started is not in it.
    fn not_run(&mut self, label: &str) {
        if let Some(i) = self.task_index.remove(label) {
            self.tasks.remove(i);
            for index in self.task_index.values_mut() {
                if *index > i {
                    *index -= 1;
                }
            }
        }
    }

    /// A task started or finished.
    fn task(&mut self, record: &Record) {
        let task = match record {
            Record::TaskStarted { label, .. } => TaskRecord {
                label: label.clone(),
                state: TaskStatus::Running,
                exit_code: None,
                duration_ms: None,
                error: None,
                output_tail: String::new(),
            },
            Record::TaskFinished {
                label,
                state,
                exit_code,
                duration_ms,
                record,
                ..
            } => TaskRecord {
                label: label.clone(),
                state: TaskStatus::from(*state),
                exit_code: *exit_code,
                duration_ms: Some(*duration_ms),
                error: record.error.clone(),
                output_tail: record.output_tail.clone(),
            },
            _ => return,
        };
        let label = task.label.clone();
        upsert(&mut self.tasks, &mut self.task_index, &label, task);
    }

    /// A task's rollback started, finished or was not attempted.
    fn rollback(&mut self, record: &Record) {
        let rollback = match record {
            Record::RollbackStarted { label, .. } => RollbackRecord {
                label: label.clone(),
                ok: None,
                exit_code: None,
                error: None,
                not_attempted: None,
            },
            Record::RollbackFinished {
                label,
                ok,
                exit_code,
                error,
                ..
            } => RollbackRecord {
                label: label.clone(),
                ok: Some(*ok),
                exit_code: *exit_code,
                error: error.clone(),
                not_attempted: None,
            },
            Record::RollbackNotAttempted { label, reason, .. } => RollbackRecord {
                label: label.clone(),
                ok: None,
                exit_code: None,
                error: None,
                not_attempted: Some(reason.clone()),
            },
            _ => return,
        };
        let label = rollback.label.clone();
        upsert(
            &mut self.rollbacks,
            &mut self.rollback_index,
            &label,
            rollback,
        );
    }

    /// A host's health checked after its deploy or its rollback.
    fn health(&mut self, record: &Record) {
        let Record::HealthChecked(Stamped { fact: health, .. }) = record else {
            return;
        };
        match health {
            // A host whose health did not come back after its rollback is a failed
            // rollback, listed as `health@HOST`; a later pass (a `pony rollback`) clears it.
            HealthChecked {
                host,
                ok,
                error,
                checked: true,
                after: HealthAfter::Rollback,
                ..
            } => {
                let label = format!("{HEALTH_PREFIX}{host}");
                if !*ok || self.rollback_index.contains_key(&label) {
                    let rollback = RollbackRecord {
                        label: label.clone(),
                        ok: Some(*ok),
                        exit_code: None,
                        error: error.clone(),
                        not_attempted: None,
                    };
                    upsert(
                        &mut self.rollbacks,
                        &mut self.rollback_index,
                        &label,
                        rollback,
                    );
                }
            }
            // A host whose health does not pass after its deploy failed there: shown
            // among the failed tasks as `health@HOST`.
            HealthChecked {
                host,
                ok,
                error,
                duration_ms,
                after: HealthAfter::Deploy,
                checked: true,
                ..
            } => {
                let label = format!("{HEALTH_PREFIX}{host}");
                let task = TaskRecord {
                    label: label.clone(),
                    state: if *ok {
                        TaskStatus::Succeeded
                    } else {
                        TaskStatus::Failed
                    },
                    exit_code: None,
                    duration_ms: Some(*duration_ms),
                    error: error.clone(),
                    output_tail: String::new(),
                };
                upsert(&mut self.tasks, &mut self.task_index, &label, task);
            }
            _ => {}
        }
    }

    /// A command from another shell: listed; when accepted, an approval ahead of its
    /// gate, an abort (the run stops) or a pause/continue.
    fn control(&mut self, record: &Record) {
        let Record::Control(Stamped {
            fact:
                Control {
                    command,
                    user,
                    host,
                    pid,
                    accepted,
                    message,
                },
            time,
        }) = record
        else {
            return;
        };
        self.controls.push(ControlRecord {
            command: command.clone(),
            by: format!("{} (pid {pid})", who(user, host)),
            time: time.clone(),
            accepted: *accepted,
            message: message.clone(),
        });
        if !*accepted {
            return;
        }
        if let Some(wave) = command.strip_prefix("approve ") {
            if !self.pre_approved.iter().any(|w| w == wave) {
                self.pre_approved.push(wave.to_string());
            }
        }
        if command.starts_with("abort") {
            self.aborted = true;
            let rollback = command == "abort --rollback";
            let by = format!("{} (pid {pid})", who(user, host));
            match &mut self.stopping {
                Some(Activity::Stopping {
                    rollback: r, cause, ..
                }) => {
                    *r |= rollback;
                    *cause = "abort".into();
                }
                _ => {
                    self.stopping = Some(Activity::Stopping {
                        rollback,
                        cause: "abort".into(),
                        reason: format!("aborted by {by}"),
                        since: time.clone(),
                    })
                }
            }
        }
        match command.as_str() {
            "pause" => {
                self.summary.paused.get_or_insert(Paused {
                    by: format!("{} (pid {pid})", who(user, host)),
                    time: time.clone(),
                });
            }
            "continue" | "abort" | "abort --rollback" => self.summary.paused = None,
            _ => {}
        }
    }

    /// The run's state, duration, activity and result words once every record is in.
    fn finish(self) -> RunDetail {
        let mut summary = self.summary;
        summary.state = if summary.outcome.is_some() {
            RunState::Finished
        } else if !self.started_any {
            RunState::Unknown
        } else if controller_alive(summary.pid, &self.controller_host) {
            RunState::Running
        } else {
            RunState::Stopped
        };
        summary.duration_ms = match (&summary.started, &summary.finished) {
            (Some(start), Some(end)) => match (parse_time(start), parse_time(end)) {
                (Some(s), Some(e)) => {
                    Some(e.duration_since(s).unwrap_or_default().as_millis() as u64)
                }
                _ => None,
            },
            _ => None,
        };
        if summary.state == RunState::Running {
            summary.activity = activity(
                self.stopping,
                summary.paused.as_ref(),
                self.gate_waiting.as_ref(),
                self.soak_until,
                self.soak_checks,
                self.windows,
            );
        }
        summary.result = result_words(&summary);
        let mut pre_approved = self.pre_approved;
        pre_approved.retain(|wave| !self.gates_passed.contains(wave));
        RunDetail {
            summary,
            tasks: self.tasks,
            pre_approved,
            gates_passed: self.gates_passed,
            stopped_wave: self.stopped_wave,
            rollbacks: self.rollbacks,
            controls: self.controls,
            gate_waiting: self.gate_waiting,
        }
    }
}

fn upsert<T>(items: &mut Vec<T>, index: &mut BTreeMap<String, usize>, label: &str, item: T) {
    match index.get(label) {
        Some(&i) => items[i] = item,
        None => {
            index.insert(label.to_string(), items.len());
            items.push(item);
        }
    }
}

/// A run started again (a resume, or an older pony's second start) by process `pid`:
/// it is no longer paused or finished, and its outcome is to come.
fn going_again(summary: &mut RunSummary, pid: u32) {
    summary.pid = Some(pid);
    summary.paused = None;
    summary.finished = None;
    summary.outcome = None;
    summary.exit_code = None;
}
