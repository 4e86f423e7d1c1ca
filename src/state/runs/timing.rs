//! When a run's tasks and gates happened, read from its local journal (`journal.jsonl`;
//! a database's run has its local copy). The fold of [`super::detail`] keeps each task's
//! last state, not its times; the ETA of `pony status` and the real timeline of `pony
//! serve` need when each task started and ended. Times are milliseconds after the run's
//! first `run_started` record (a resumed run goes on on the same axis).

use super::parse_time;
use crate::events::GateReason;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One task's start and end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTime {
    pub node: usize,
    pub start_ms: u64,
    /// Its start plus its journaled `duration_ms` (a `task_finished` record is not
    /// timed); `None` while it runs.
    pub end_ms: Option<u64>,
    pub failed: bool,
}

/// One wait at a wave's gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateTime {
    pub wave: String,
    pub reason: GateReason,
    pub at_ms: u64,
    /// The announced length (a soak's, a window's; 0 for an approval).
    pub seconds: u64,
    /// The first timed record after the gate's `gate_passed` (the journal does not time
    /// a gate's passing); `None` while it waits.
    pub passed_ms: Option<u64>,
}

/// The run's times as its journal has them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The first `run_started` record's time.
    pub start: SystemTime,
    /// Each task's last start (a resumed run may start a task again).
    pub tasks: Vec<TaskTime>,
    pub gates: Vec<GateTime>,
    /// The journal's last timed record.
    pub last_ms: u64,
    /// The last `run_finished` record: (outcome, exit code, ms).
    pub finished: Option<(serde_json::Value, i32, u64)>,
}

impl Timing {
    /// The times of the run in `run_path`; `None` without a journal or a start record.
    pub fn read(run_path: &Path) -> Option<Timing> {
        let text = std::fs::read_to_string(run_path.join("journal.jsonl")).ok()?;
        Timing::of_lines(text.lines())
    }

    pub fn of_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Timing> {
        let records: Vec<serde_json::Value> =
            lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
        let time_of = |r: &serde_json::Value| r["time"].as_str().and_then(parse_time);
        let start = records
            .iter()
            .find(|r| r["type"] == "run_started")
            .and_then(time_of)?;
        let ms = |t: SystemTime| {
            t.duration_since(start)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64
        };
        let mut timing = Timing {
            start,
            tasks: Vec::new(),
            gates: Vec::new(),
            last_ms: 0,
            finished: None,
        };
        // Where each node's entry is in `tasks`.
        let mut at: std::collections::HashMap<usize, usize> = Default::default();
        let mut passed_waiting: Vec<String> = Vec::new();
        for record in &records {
            let time = time_of(record).map(ms);
            if let Some(t) = time {
                timing.last_ms = timing.last_ms.max(t);
                for wave in passed_waiting.drain(..) {
                    for gate in timing.gates.iter_mut().filter(|g| g.wave == wave) {
                        gate.passed_ms.get_or_insert(t);
                    }
                }
            }
            let node = record["node"].as_u64().map(|n| n as usize);
            match (record["type"].as_str().unwrap_or(""), node, time) {
                ("task_started", Some(node), Some(start_ms)) => {
                    timing.started(&mut at, node, start_ms)
                }
                ("task_finished", Some(node), _) => {
                    if let Some(task) = at.get(&node).map(|&i| &mut timing.tasks[i]) {
                        task.end_ms =
                            Some(task.start_ms + record["duration_ms"].as_u64().unwrap_or(0));
                        task.failed =
                            matches!(record["state"].as_str(), Some("failed" | "interrupted"));
                    }
                }
                ("gate_waiting", _, Some(at_ms)) => {
                    let reason = serde_json::from_value(record["reason"].clone());
                    if let (Some(wave), Ok(reason)) = (record["wave"].as_str(), reason) {
                        timing.gates.push(GateTime {
                            wave: wave.to_string(),
                            reason,
                            at_ms,
                            seconds: record["seconds"].as_u64().unwrap_or(0),
                            passed_ms: None,
                        });
                    }
                }
                ("gate_passed", _, _) => {
                    if let Some(wave) = record["wave"].as_str() {
                        passed_waiting.push(wave.to_string());
                    }
                }
                ("run_finished", _, Some(t)) => {
                    let code = record["exit_code"].as_i64().unwrap_or(0) as i32;
                    timing.finished = Some((record["outcome"].clone(), code, t));
                }
                ("run_resumed", _, _) => timing.finished = None,
                _ => {}
            }
        }
        Some(timing)
    }

    /// A task (re)started: its entry (the one before, if any) is replaced.
    fn started(
        &mut self,
        at: &mut std::collections::HashMap<usize, usize>,
        node: usize,
        start_ms: u64,
    ) {
        let task = TaskTime {
            node,
            start_ms,
            end_ms: None,
            failed: false,
        };
        match at.get(&node) {
            Some(&i) => self.tasks[i] = task,
            None => {
                at.insert(node, self.tasks.len());
                self.tasks.push(task);
            }
        }
    }

    /// How long the run waited at gates (soaks, checks, approvals, windows) between its
    /// start and `until_ms`: waits that overlap are counted once.
    pub fn waited_before(&self, until_ms: u64) -> u64 {
        let mut spans: Vec<(u64, u64)> = self
            .gates
            .iter()
            .map(|g| (g.at_ms, g.passed_ms.unwrap_or(self.last_ms).min(until_ms)))
            .filter(|(a, b)| a < b)
            .collect();
        spans.sort();
        let (mut total, mut reach) = (0, 0);
        for (a, b) in spans {
            let a = a.max(reach);
            if b > a {
                total += b - a;
                reach = b;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_end_at_start_plus_duration_and_gates_pass_at_the_next_timed_record() {
        let lines = [
            r#"{"type":"run_started","time":"2026-12-07T18:16:39.000Z"}"#,
            r#"{"type":"task_started","node":2,"label":"a@h1","time":"2026-12-07T18:16:40.000Z"}"#,
            r#"{"type":"task_finished","node":2,"label":"a@h1","state":"failed","duration_ms":500}"#,
            r#"{"type":"gate_waiting","wave":"canary","reason":"approve","time":"2026-12-07T18:16:41.000Z"}"#,
            r#"{"type":"gate_passed","node":0,"wave":"canary"}"#,
            r#"{"type":"task_started","node":3,"label":"a@h2","time":"2026-12-07T18:16:45.000Z"}"#,
        ];
        let t = Timing::of_lines(lines.into_iter()).unwrap();
        assert_eq!(
            t.tasks[0],
            TaskTime {
                node: 2,
                start_ms: 1000,
                end_ms: Some(1500),
                failed: true
            }
        );
        assert_eq!(t.gates[0].at_ms, 2000);
        assert_eq!(t.gates[0].passed_ms, Some(6000));
        assert_eq!(t.tasks[1].end_ms, None);
        assert_eq!(t.last_ms, 6000);
        assert_eq!(t.waited_before(4000), 2000);
        assert_eq!(t.waited_before(9000), 4000);
    }
}
