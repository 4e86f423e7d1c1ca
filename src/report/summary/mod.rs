//! The end-of-run summary both human reporters print: a table per region (ok, failed,
//! rolled back, not run, duration), the slowest steps, the verdict with the exit code, and
//! where the journal and the per-host logs are.

use super::Palette;
use crate::events::{Event, HostOutcome, RegionSummary, RunOutcome};
use crate::hint::pony as hint;
use indexmap::IndexMap;
use std::time::Duration;

/// How many of the slowest steps the summary lists.
const SLOWEST_STEPS: usize = 5;
/// How many failed hosts the summary lists (the journal and `pony status` have them all).
const FAILED_HOSTS: usize = 20;

/// What the summary remembers of the run's events: step durations (for the slowest
/// steps), each failed host's first failure, the approval the run waits for, and the hosts
/// that ended failed.
#[derive(Debug, Default)]
pub struct SummaryNotes {
    steps: IndexMap<String, StepStats>,
    /// Hosts with a failed task: the first failure of each, in the order they happened.
    failures: IndexMap<String, FailedHost>,
    /// The wave whose `approve:` gate the run last waited at.
    approval: Option<String>,
    /// Hosts whose latest outcome is `failed` or `rollback_failed` (a rollback can fail
    /// on a host none of whose tasks failed).
    ended_failed: std::collections::HashSet<String>,
    /// `verify_check` results: passed, failed, and the first failure's description.
    checks: (usize, usize, Option<String>),
    /// Hosts rolled back with no `health:` check to say they serve again.
    unverified: std::collections::BTreeSet<String>,
    /// Rollbacks not attempted, grouped by the failed rollback that stopped them (task
    /// labels).
    not_attempted: IndexMap<String, Vec<String>>,
}

#[derive(Debug)]
struct FailedHost {
    region: String,
    step: String,
    exit_code: Option<i32>,
    /// How the host ended (rolled back, rollback failed, failed).
    outcome: Option<HostOutcome>,
}

#[derive(Debug, Default)]
struct StepStats {
    durations: Vec<u64>,
    slowest_ms: u64,
    slowest_host: String,
}

impl SummaryNotes {
    /// Takes note of the events the summary needs (finished tasks' durations).
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::TaskFinished {
                task, duration_ms, ..
            } => {
                let stats = self.steps.entry(task.step.clone()).or_default();
                stats.durations.push(*duration_ms);
                if *duration_ms >= stats.slowest_ms {
                    stats.slowest_ms = *duration_ms;
                    stats.slowest_host = task.host.clone();
                }
            }
            Event::TaskFailed {
                task, exit_code, ..
            } => {
                self.failures
                    .entry(task.host.clone())
                    .or_insert_with(|| FailedHost {
                        region: task.region.clone(),
                        step: task.step.clone(),
                        exit_code: *exit_code,
                        outcome: None,
                    });
            }
            Event::VerifyCheck(crate::events::VerifyCheck {
                wave,
                check,
                host,
                ok,
                detail,
            }) => {
                if *ok {
                    self.checks.0 += 1;
                } else {
                    self.checks.1 += 1;
                    self.checks.2.get_or_insert_with(|| {
                        format!("wave {wave} check {check} failed on {host}: {detail}")
                    });
                }
            }
            Event::HealthChecked(crate::events::HealthChecked {
                host,
                checked: false,
                ..
            }) => {
                self.unverified.insert(host.clone());
            }
            // A host whose health does not pass after its deploy failed at `health`.
            Event::HealthChecked(crate::events::HealthChecked {
                host,
                region,
                after: crate::events::HealthAfter::Deploy,
                ok: false,
                ..
            }) => {
                self.failures
                    .entry(host.clone())
                    .or_insert_with(|| FailedHost {
                        region: region.clone(),
                        step: "health".into(),
                        exit_code: None,
                        outcome: None,
                    });
            }
            Event::RollbackNotAttempted {
                task, blocked_by, ..
            } => {
                self.not_attempted
                    .entry(blocked_by.clone())
                    .or_default()
                    .push(task.label.clone());
            }
            Event::GateWaiting {
                wave,
                reason: crate::events::GateReason::Approve,
                ..
            } => {
                self.approval = Some(wave.clone());
            }
            Event::GatePassed { wave, .. } if self.approval.as_ref() == Some(wave) => {
                self.approval = None;
            }
            Event::HostFinished { host, outcome, .. } => {
                if let Some(failed) = self.failures.get_mut(host) {
                    failed.outcome = Some(*outcome);
                }
                if matches!(outcome, HostOutcome::Failed | HostOutcome::RollbackFailed) {
                    self.ended_failed.insert(host.clone());
                } else {
                    self.ended_failed.remove(host);
                }
            }
            _ => {}
        }
    }
}

