//! `pony simulate`: the deploy scheduler ([`crate::exec::run`], the same code) run in
//! virtual time over a simulated transport. The run gets a current-thread tokio runtime
//! whose clock is paused: whenever every task waits, tokio jumps to the next timer, so a
//! ten-hour rollout (pauses, change windows, retry delays, drains) takes as long as its
//! scheduling work. Nothing is contacted ([`transport`]), nothing is written (the event
//! consumer is [`trace`], not the journal), no lock is taken.
//!
//! - [`durations`]: how long each task takes (files, journals, `estimate:`, defaults);
//! - [`transport`]: the simulated connections;
//! - [`trace`]: the run's events with their virtual times;
//! - [`report`]: what the trace means: totals, waves, regions, the binding limit, the
//!   critical path; as text and JSON;
//! - [`svg`]: the timeline picture;
//! - [`edit`]: `--set` overrides and the by-hand baseline of `--compare`.

pub mod durations;
pub mod edit;
pub mod report;
pub mod svg;
pub mod text;
pub mod trace;
pub mod transport;

use crate::events::EventSink;
use crate::exec::clock::Clock;
use crate::exec::hosts::HostPool;
use crate::exec::{ApprovalRequest, ExecOptions, Mode};
use crate::plan::Plan;
use crate::secret::Redactor;
use crate::transport::connect::Connector;
use chrono::{DateTime, Utc};
use durations::Durations;
use std::sync::Arc;
use std::time::Duration;

/// The what-ifs of one simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Probability that one attempt of a task fails.
    pub fail: f64,
    /// Probability that a host cannot be reached.
    pub unreachable: f64,
    /// Tasks that fail whatever the rate (every attempt), e.g. as they did in a past run.
    pub failing: Vec<crate::plan::NodeId>,
    /// The wall-clock instant the run starts at (change windows open from it).
    pub start: DateTime<Utc>,
    /// How long a person takes to answer an `approve:` gate.
    pub approve_after: Duration,
    /// Hosts worked on at once (the playbook's `connections` unless overridden).
    pub connections: Option<usize>,
}

/// Runs `plan` in virtual time and returns what happened when.
pub fn simulate(plan: Arc<Plan>, durations: Durations, options: &SimOptions) -> trace::Trace {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run(plan, durations, options))
}

async fn run(plan: Arc<Plan>, durations: Durations, options: &SimOptions) -> trace::Trace {
    let model = Arc::new(transport::Model::new(plan.clone(), durations, options));
    let strategy = &plan.playbook.strategy;
    let connector = Connector::with_opener(
        Arc::new(transport::SimOpener(model)),
        &plan.inventory.hosts,
        strategy.handshakes,
    );
    let pool = HostPool::with_connector(plan.clone(), connector).prepare();
    let (sink, events) = EventSink::new();
    let clock = Clock::starting_at(options.start);
    let recording = tokio::spawn(trace::record(
        plan.clone(),
        events,
        tokio::time::Instant::now(),
    ));
    // Approval gates are answered `yes` after the given time.
    let (approver, mut questions) = tokio::sync::mpsc::unbounded_channel::<ApprovalRequest>();
    let approve_after = options.approve_after;
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            tokio::spawn(async move {
                tokio::time::sleep(approve_after).await;
                let _ = question.answer.send(true);
            });
        }
    });
    // Never interrupted; the sender lives as long as the run.
    let (_interrupt, interrupts) = tokio::sync::watch::channel(0u32);
    let exec_options = ExecOptions {
        run_id: "simulation".into(),
        run_dir_display: String::new(),
        redactor: Redactor::new(std::iter::empty(), std::iter::empty()),
        approvals: Vec::new(),
        connections: options.connections.unwrap_or(strategy.connections),
        interrupts,
        approver: Some(approver),
        approval_wait: None,
        control: None,
        replay: None,
        mode: Mode::Deploy,
        clock,
        skip_failed_wave: None,
        rollback_pace: strategy.rollback_pace,
        split: None,
        lease_lost: None,
    };
    crate::exec::run(plan.clone(), pool, exec_options, sink).await;
    recording.await.expect("the trace consumer never panics")
}

#[cfg(test)]
mod tests;
