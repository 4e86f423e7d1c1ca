//! A running run's ETA, as `pony status` (and the run page of `pony serve`) gives it:
//! the deploy's own reckoning ([`crate::report::terminal::eta`]: the hosts still to go
//! at the pace of the working time so far, gate waits left out) applied to the journal
//! instead of a live clock, so it is a function of the journal alone: any two readers of
//! the same journal give the same ETA.

use crate::plan::Plan;
use crate::playbook::Per;
use crate::state::runs::timing::Timing;
use crate::state::runs::{RunDetail, RunState, TaskStatus};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Eta {
    /// Hosts every task of which ended (succeeded, skipped or failed).
    pub hosts_ended: usize,
    /// Hosts with tasks still to run.
    pub hosts_left: usize,
    /// Working time from the run's start to the last host's end (gate waits left out).
    pub worked_ms: u64,
    /// The work left at that pace.
    pub left_ms: u64,
    /// When the run should end (RFC 3339, UTC): the last host's end plus the work left;
    /// absent while the run waits (a gate, a window, a pause), whose end is unknown.
    pub at: Option<String>,
}

/// The ETA of a running run (none before a host ended or once none is left).
pub fn of(detail: &RunDetail, plan: Option<&Plan>, waiting: bool) -> Option<Eta> {
    let plan = plan.filter(|_| detail.summary.state == RunState::Running)?;
    let timing = Timing::read(&detail.summary.path)?;
    let state_of: HashMap<&str, TaskStatus> = detail
        .tasks
        .iter()
        .map(|t| (t.label.as_str(), t.state))
        .collect();
    let end_of: HashMap<usize, u64> = timing
        .tasks
        .iter()
        .filter_map(|t| Some((t.node, t.end_ms?)))
        .collect();
    // Per host: whether every `per: host` task of it ended, and when the last did.
    let mut hosts: HashMap<usize, (bool, u64)> = HashMap::new();
    for (node, task) in plan.tasks() {
        if task.per != Per::Host || plan.host_wave[task.host].is_none() {
            continue;
        }
        let ended = matches!(
            state_of.get(plan.label(node).as_str()),
            Some(TaskStatus::Succeeded | TaskStatus::Skipped | TaskStatus::Failed)
        );
        let entry = hosts.entry(task.host).or_insert((true, 0));
        entry.0 &= ended;
        entry.1 = entry.1.max(end_of.get(&node.index()).copied().unwrap_or(0));
    }
    let ended: Vec<u64> = hosts.values().filter(|h| h.0).map(|h| h.1).collect();
    let left = hosts.len() - ended.len();
    let last_end = ended.iter().copied().max().unwrap_or(0);
    let worked_ms = last_end.saturating_sub(timing.waited_before(last_end));
    let left_time = crate::report::terminal::eta(
        Duration::from_millis(worked_ms),
        ended.len() as u64,
        left as u64,
        false,
    )?;
    let left_ms = left_time.as_millis() as u64;
    let at = (!waiting).then(|| {
        let end = timing.start + Duration::from_millis(last_end + left_ms);
        chrono::DateTime::<chrono::Utc>::from(end)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    Some(Eta {
        hosts_ended: ended.len(),
        hosts_left: left,
        worked_ms,
        left_ms,
        at,
    })
}

impl Eta {
    /// `ends around 18:20:00 UTC (1m 40s of work left, 2 of 4 hosts ended)`, or while
    /// the run waits `1m 40s of work left after the wait (…)`.
    pub fn words(&self) -> String {
        let left = crate::duration::short_ms(self.left_ms);
        let hosts = format!(
            "{} of {} hosts ended",
            self.hosts_ended,
            self.hosts_ended + self.hosts_left
        );
        match &self.at {
            Some(at) => format!(
                "ends around {} ({left} of work left at the pace so far, {hosts})",
                crate::state::runs::format_time(at)
            ),
            None => format!("{left} of work left after the wait, at the pace so far ({hosts})"),
        }
    }
}