/// The verdict for an outcome, as the summary's last lines say it.
pub fn verdict(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::FailedRolledBack => "failed; rollback complete",
        RunOutcome::NeedsAttention => "FAILED; a person must look (halted or rollback incomplete)",
        RunOutcome::AwaitingApproval => "paused awaiting approval",
        RunOutcome::Interrupted => "interrupted",
        RunOutcome::RolledBack => "rolled back",
    }
}

/// The summary lines for a `Summary` event (nothing for any other event).
pub fn render(event: &Event, notes: &SummaryNotes, palette: &Palette) -> Vec<String> {
    let Event::Summary {
        run_id,
        outcome,
        hosts,
        ok,
        failed,
        rolled_back,
        duration_ms,
        regions,
        run_dir,
        ..
    } = event
    else {
        return Vec::new();
    };
    let mut lines = vec![String::new()];
    // The regions' NOT RUN column counts every host not done (incomplete and skipped
    // unreachable ones too); the total is their sum.
    let total = RegionSummary {
        region: "total".into(),
        hosts: *hosts,
        ok: *ok,
        failed: *failed,
        rolled_back: *rolled_back,
        cancelled: regions.iter().map(|r| r.cancelled).sum(),
        duration_ms: *duration_ms,
    };
    region_table(&mut lines, regions, &total, palette);
    failed_hosts_table(&mut lines, notes, run_id, palette);
    slowest_steps_table(&mut lines, notes, palette);
    lines.push(String::new());
    lines.push(verdict_line(event, notes, palette));
    notes_lines(&mut lines, event, notes);
    lines.push(format!("journal: {run_dir}/journal.jsonl"));
    lines.push(format!("logs:    {run_dir}/logs/<host>.log"));
    if let Some(next) = next_line(*outcome, run_id, notes) {
        lines.push(next);
    }
    lines
}

/// A number in a table column, painted when it is not zero.
fn count_cell(n: usize, paint: impl Fn(&str) -> String, width: usize) -> String {
    let text = format!("{n:>width$}");
    if n > 0 {
        paint(&text)
    } else {
        text
    }
}

/// REGION HOSTS OK FAILED ROLLED BACK NOT RUN DURATION, one row per region and a total
/// row when there are several.
fn region_table(
    lines: &mut Vec<String>,
    regions: &[RegionSummary],
    total: &RegionSummary,
    palette: &Palette,
) {
    let width = regions
        .iter()
        .map(|r| r.region.len())
        .max()
        .unwrap_or(0)
        .max(6);
    lines.push(palette.bold(&format!(
        "{:<width$} {:>6} {:>6} {:>7} {:>12} {:>8} {:>9}",
        "REGION", "HOSTS", "OK", "FAILED", "ROLLED BACK", "NOT RUN", "DURATION"
    )));
    let totals = (regions.len() > 1).then_some(total);
    for r in regions.iter().chain(totals) {
        lines.push(format!(
            "{:<width$} {:>6} {:>6} {} {} {} {:>9}",
            r.region,
            r.hosts,
            r.ok,
            count_cell(r.failed, |t| palette.red(t), 7),
            count_cell(r.rolled_back, |t| palette.yellow(t), 12),
            count_cell(r.cancelled, str::to_string, 8),
            crate::duration::short(Duration::from_millis(r.duration_ms)),
        ));
    }
}

