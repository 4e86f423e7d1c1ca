//! `pony status [RUN]`: the state of a run (the latest without RUN) from its journal,
//! with the plan rebuilt from the run's snapshot to count what is still pending.
//!
//! Human output: a header, task counts per wave and per region, failed tasks with their
//! error and output tail, rollbacks, gates passed and what the run waits for (with the
//! command that goes on). `--output json` prints the same as one JSON object on one line.

use crate::cli::{GlobalOptions, OutputFormat};
use crate::events::RunOutcome;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::state::runs::{self, Group, RollbackRecord, RunDetail, RunState, RunSummary};
use crate::state::store::Store;
use serde::Serialize;
use std::io::Write;

/// How many failures, running tasks, … human output lists before "and N more".
const LIST_AT_MOST: usize = 20;

pub fn run(global: &GlobalOptions, run: Option<&str>) -> anyhow::Result<Exit> {
    let store = Store::from_options(global)?;
    let id = match run {
        Some(run) => store.resolve(run).map_err(|e| {
            let hint = match e {
                runs::ResolveError::Ambiguous { .. } => "give more of the run id",
                _ => "`pony history` lists the runs",
            };
            anyhow::anyhow!("{e}\n  hint: {hint}")
        })?,
        None => store.list()?.into_iter().next().ok_or_else(|| {
            anyhow::anyhow!(
                "no runs under {}\n  hint: start one with `pony deploy`, or pass --state-dir",
                store.place().display()
            )
        })?,
    };
    let detail = store.read(&id);
    let plan = runs::snapshot_plan(&detail.summary.path).map_err(|e| e.to_string());
    let mut report = Report::new(&detail, plan.as_ref().map_err(String::as_str));
    report.controllers = store.controller_parts(&id, plan.as_ref().ok());
    let mut out = std::io::stdout().lock();
    match global.output {
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
    /// The wave whose failure stopped the rollout, and why.
    pub stopped_wave: Option<StoppedWave<'a>>,
    /// What the run waits for, if anything.
    pub waiting: Option<Waiting>,
    /// Commands from other shells (`pony pause|continue|abort|approve`), oldest first.
    pub controls: &'a [runs::ControlRecord],
    /// A run split by region (`--regions`): each controller's regions, tasks and lease.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<crate::state::pg::regions::ControllerPart>,
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
    /// The failed and unfinished ones.
    pub problems: Vec<&'a RollbackRecord>,
}

#[derive(Debug, Serialize)]
pub struct Waiting {
    /// `approval`, `resume` (stopped or interrupted), `attention` (failed, halted or
    /// rollback incomplete) or `continue` (a running run paused by `pony pause`).
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
        let with_state = |state: &str| -> Vec<&'a str> {
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
            .filter(|t| t.state == "failed")
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
            unfinished: detail.rollbacks.iter().filter(|r| r.ok.is_none()).count(),
            problems: detail
                .rollbacks
                .iter()
                .filter(|r| r.ok != Some(true))
                .collect(),
        };
        Report {
            run: &detail.summary,
            tasks,
            failed,
            running: with_state("running"),
            interrupted: with_state("interrupted"),
            rollbacks,
            gates_passed: &detail.gates_passed,
            stopped_wave: detail
                .stopped_wave
                .as_ref()
                .map(|(wave, reason)| StoppedWave { wave, reason }),
            waiting: waiting(detail, plan.ok()),
            controls: &detail.controls,
            controllers: Vec::new(),
        }
    }

    /// The human rendering.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let run = self.run;
        let unknown = || "?".to_string();
        out.push_str(&format!(
            "run {}: {} on {}\n",
            run.run_id,
            run.playbook.clone().unwrap_or_else(unknown),
            run.inventory.clone().unwrap_or_else(unknown)
        ));
        if let Some(started) = &run.started {
            let mut line = format!("started {}", runs::format_time(started));
            if let Some(who) = run.who.as_deref().filter(|w| !w.is_empty()) {
                line.push_str(&format!(" by {who}"));
            }
            if let Some(ms) = run.duration_ms {
                line.push_str(&format!(", took {}", runs::format_duration(ms)));
            }
            out.push_str(&line);
            out.push('\n');
        }
        for r in &run.resumes {
            out.push_str(&format!(
                "{} {} by {} (pid {})\n",
                if r.command == "rollback" {
                    "rolled back"
                } else {
                    "resumed"
                },
                runs::format_time(&r.time),
                r.who,
                r.pid
            ));
        }
        match (run.state, run.pid) {
            (RunState::Running, Some(pid)) => {
                out.push_str(&format!("state: {} (pid {pid})\n", run.result))
            }
            _ => out.push_str(&format!("state: {}\n", run.result)),
        }
        if let Some(paused) = run
            .paused
            .as_ref()
            .filter(|_| run.state == RunState::Running)
        {
            out.push_str(&format!(
                "paused by {} since {}: no new host starts; `pony continue {}` goes on\n",
                paused.by,
                runs::format_time(&paused.time),
                run.run_id
            ));
        }
        if !self.controllers.is_empty() {
            out.push_str(&controllers_table(&self.controllers, &run.run_id));
        }
        if let Some(problem) = &run.journal_problem {
            out.push_str(&format!("note: {problem}\n"));
        }
        if let Some(error) = &self.tasks.plan_error {
            let first = error.lines().next().unwrap_or_default();
            out.push_str(&format!(
                "note: the plan could not be rebuilt from the run's snapshot ({first}); counts are from the journal alone and what is pending is unknown\n"
            ));
        }

        if !self.tasks.waves.is_empty() {
            out.push('\n');
            let gate = |wave: &str| -> String {
                if self.gates_passed.iter().any(|g| g == wave) {
                    "passed".into()
                } else if self.stopped_wave.as_ref().is_some_and(|s| s.wave == wave) {
                    "FAILED".into()
                } else if self
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.wave.as_deref() == Some(wave))
                {
                    "waiting".into()
                } else {
                    "-".into()
                }
            };
            out.push_str(&counts_table("WAVE", &self.tasks.waves, Some(&gate)));
        }
        if !self.tasks.regions.is_empty() {
            out.push('\n');
            let mut rows = self.tasks.regions.clone();
            rows.push(Group {
                name: "total".into(),
                counts: self.tasks.total.clone(),
            });
            out.push_str(&counts_table("REGION", &rows, None));
        }

        if !self.failed.is_empty() {
            out.push_str(&format!("\nfailed ({}):\n", self.failed.len()));
            for f in self.failed.iter().take(LIST_AT_MOST) {
                let mut line = format!("  {} (step {}", f.target, f.step);
                if let Some(code) = f.exit_code {
                    line.push_str(&format!(", exit {code}"));
                }
                match f.rolled_back {
                    Some(true) => line.push_str(", rolled back"),
                    Some(false) => line.push_str(", ROLLBACK FAILED"),
                    None => {}
                }
                line.push(')');
                if let Some(error) = f.error {
                    line.push_str(&format!(": {}", error.replace('\n', "\n    ")));
                }
                out.push_str(&line);
                out.push('\n');
                if !f.output_tail.trim().is_empty() {
                    out.push_str(&indent(f.output_tail));
                    out.push('\n');
                }
            }
            more(&mut out, self.failed.len());
        }
        if !self.running.is_empty() {
            let title = match run.state {
                RunState::Running => "running now",
                _ => "running when the run stopped; resume runs them again",
            };
            list(&mut out, title, &self.running);
        }
        if !self.interrupted.is_empty() {
            list(
                &mut out,
                "interrupted; resume runs them again",
                &self.interrupted,
            );
        }

        let r = &self.rollbacks;
        if r.ok + r.failed + r.unfinished > 0 {
            let mut line = format!("\nrollbacks: {} ok, {} failed", r.ok, r.failed);
            if r.unfinished > 0 {
                line.push_str(&format!(", {} unfinished", r.unfinished));
            }
            out.push_str(&line);
            out.push('\n');
            for p in r.problems.iter().take(LIST_AT_MOST) {
                let mut line = match p.ok {
                    Some(_) => format!("  FAILED {}", p.label),
                    None => format!("  unfinished {}", p.label),
                };
                if let Some(code) = p.exit_code {
                    line.push_str(&format!(" (exit {code})"));
                }
                if let Some(error) = &p.error {
                    line.push_str(&format!(": {error}"));
                }
                out.push_str(&line);
                out.push('\n');
            }
            more(&mut out, r.problems.len());
        }

        if !self.controls.is_empty() {
            out.push_str(&format!(
                "\ncommands from other shells ({}):\n",
                self.controls.len()
            ));
            let earlier = self.controls.len().saturating_sub(LIST_AT_MOST);
            if earlier > 0 {
                out.push_str(&format!(
                    "  … {earlier} earlier ones (all of them with --output json)\n"
                ));
            }
            for c in &self.controls[earlier..] {
                let refused = if c.accepted { "" } else { " (refused)" };
                out.push_str(&format!(
                    "  {} {} by {}{refused}: {}\n",
                    runs::format_time(&c.time),
                    c.command,
                    c.by,
                    c.message
                ));
            }
        }

        out.push('\n');
        if let Some(stopped) = &self.stopped_wave {
            out.push_str(&format!(
                "stopped at wave {}: {}; its gate did not pass\n",
                stopped.wave, stopped.reason
            ));
        }
        out.push_str(&format!(
            "gates passed: {}\n",
            if self.gates_passed.is_empty() {
                "none".to_string()
            } else {
                self.gates_passed.join(", ")
            }
        ));
        match &self.waiting {
            Some(w) => {
                out.push_str(&format!("waiting: {}\n", w.message));
                for command in &w.next {
                    out.push_str(&format!("  {command}\n"));
                }
            }
            None => out.push_str("waiting: nothing\n"),
        }
        out
    }
}

