//! The end-of-run summary both human reporters print: a table per region (ok, failed,
//! rolled back, not run, duration), the slowest steps, the verdict with the exit code, and
//! where the journal and the per-host logs are.

use super::{short_duration, Palette};
use crate::events::{Event, HostOutcome, RunOutcome};
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
            Event::VerifyCheck {
                wave,
                check,
                host,
                ok,
                detail,
            } => {
                if *ok {
                    self.checks.0 += 1;
                } else {
                    self.checks.1 += 1;
                    self.checks.2.get_or_insert_with(|| {
                        format!("wave {wave} check {check} failed on {host}: {detail}")
                    });
                }
            }
            Event::HealthChecked {
                host,
                checked: false,
                ..
            } => {
                self.unverified.insert(host.clone());
            }
            // A host whose health does not pass after its deploy failed at `health`.
            Event::HealthChecked {
                host,
                region,
                after: crate::events::HealthAfter::Deploy,
                ok: false,
                ..
            } => {
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
        exit_code,
        hosts,
        ok,
        failed,
        rolled_back,
        cancelled,
        rollback_failed,
        incomplete,
        stopped_wave,
        duration_ms,
        regions,
        run_dir,
        ..
    } = event
    else {
        return Vec::new();
    };
    let mut lines = vec![String::new()];
    let width = regions
        .iter()
        .map(|r| r.region.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let count = |n: usize, paint: &dyn Fn(&str) -> String, w: usize| {
        let text = format!("{n:>w$}");
        if n > 0 {
            paint(&text)
        } else {
            text
        }
    };
    let red = |t: &str| palette.red(t);
    let yellow = |t: &str| palette.yellow(t);
    let plain = |t: &str| t.to_string();
    lines.push(palette.bold(&format!(
        "{:<width$} {:>6} {:>6} {:>7} {:>12} {:>8} {:>9}",
        "REGION", "HOSTS", "OK", "FAILED", "ROLLED BACK", "NOT RUN", "DURATION"
    )));
    let mut row = |name: &str, h: usize, o: usize, f: usize, rb: usize, c: usize, ms: u64| {
        lines.push(format!(
            "{:<width$} {:>6} {:>6} {} {} {} {:>9}",
            name,
            h,
            o,
            count(f, &red, 7),
            count(rb, &yellow, 12),
            count(c, &plain, 8),
            short_duration(Duration::from_millis(ms)),
        ));
    };
    for r in regions {
        row(
            &r.region,
            r.hosts,
            r.ok,
            r.failed,
            r.rolled_back,
            r.cancelled,
            r.duration_ms,
        );
    }
    if regions.len() > 1 {
        // The regions' NOT RUN column counts every host not done (incomplete and skipped
        // unreachable ones too); the total is their sum.
        let not_done: usize = regions.iter().map(|r| r.cancelled).sum();
        row(
            "total",
            *hosts,
            *ok,
            *failed,
            *rolled_back,
            not_done,
            *duration_ms,
        );
    }
    if !notes.failures.is_empty() {
        let host_w = notes
            .failures
            .keys()
            .map(|h| h.len())
            .max()
            .unwrap_or(0)
            .max(12);
        let region_w = notes
            .failures
            .values()
            .map(|f| f.region.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let step_w = notes
            .failures
            .values()
            .map(|f| f.step.len())
            .max()
            .unwrap_or(0)
            .max(4);
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
    let mut slowest: Vec<(&String, &StepStats)> = notes.steps.iter().collect();
    slowest.sort_by_key(|entry| std::cmp::Reverse(entry.1.slowest_ms));
    slowest.truncate(SLOWEST_STEPS);
    if !slowest.is_empty() {
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
                short_duration(Duration::from_millis(stats.slowest_ms)),
                stats.slowest_host,
                short_duration(Duration::from_millis(median)),
                sorted.len()
            ));
        }
    }
    lines.push(String::new());
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
    let failed_rolled_back = notes
        .failures
        .values()
        .filter(|f| f.outcome == Some(HostOutcome::RolledBack))
        .count();
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
    let unreachable = notes
        .failures
        .values()
        .filter(|f| f.outcome == Some(HostOutcome::Unreachable))
        .count();
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
    lines.push(format!(
        "run {run_id} {verdict_text} in {}: {hosts} hosts, {ok} ok, {failed_hosts} failed{asides}, {rolled_back} rolled back, {incomplete_count}{cancelled} not run (exit {exit_code})",
        short_duration(Duration::from_millis(*duration_ms))
    ));
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
    lines.push(format!("journal: {run_dir}/journal.jsonl"));
    lines.push(format!("logs:    {run_dir}/logs/<host>.log"));
    match outcome {
        RunOutcome::Interrupted => lines.push(format!(
            "resume:  {}",
            hint(format_args!("resume {run_id}"))
        )),
        RunOutcome::AwaitingApproval => lines.push(match &notes.approval {
            Some(wave) => format!(
                "approve: {}",
                hint(format_args!("resume {run_id} --approve {wave}"))
            ),
            None => format!(
                "resume:  {}",
                hint(format_args!("resume {run_id} --approve WAVE"))
            ),
        }),
        RunOutcome::NeedsAttention => lines.push(format!(
            "next:    {}; then {} or {}",
            hint(format_args!("status {run_id}")),
            hint(format_args!("resume {run_id}")),
            hint(format_args!("rollback {run_id}"))
        )),
        _ => {}
    }
    lines
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
mod tests {
    use super::*;
    use crate::events::{RegionSummary, TaskRef};

