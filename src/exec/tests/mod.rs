//! The scheduler's rules, in process, over `connection: local` hosts in a temp dir: the
//! `max_unavailable` slots, failure budgets and every `on_failure`, rollback order, waves,
//! `per: region`/`per: run`, and interrupts. Each run takes milliseconds; the order of
//! events (not the clock) is what is checked, plus the hosts' files.

mod budgets;
mod interrupts;
mod rollback;
mod rules;
mod unreachable;
mod verify;
mod windows;

use super::hosts::HostPool;
use super::{ExecOptions, Mode, RunReport};
use crate::events::{Event, EventSink, HostOutcome};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::secret::Redactor;
use crate::transport::ssh::SshOptions;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

const INVENTORY: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    clusters:
      c1: { hosts: { "a[1:4]": } }
  r2:
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;

struct Run {
    dir: tempfile::TempDir,
    plan: Arc<Plan>,
    interrupts: watch::Sender<u32>,
    events: mpsc::UnboundedReceiver<Event>,
    report: tokio::task::JoinHandle<RunReport>,
}

fn plan(inventory: &str, playbook: &str) -> Arc<Plan> {
    Arc::new(crate::plan::from_yaml(inventory, playbook))
}

/// Starts a run; its events arrive in order on `events` (each acknowledged as durable).
fn start(playbook: &str) -> Run {
    start_in(INVENTORY, playbook)
}

/// Starts a run over another inventory.
fn start_in(inventory: &str, playbook: &str) -> Run {
    start_with(inventory, playbook, chrono::Utc::now)
}

/// Starts a run over `inventory` with the scheduler's clock starting at `clock()`.
fn start_with(
    inventory: &str,
    playbook: &str,
    clock: fn() -> chrono::DateTime<chrono::Utc>,
) -> Run {
    start_journaling(inventory, playbook, clock, usize::MAX)
}

/// [`start_with`], with a journal that records only the first `durable` facts the run
/// must not go past, and then fails (a full disk): later ones are never acknowledged.
fn start_journaling(
    inventory: &str,
    playbook: &str,
    clock: fn() -> chrono::DateTime<chrono::Utc>,
    durable: usize,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(inventory, playbook);
    let pool = HostPool::new(
        plan.clone(),
        SshOptions::new(dir.path(), false),
        dir.path().join("hosts"),
    )
    .prepare();
    let (interrupts, watched) = watch::channel(0);
    let (sink, mut emitted) = EventSink::new();
    let (forward, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut journaled = 0;
        while let Some(e) = emitted.recv().await {
            if let Some(ack) = e.durable {
                if journaled < durable {
                    journaled += 1;
                    let _ = ack.send(());
                }
            }
            let _ = forward.send(e.event);
        }
    });
    let options = ExecOptions {
        run_id: "test-run".into(),
        run_dir_display: String::new(),
        redactor: Redactor::new(std::iter::empty(), std::iter::empty()),
        approvals: Vec::new(),
        connections: plan.playbook.strategy.connections,
        interrupts: watched,
        approver: None,
        approval_wait: None,
        control: None,
        replay: None,
        mode: Mode::Deploy,
        clock: crate::exec::clock::Clock::starting_at(clock()),
        skip_failed_wave: None,
        rollback_pace: plan.playbook.strategy.rollback_pace,
        split: None,
        lease_lost: None,
    };
    let report = tokio::spawn(super::run(plan.clone(), pool, options, sink));
    Run {
        dir,
        plan,
        interrupts,
        events,
        report,
    }
}

impl Run {
    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// Waits until the host's command has really started (its first line is written).
    async fn wait_for_file(&self, host: &str, file: &str) {
        let path = self.host_dir(host).join(file);
        for _ in 0..3000 {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{} never appeared", path.display());
    }

    fn read(&self, host: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.host_dir(host).join(file)).ok()
    }

    /// Waits for the first event that matches.
    async fn until(&mut self, seen: &mut Vec<Event>, wanted: impl Fn(&Event) -> bool) {
        while let Some(event) = self.events.recv().await {
            let hit = wanted(&event);
            seen.push(event);
            if hit {
                return;
            }
        }
        panic!("the run ended before the awaited event: {seen:#?}");
    }

    async fn finish(mut self, mut seen: Vec<Event>) -> (RunReport, Vec<Event>, Run) {
        let report = (&mut self.report).await.unwrap();
        while let Some(event) = self.events.recv().await {
            seen.push(event);
        }
        (report, seen, self)
    }

    fn outcome(&self, report: &RunReport, host: &str) -> Option<HostOutcome> {
        report.hosts[self.plan.inventory.host_id(host).unwrap()]
    }
}

async fn run_to_end(playbook: &str) -> (RunReport, Vec<Event>, Run) {
    start(playbook).finish(Vec::new()).await
}

fn step_of(event: &Event) -> Option<(&str, &str)> {
    match event {
        Event::TaskStarted { task } => Some((&task.step, &task.host)),
        _ => None,
    }
}

fn rolled_back_hosts(events: &[Event]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::RollbackTask { task, ok: true, .. } => Some(task.host.clone()),
            _ => None,
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

const ONE_WAVE: &str = "  waves: [{ name: all, regions: [\"*\"] }]\n";

fn playbook(strategy: &str, steps: &str) -> String {
    format!("name: p\nstrategy:\n{ONE_WAVE}{strategy}steps:\n{steps}")
}

/// A step that fails on the named hosts and records every run and rollback in `log`.
fn failing_on(hosts: &str) -> String {
    format!(
        r#"  - name: mark
    run: echo mark >> log
    rollback: echo undo-mark >> log
  - name: check
    needs: [mark]
    run: "echo check >> log; case {{{{ host.name }}}} in {hosts}) exit 1;; esac"
    rollback: echo undo-check >> log
"#
    )
}

fn started_hosts(events: &[Event]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter_map(|e| step_of(e).map(|(_, h)| h.to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}
