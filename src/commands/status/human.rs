//! `pony status`'s human output: the header, the task counts per wave and per region as
//! tables, failed tasks with their error and output tail, rollbacks, live commands, the
//! controllers of a split run, and what the run waits for. Long lists stop at
//! [`LIST_AT_MOST`] with "and N more".

use super::Report;
use crate::state::journal::RunKind;
use crate::state::runs::Group;
use crate::state::runs::{self, RunState};

/// How many failures, running tasks, … human output lists before "and N more".
const LIST_AT_MOST: usize = 20;

impl Report<'_> {
    /// The human rendering.
    pub fn human(&self) -> String {
        let mut out = String::new();
        self.header_part(&mut out);
        self.notes_part(&mut out);
        self.tables_part(&mut out);
        self.failures_part(&mut out);
        self.rollbacks_part(&mut out);
        if let Some(switches) = &self.switches {
            out.push_str(&switches.human(&self.run.run_id));
        }
        self.controls_part(&mut out);
        self.footer_part(&mut out);
        out
    }

    /// `run ID: PLAYBOOK on INVENTORY`, when it started and by whom, its resumes, and its state
    /// (with the live controllers of a split run).
    fn header_part(&self, out: &mut String) {
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
                match r.command {
                    RunKind::Rollback => "rolled back",
                    RunKind::Join => "joined",
                    RunKind::Resume | RunKind::Deploy => "resumed",
                },
                runs::format_time(&r.time),
                r.who,
                r.pid
            ));
        }
        match (run.state, run.pid) {
            // A run split by region has one controller per part, none of them "the"
            // run's: each is listed with its regions.
            (RunState::Running, _) if !self.live_controllers.is_empty() => {
                let each: Vec<String> = self
                    .live_controllers
                    .iter()
                    .map(|c| {
                        format!(
                            "{} (pid {} on {}) on {}",
                            c.controller,
                            c.pid,
                            c.machine,
                            c.regions.join(",")
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "state: {} by {} controller(s): {}\n",
                    run.result,
                    each.len(),
                    each.join("; ")
                ))
            }
            (RunState::Running, Some(pid)) if self.controllers.is_empty() => {
                out.push_str(&format!("state: {} (pid {pid})\n", run.result))
            }
            _ => out.push_str(&format!("state: {}\n", run.result)),
        }
        if !self.controllers.is_empty() {
            out.push_str(&controllers_table(&self.controllers, &run.run_id));
        }
    }

    /// Notes on what status could not know: a damaged journal, files changed since the
    /// snapshot, a plan that does not rebuild.
    fn notes_part(&self, out: &mut String) {
        let run = self.run;
        if let Some(problem) = &run.journal_problem {
            out.push_str(&format!("note: {problem}\n"));
        }
        if !self.files_changed.is_empty() {
            out.push_str(
                "note: the run's files differ on disk from its snapshot (a resume or rollback uses the snapshot's, as they were at the start):\n",
            );
            for file in self.files_changed.iter().take(LIST_AT_MOST) {
                let named = if file.path.ends_with(&file.name) {
                    file.path.display().to_string()
                } else {
                    format!("{} ({})", file.name, file.path.display())
                };
                out.push_str(&format!("  {}: {named}\n", file.change));
            }
            if self.files_changed.len() > LIST_AT_MOST {
                out.push_str(&format!(
                    "  and {} more\n",
                    self.files_changed.len() - LIST_AT_MOST
                ));
            }
        }
        if let Some(error) = &self.tasks.plan_error {
            let first = error.lines().next().unwrap_or_default();
            out.push_str(&format!(
                "note: the plan could not be rebuilt from the run's snapshot ({first}); counts are from the journal alone and what is pending is unknown\n"
            ));
        }
    }

    /// The task counts per wave (with each wave's gate) and per region.
    fn tables_part(&self, out: &mut String) {
        if !self.tasks.waves.is_empty() {
            out.push('\n');
            let gate = |wave: &str| -> String {
                if self.gates_passed.iter().any(|g| g == wave) {
                    "passed".into()
                } else if self.stopped_wave.as_ref().is_some_and(|s| s.wave == wave) {
                    "FAILED".into()
                } else if self.waiting.as_ref().is_some_and(|w| {
                    // A change window holds the wave's hosts, not its gate.
                    w.wave.as_deref() == Some(wave) && w.reason != "window"
                }) {
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
    }

    /// Failed tasks with their error and output tail, then running and interrupted tasks.
    fn failures_part(&self, out: &mut String) {
        let run = self.run;
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
            more(out, self.failed.len());
        }
        if !self.running.is_empty() {
            let title = match run.state {
                RunState::Running => "running now",
                _ => "running when the run stopped; resume runs them again",
            };
            list(out, title, &self.running);
        }
        if !self.interrupted.is_empty() {
            list(
                out,
                "interrupted; resume runs them again",
                &self.interrupted,
            );
        }
    }

    /// Rollbacks: counts, then each one that failed, did not finish or was not attempted.
    fn rollbacks_part(&self, out: &mut String) {
        let r = &self.rollbacks;
        if r.ok + r.failed + r.unfinished + r.not_attempted > 0 {
            let mut line = format!("\nrollbacks: {} ok, {} failed", r.ok, r.failed);
            if r.unfinished > 0 {
                line.push_str(&format!(", {} unfinished", r.unfinished));
            }
            if r.not_attempted > 0 {
                line.push_str(&format!(", {} not attempted", r.not_attempted));
            }
            out.push_str(&line);
            out.push('\n');
            for p in r.problems.iter().take(LIST_AT_MOST) {
                let mut line = match (p.ok, &p.not_attempted) {
                    (Some(_), _) => format!("  FAILED {}", p.label),
                    (None, Some(reason)) => format!(
                        "  not attempted {}: {}",
                        p.label,
                        reason.strip_prefix("not attempted: ").unwrap_or(reason)
                    ),
                    (None, None) => format!("  unfinished {}", p.label),
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
            more(out, r.problems.len());
        }
    }

    /// Commands from other shells (pause, approve, …), the latest [`LIST_AT_MOST`].
    fn controls_part(&self, out: &mut String) {
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
    }

    /// The stopped wave, gates passed, pre-approvals and what the run waits for.
    fn footer_part(&self, out: &mut String) {
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
        if !self.pre_approved.is_empty() {
            out.push_str(&format!(
                "pre-approved: {} (from another shell; the gate passes when the wave is done)\n",
                self.pre_approved.join(", ")
            ));
        }
        match &self.waiting {
            Some(w) => {
                out.push_str(&format!("waiting: {}\n", w.message));
                for command in &w.next {
                    out.push_str(&format!("  {command}\n"));
                }
            }
            None => out.push_str("waiting: nothing\n"),
        }
        if let Some(eta) = &self.eta {
            out.push_str(&format!("ETA: {}\n", eta.words()));
        }
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
fn controllers_table(parts: &[crate::state::split::ControllerPart], run_id: &str) -> String {
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
            "controller {} is lost (it died, was cut off, or stopped with work left): take its regions over with `{}`\n",
            part.controller,
            crate::hint::pony(format_args!(
                "resume {run_id} --regions {}",
                part.regions.join(",")
            ))
        ));
    }
    out.push('\n');
    out
}