/// What the run waits for and the commands that go on.
fn waiting(detail: &RunDetail, plan: Option<&Plan>) -> Option<Waiting> {
    let run = &detail.summary;
    let id = &run.run_id;
    let resume = format!("pony resume {id}");
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
        RunState::Running => match (&run.paused, &detail.gate_waiting) {
            (Some(paused), _) => waiting(
                "continue",
                None,
                format!("paused by {}: no new host starts until the run is continued", paused.by),
                vec![format!("pony continue {id}"), format!("pony abort {id}")],
            ),
            (None, Some((wave, reason))) if reason == "approve" => waiting(
                "approval",
                Some(wave.clone()),
                format!("approval of wave {wave}: its gate asks a person before the next wave starts"),
                vec![format!("pony approve {id} {wave}"), format!("pony abort {id}")],
            ),
            (None, Some((wave, reason))) => waiting(
                reason,
                Some(wave.clone()),
                format!("wave {wave} soaks (its `pause:`) before its gate passes"),
                Vec::new(),
            ),
            (None, None) => None,
        },
        RunState::Unknown => None,
        RunState::Stopped => waiting(
            "resume",
            None,
            format!("stopped: its controller ({controller}) is not running on this host; resume goes on from the journal"),
            vec![resume],
        ),
        RunState::Finished if detail.stopped_wave.is_some() => {
            let wave = detail.stopped_wave.as_ref().map(|(w, _)| w.clone());
            let shown = wave.clone().unwrap_or_default();
            waiting(
                "failed_wave",
                wave,
                format!("wave {shown} failed beyond its failure budget: fix its hosts, then resume (its failed hosts run again), or skip the wave, or roll back"),
                vec![
                    resume.clone(),
                    format!("{resume} --skip-failed-wave"),
                    format!("pony rollback {id}"),
                ],
            )
        }
                RunState::Finished => match run.outcome {
            Some(RunOutcome::AwaitingApproval) => {
                let wave = plan.and_then(|plan| {
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
                });
                let shown = wave.clone().unwrap_or_else(|| "WAVE".into());
                waiting(
                    "approval",
                    wave,
                    format!("approval of wave {shown} (the run keeps the inventory's lock until it is resumed or `pony unlock`ed)"),
                    vec![format!("{resume} --approve {shown}")],
                )
            }
            Some(RunOutcome::Interrupted) => waiting(
                "resume",
                None,
                "interrupted; resume goes on from the journal".into(),
                vec![resume],
            ),
            Some(RunOutcome::NeedsAttention) => waiting(
                "attention",
                None,
                "a person must look (failed beyond what was rolled back, halted, or a rollback failed); then resume or roll back".into(),
                vec![resume, format!("pony rollback {id}")],
            ),
            _ => None,
        },
    }
}