/// FAILED HOSTS REGION STEP EXIT NOW, the first [`FAILED_HOSTS`] of them.
fn failed_hosts_table(
    lines: &mut Vec<String>,
    notes: &SummaryNotes,
    run_id: &str,
    palette: &Palette,
) {
    if notes.failures.is_empty() {
        return;
    }
    let widest = |len: &dyn Fn(&FailedHost) -> usize, at_least: usize| {
        notes
            .failures
            .values()
            .map(len)
            .max()
            .unwrap_or(0)
            .max(at_least)
    };
    let host_w = notes
        .failures
        .keys()
        .map(|h| h.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let region_w = widest(&|f| f.region.len(), 6);
    let step_w = widest(&|f| f.step.len(), 4);
    lines.push(String::new());
    lines.push(palette.bold(&format!(
        "{:<host_w$} {:<region_w$} {:<step_w$} {:>5}  {}",
        "FAILED HOSTS", "REGION", "STEP", "EXIT", "NOW"
    )));
    for (host, f) in notes.failures.iter().take(FAILED_HOSTS) {
        let now = f.outcome.unwrap_or(HostOutcome::Failed);
        lines.push(format!(
            "{:<host_w$} {:<region_w$} {:<step_w$} {:>5}  {}",
            host,
            f.region,
            f.step,
            f.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            palette.outcome(now),
        ));
    }
    if notes.failures.len() > FAILED_HOSTS {
        lines.push(format!(
            "… and {} more failed hosts (pony status {run_id})",
            notes.failures.len() - FAILED_HOSTS
        ));
    }
}

/// SLOWEST STEPS MAX HOST MEDIAN TASKS, the [`SLOWEST_STEPS`] with the slowest task.
fn slowest_steps_table(lines: &mut Vec<String>, notes: &SummaryNotes, palette: &Palette) {
    let mut slowest: Vec<(&String, &StepStats)> = notes.steps.iter().collect();
    slowest.sort_by_key(|entry| std::cmp::Reverse(entry.1.slowest_ms));
    slowest.truncate(SLOWEST_STEPS);
    if slowest.is_empty() {
        return;
    }
    let step_width = slowest
        .iter()
        .map(|(s, _)| s.len())
        .max()
        .unwrap_or(0)
        .max(13);
    let host_width = slowest
        .iter()
        .map(|(_, s)| s.slowest_host.len())
        .max()
        .unwrap_or(0)
        .max(4);
    lines.push(String::new());
    lines.push(palette.bold(&format!(
        "{:<step_width$} {:>9}  {:<host_width$} {:>9} {:>6}",
        "SLOWEST STEPS", "MAX", "HOST", "MEDIAN", "TASKS"
    )));
    for (step, stats) in slowest {
        let mut sorted = stats.durations.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        lines.push(format!(
            "{:<step_width$} {:>9}  {:<host_width$} {:>9} {:>6}",
            step,
            crate::duration::short(Duration::from_millis(stats.slowest_ms)),
            stats.slowest_host,
            crate::duration::short(Duration::from_millis(median)),
            sorted.len()
        ));
    }
}

/// `run ID succeeded in 3m 2s: 12 hosts, 11 ok, 1 failed (rolled back), …`.
fn verdict_line(event: &Event, notes: &SummaryNotes, palette: &Palette) -> String {
    let Event::Summary {
        run_id,
        outcome,
        exit_code,
        hosts,
        ok,
        rolled_back,
        cancelled,
        rollback_failed,
        incomplete,
        duration_ms,
        ..
    } = event
    else {
        unreachable!("verdict_line is called with a summary");
    };
    let verdict_text = verdict(*outcome);
    let verdict_text = match outcome {
        RunOutcome::Succeeded => palette.green(verdict_text),
        RunOutcome::FailedRolledBack | RunOutcome::AwaitingApproval | RunOutcome::RolledBack => {
            palette.yellow(verdict_text)
        }
        RunOutcome::NeedsAttention | RunOutcome::Interrupted => palette.red(verdict_text),
    };
    // A host that failed and was then rolled back ended `rolled_back`, but it failed:
    // the verdict line counts every host that failed, however it ended.
    let failed_hosts = notes.failures.len()
        + notes
            .ended_failed
            .iter()
            .filter(|h| !notes.failures.contains_key(*h))
            .count();
    let now_counted = |outcome: HostOutcome| {
        notes
            .failures
            .values()
            .filter(|f| f.outcome == Some(outcome))
            .count()
    };
    let failed_rolled_back = now_counted(HostOutcome::RolledBack);
    let mut asides = Vec::new();
    if failed_rolled_back > 0 {
        asides.push(if failed_rolled_back == failed_hosts {
            "rolled back".to_string()
        } else {
            format!("{failed_rolled_back} rolled back")
        });
    }
    if *rollback_failed > 0 {
        asides.push(format!("{rollback_failed} with a failed rollback"));
    }
    let unreachable = now_counted(HostOutcome::Unreachable);
    if unreachable > 0 {
        asides.push(format!("{unreachable} unreachable, skipped"));
    }
    let asides = if asides.is_empty() {
        String::new()
    } else {
        format!(" ({})", asides.join(", "))
    };
    let incomplete_count = if incomplete.is_empty() {
        String::new()
    } else {
        format!("{} incomplete, ", incomplete.len())
    };
    format!(
        "run {run_id} {verdict_text} in {}: {hosts} hosts, {ok} ok, {failed_hosts} failed{asides}, {rolled_back} rolled back, {incomplete_count}{cancelled} not run (exit {exit_code})",
        crate::duration::short(Duration::from_millis(*duration_ms))
    )
}

/// What the verdict line leaves out: unverified rollbacks, rollbacks not attempted,
/// incomplete hosts, the checks' tally and the wave that stopped the run.
fn notes_lines(lines: &mut Vec<String>, event: &Event, notes: &SummaryNotes) {
    let Event::Summary {
        run_id,
        incomplete,
        stopped_wave,
        ..
    } = event
    else {
        return;
    };
    if !notes.unverified.is_empty() {
        let hosts: Vec<&str> = notes.unverified.iter().map(String::as_str).collect();
        lines.push(format!(
            "unverified: {} host(s) rolled back with no `health:` check to say they serve again ({})",
            hosts.len(),
            hosts.join(", ")
        ));
    }
    if let Some(line) = not_attempted_line(&notes.not_attempted, run_id) {
        lines.push(line);
    }
    if !incomplete.is_empty() {
        lines.push(format!(
            "incomplete: {} (some tasks ran, not all): {} finishes them",
            incomplete.join(", "),
            hint(format_args!("resume {run_id}"))
        ));
    }
    let (passed, failed_checks, first_failure) = &notes.checks;
    if passed + failed_checks > 0 {
        lines.push(format!(
            "checks:  {passed} passed, {failed_checks} failed{}",
            first_failure
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        ));
    }
    if let Some(wave) = stopped_wave {
        let why = if *failed_checks > 0 {
            "failed its verify checks"
        } else {
            "failed beyond its failure budget"
        };
        lines.push(format!(
            "stopped: wave {wave} {why}; its gate did not pass (a later wave never starts)"
        ));
    }
}

/// The command a person runs next, for the outcomes that want one.
fn next_line(outcome: RunOutcome, run_id: &str, notes: &SummaryNotes) -> Option<String> {
    Some(match outcome {
        RunOutcome::Interrupted => format!("resume:  {}", hint(format_args!("resume {run_id}"))),
        RunOutcome::AwaitingApproval => match &notes.approval {
            Some(wave) => format!(
                "approve: {}",
                hint(format_args!("resume {run_id} --approve {wave}"))
            ),
            None => format!(
                "resume:  {}",
                hint(format_args!("resume {run_id} --approve WAVE"))
            ),
        },
        RunOutcome::NeedsAttention => format!(
            "next:    {}; then {} or {}",
            hint(format_args!("status {run_id}")),
            hint(format_args!("resume {run_id}")),
            hint(format_args!("rollback {run_id}"))
        ),
        _ => return None,
    })
}

/// `not attempted: 3 rollback(s) after a failed one: restart@mx1, drain@mx1 (rollback of
/// enable@mx1 failed); …`, listing at most [`FAILED_HOSTS`] of them; `None` when every
/// rollback was attempted.
fn not_attempted_line(groups: &IndexMap<String, Vec<String>>, run_id: &str) -> Option<String> {
    let total: usize = groups.values().map(Vec::len).sum();
    if total == 0 {
        return None;
    }
    let mut shown = 0;
    let mut parts = Vec::new();
    for (failed, labels) in groups {
        if shown >= FAILED_HOSTS {
            break;
        }
        let take = labels.len().min(FAILED_HOSTS - shown);
        shown += take;
        parts.push(format!(
            "{} (rollback of {failed} failed)",
            labels[..take].join(", ")
        ));
    }
    let more = if total > shown {
        format!("; … and {} more (pony status {run_id})", total - shown)
    } else {
        String::new()
    };
    Some(format!(
        "not attempted: {total} rollback(s) after a failed one: {}{more}",
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests;
