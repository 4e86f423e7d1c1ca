//! `pony simulate` and `pony deploy --dry-run`: the deploy scheduler
//! ([`crate::exec::run`], the same code) run in virtual time ([`rehearse`]) over a
//! simulated transport, or, for the dry run, over [`record`]'s, which writes down what
//! the scheduler sends and answers at once. The run gets a current-thread tokio runtime
//! whose clock is paused: whenever every task waits, tokio jumps to the next timer, so a
//! ten-hour rollout (pauses, change windows, retry delays, drains) takes as long as its
//! scheduling work. Nothing is contacted ([`transport`]), nothing is written (the event
//! consumer is [`trace`], not the journal), no lock is taken.
//!
//! - [`durations`]: how long each task takes (files, journals, `estimate:`, defaults);
//! - [`transport`]: the simulated connections;
//! - [`record`]: the recording connections of `--dry-run`;
//! - [`trace`]: the run's events with their virtual times;
//! - [`report`]: what the trace means: totals, waves, regions, the binding limit, the
//!   critical path; as text and JSON;
//! - [`svg`]: the timeline picture;
//! - [`journal`]: a real run's journal as a trace, for the same picture;
//! - [`saved`]: simulations kept (`--save`) for the run page of `pony serve`;
//! - [`edit`]: `--set` overrides and the by-hand baseline of `--compare`;
//! - [`format`]: how a length of time is written.

pub mod durations;
pub mod edit;
pub mod journal;
pub mod record;
pub mod report;
pub mod saved;
pub mod svg;
pub mod text;
pub mod trace;
pub mod transport;

use crate::events::{Emitted, EventSink};
use crate::exec::clock::Clock;
use crate::exec::hosts::HostPool;
use crate::exec::{ApprovalRequest, ExecOptions, Mode};
use crate::plan::Plan;
use crate::playbook::RollbackPace;
use crate::secret::Redactor;
use crate::transport::connect::{Connector, Opener};
use chrono::{DateTime, Utc};
use durations::Durations;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

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
    let model = Arc::new(transport::Model::new(plan.clone(), durations, options));
    let rehearsal = Rehearsal {
        start: options.start,
        approve_after: options.approve_after,
        connections: options
            .connections
            .unwrap_or(plan.playbook.strategy.connections),
        rollback_pace: plan.playbook.strategy.rollback_pace,
    };
    let opener = Arc::new(transport::SimOpener(model));
    rehearse(plan.clone(), opener, &rehearsal, move |events, started| {
        trace::record(plan, events, started)
    })
}

/// How one run of the real scheduler in virtual time is set up; `pony simulate` and
/// `pony deploy --dry-run` (over [`record`]'s transport) both run it through [`rehearse`],
/// so neither can admit hosts differently from a deploy.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    /// The wall-clock instant the run starts at (change windows open from it).
    pub start: DateTime<Utc>,
    /// How long a person takes to answer an `approve:` gate.
    pub approve_after: Duration,
    /// Hosts worked on at once over the whole run.
    pub connections: usize,
    pub rollback_pace: RollbackPace,
}

/// Runs [`crate::exec::run`] on a current-thread runtime with tokio's clock paused, over
/// connections from `opener` (nothing else is contacted, nothing written, no lock taken),
/// and hands its events to `consume`, started with the run's first instant; returns what
/// `consume` made of them once the scheduler is done.
pub fn rehearse<T, F>(
    plan: Arc<Plan>,
    opener: Arc<dyn Opener>,
    rehearsal: &Rehearsal,
    consume: impl FnOnce(UnboundedReceiver<Emitted>, tokio::time::Instant) -> F,
) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let connector = Connector::with_opener(
            opener,
            &plan.inventory.hosts,
            plan.playbook.strategy.handshakes,
        );
        let pool = HostPool::with_connector(plan.clone(), connector).prepare();
        let (sink, events) = EventSink::new();
        let consumer = tokio::spawn(consume(events, tokio::time::Instant::now()));
        // Never interrupted: the sender lives as long as the run.
        let (_interrupt, interrupts) = tokio::sync::watch::channel(0u32);
        let options = exec_options(rehearsal, interrupts);
        crate::exec::run(plan.clone(), pool, options, sink).await;
        consumer.await.expect("the event consumer never panics")
    })
}

/// A deploy's options as a rehearsal has them: approvals answered `yes` after the given
/// time, no redaction (nothing is shown), no journal replay, no control channel.
fn exec_options(
    rehearsal: &Rehearsal,
    interrupts: tokio::sync::watch::Receiver<u32>,
) -> ExecOptions {
    let (approver, mut questions) = tokio::sync::mpsc::unbounded_channel::<ApprovalRequest>();
    let approve_after = rehearsal.approve_after;
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            tokio::spawn(async move {
                tokio::time::sleep(approve_after).await;
                let _ = question.answer.send(true);
            });
        }
    });
    ExecOptions {
        run_id: "simulation".into(),
        run_dir_display: String::new(),
        redactor: Redactor::new(std::iter::empty(), std::iter::empty()),
        approvals: Vec::new(),
        connections: rehearsal.connections,
        interrupts,
        approver: Some(approver),
        approval_wait: None,
        control: None,
        replay: None,
        mode: Mode::Deploy,
        clock: Clock::starting_at(rehearsal.start),
        skip_failed_wave: None,
        rollback_pace: rehearsal.rollback_pace,
        split: None,
        lease_lost: None,
    }
}

#[cfg(test)]
mod tests;