fn counts_table(first: &str, groups: &[Group], gate: Option<&dyn Fn(&str) -> String>) -> String {
    let show = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    let mut header: Vec<String> = vec![first.into()];
    if gate.is_some() {
        header.push("GATE".into());
    }
    header.extend(
        [
            "TASKS",
            "SUCCEEDED",
            "SKIPPED",
            "FAILED",
            "INTERRUPTED",
            "RUNNING",
            "PENDING",
            "ROLLED BACK",
        ]
        .map(String::from),
    );
    let mut rows = vec![header];
    for g in groups {
        let c: &runs::TaskCounts = &g.counts;
        let mut row = vec![g.name.clone()];
        if let Some(gate) = gate {
            row.push(gate(&g.name));
        }
        row.extend([
            show(c.total),
            c.succeeded.to_string(),
            c.skipped.to_string(),
            c.failed.to_string(),
            c.interrupted.to_string(),
            c.running.to_string(),
            show(c.pending),
            c.rolled_back.to_string(),
        ]);
        rows.push(row);
    }
    let left = if gate.is_some() { 2 } else { 1 };
    let mut widths = vec![0usize; rows[0].len()];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i < left {
                    format!("{cell:<width$}", width = widths[i])
                } else {
                    format!("{cell:>width$}", width = widths[i])
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn list(out: &mut String, title: &str, labels: &[&str]) {
    out.push_str(&format!("\n{title} ({}):\n", labels.len()));
    for label in labels.iter().take(LIST_AT_MOST) {
        out.push_str(&format!("  {label}\n"));
    }
    more(out, labels.len());
}

fn more(out: &mut String, count: usize) {
    if count > LIST_AT_MOST {
        out.push_str(&format!(
            "  … and {} more (all of them with --output json)\n",
            count - LIST_AT_MOST
        ));
    }
}

/// Output lines as the deploy report shows them: `    | line`.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The controllers of a run split by region: which regions each worked on, its tasks,
/// and whether it still holds its lease; an expired one's regions wait for a takeover.
fn controllers_table(parts: &[crate::state::pg::regions::ControllerPart], run_id: &str) -> String {
    let mut out =
        String::from("\nCONTROLLER            REGIONS         STARTED  SUCCEEDED  FAILED  LEASE\n");
    for part in parts {
        out.push_str(&format!(
            "{:<21} {:<15} {:>7}  {:>9}  {:>6}  {}\n",
            part.controller,
            part.regions.join(","),
            part.started,
            part.succeeded,
            part.failed,
            part.lease
        ));
    }
    for part in parts.iter().filter(|p| p.lease == "expired") {
        out.push_str(&format!(
            "controller {} is lost (it died, was cut off, or stopped with work left): take its regions over with `pony resume {run_id} --regions {}`\n",
            part.controller,
            part.regions.join(",")
        ));
    }
    out.push('\n');
    out
}
