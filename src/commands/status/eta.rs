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

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
name: t
regions:
  r1:
    clusters:
      c1: { hosts: { "a[1:5]": } }
  r2:
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;
    const PLAYBOOK: &str = r#"
name: p
strategy:
  waves:
    - { name: all, regions: ["*"] }
  max_unavailable: 100%
steps:
  - { name: s, run: "true" }
"#;

    /// A run's journal: a1 ended 10 s in,
    /// a2 30 s in, the run waited at a gate from 5 s to 15 s; the others did not end.
    fn journal(plan: &Plan, dir: &std::path::Path) -> RunDetail {
        let node = |host: &str| {
            plan.tasks()
                .find(|(n, _)| plan.label(*n) == format!("s@{host}"))
                .map(|(n, _)| n.index())
                .unwrap()
        };
        let at = |s: u32| format!("2026-03-10T20:00:{s:02}.000Z");
        let lines = [
            format!(
                r#"{{"type":"run_started","run_id":"r","playbook":"p","inventory":"t","time":"{}","pid":{},"user":"u","host":"h"}}"#,
                at(0),
                std::process::id()
            ),
            format!(
                r#"{{"type":"task_started","node":{},"label":"s@a1","time":"{}"}}"#,
                node("a1"),
                at(0)
            ),
            format!(
                r#"{{"type":"task_started","node":{},"label":"s@a2","time":"{}"}}"#,
                node("a2"),
                at(0)
            ),
            format!(
                r#"{{"type":"gate_waiting","wave":"all","reason":"soak","time":"{}"}}"#,
                at(5)
            ),
            format!(
                r#"{{"type":"task_finished","node":{},"label":"s@a1","state":"succeeded","exit_code":0,"duration_ms":10000,"captures":[],"output_tail":"","error":null,"changed":true}}"#,
                node("a1")
            ),
            r#"{"type":"gate_passed","node":0,"wave":"all"}"#.to_string(),
            format!(
                r#"{{"type":"task_started","node":{},"label":"s@b1","time":"{}"}}"#,
                node("b1"),
                at(15)
            ),
            format!(
                r#"{{"type":"task_finished","node":{},"label":"s@a2","state":"succeeded","exit_code":0,"duration_ms":30000,"captures":[],"output_tail":"","error":null,"changed":true}}"#,
                node("a2")
            ),
        ];
        let run = dir.join("runs").join("r");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
        crate::state::runs::read(dir, "r")
    }

    #[test]
    fn the_hosts_left_at_the_pace_of_the_working_time_so_far_waits_left_out() {
        let plan = crate::plan::from_yaml(INVENTORY, PLAYBOOK);
        let dir = tempfile::tempdir().unwrap();
        let mut detail = journal(&plan, dir.path());
        // Running is what a live controller makes of it (no controller here).
        assert_eq!(
            of(&detail, Some(&plan), false),
            None,
            "a run that is not running"
        );
        detail.summary.state = RunState::Running;
        let eta = of(&detail, Some(&plan), false).unwrap();
        // 30 s to a2's end, 10 s of it at the gate: 20 s of work for 2 hosts; 5 left.
        assert_eq!(
            eta,
            Eta {
                hosts_ended: 2,
                hosts_left: 5,
                worked_ms: 20_000,
                left_ms: 50_000,
                at: Some("2026-03-10T20:01:20Z".into()),
            }
        );
        assert!(eta
            .words()
            .starts_with("ends around 2026-03-10 20:01:20 UTC (50.0s of work left"));
        // While the run waits, its end is not known; the work left is.
        let waiting = of(&detail, Some(&plan), true).unwrap();
        assert_eq!((waiting.left_ms, waiting.at), (50_000, None));
        assert_eq!(of(&detail, None, false), None, "no plan, no hosts to count");
    }
}