    fn finished(step: &str, host: &str, ms: u64) -> Event {
        Event::TaskFinished {
            task: TaskRef {
                id: 0,
                step: step.into(),
                host: host.into(),
                region: "r1".into(),
                cluster: "c1".into(),
                wave: "w".into(),
                label: format!("{step}@{host}"),
            },
            changed: true,
            exit_code: Some(0),
            duration_ms: ms,
            attempts: 1,
            record: Default::default(),
        }
    }

    #[test]
    fn summary_has_regions_slowest_steps_verdict_and_paths() {
        let mut notes = SummaryNotes::default();
        for (step, host, ms) in [("stage", "a", 10), ("stage", "b", 30), ("drain", "a", 9000)] {
            notes.observe(&finished(step, host, ms));
        }
        let region = |name: &str, ok, rb| RegionSummary {
            region: name.into(),
            hosts: 2,
            ok,
            failed: 0,
            rolled_back: rb,
            cancelled: 0,
            duration_ms: 1500,
        };
        let summary = Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::FailedRolledBack,
            exit_code: 1,
            hosts: 4,
            ok: 3,
            failed: 0,
            rolled_back: 1,
            cancelled: 0,
            rollback_failed: 0,
            incomplete: Vec::new(),
            stopped_wave: None,
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 2500,
            regions: vec![region("eu-west", 2, 0), region("cn-south", 1, 1)],
            run_dir: "/state/runs/RUN".into(),
        };
        notes.observe(&Event::TaskFailed {
            task: TaskRef {
                id: 1,
                step: "switch".into(),
                host: "c".into(),
                region: "cn-south".into(),
                cluster: "c1".into(),
                wave: "w".into(),
                label: "switch@c".into(),
            },
            exit_code: Some(7),
            error: "exited with 7".into(),
            stderr_tail: String::new(),
            duration_ms: 5,
            attempts: 1,
            record: Default::default(),
        });
        notes.observe(&Event::HostFinished {
            host: "c".into(),
            region: "cn-south".into(),
            cluster: "c1".into(),
            outcome: HostOutcome::RolledBack,
        });
        let text = render(&summary, &notes, &Palette::new(false)).join("\n");
        assert!(text.contains("REGION"), "{text}");
        assert!(text.contains("cn-south"), "{text}");
        assert!(text.contains("total"), "{text}");
        let drain = text.lines().find(|l| l.starts_with("drain")).unwrap();
        assert!(drain.contains("9.0s") && drain.contains(" a "), "{drain}");
        assert!(
            text.contains("run RUN failed; rollback complete in 2.5s: 4 hosts, 3 ok, 1 failed (rolled back), 1 rolled back, 0 not run (exit 1)"),
            "{text}"
        );
        assert!(text.contains("journal: /state/runs/RUN/journal.jsonl"));
    }

    #[test]
    fn a_halted_runs_total_counts_what_its_regions_count_and_says_incomplete() {
        let region = |name: &str, not_done| RegionSummary {
            region: name.into(),
            hosts: 2,
            ok: 2 - not_done,
            failed: 0,
            rolled_back: 0,
            cancelled: not_done,
            duration_ms: 10,
        };
        // a and b were halted in flight, c never started.
        let summary = Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::NeedsAttention,
            exit_code: 3,
            hosts: 4,
            ok: 1,
            failed: 0,
            rolled_back: 0,
            cancelled: 1,
            rollback_failed: 0,
            incomplete: vec!["a".into(), "b".into()],
            stopped_wave: None,
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 10,
            regions: vec![region("r1", 2), region("r2", 1)],
            run_dir: "/state/runs/RUN".into(),
        };
        let text = render(&summary, &SummaryNotes::default(), &Palette::new(false)).join("\n");
        let total = text.lines().find(|l| l.starts_with("total")).unwrap();
        let columns: Vec<&str> = total.split_whitespace().collect();
        assert_eq!(columns[..6], ["total", "4", "1", "0", "0", "3"], "{text}");
        assert!(
            text.contains(
                "4 hosts, 1 ok, 0 failed, 0 rolled back, 2 incomplete, 1 not run (exit 3)"
            ),
            "{text}"
        );
    }

    #[test]
    fn summary_counts_verify_checks_and_names_the_failed_one() {
        let mut notes = SummaryNotes::default();
        for ok in [true, true, false] {
            notes.observe(&Event::VerifyCheck {
                wave: "canary".into(),
                check: "errors".into(),
                host: "mx-1".into(),
                ok,
                detail: if ok {
                    "3".into()
                } else {
                    "canary median 50 vs baseline median 10".into()
                },
            });
        }
        let summary = Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::FailedRolledBack,
            exit_code: 1,
            hosts: 2,
            ok: 1,
            failed: 1,
            rolled_back: 1,
            cancelled: 0,
            rollback_failed: 0,
            incomplete: Vec::new(),
            stopped_wave: Some("canary".into()),
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 2500,
            regions: Vec::new(),
            run_dir: "/state/runs/RUN".into(),
        };
        let text = render(&summary, &notes, &Palette::new(false)).join("\n");
        assert!(
            text.contains("checks:  2 passed, 1 failed (wave canary check errors failed on mx-1: canary median 50 vs baseline median 10)"),
            "{text}"
        );
        assert!(
            text.contains(
                "stopped: wave canary failed its verify checks; its gate did not pass (a later wave never starts)"
            ),
            "{text}"
        );
    }
}
