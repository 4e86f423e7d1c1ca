//! The simulated transport: connections that contact nothing. A task's action takes its
//! sampled duration on tokio's (paused) clock and succeeds, or fails at `--fail` rate per
//! attempt; guards (`creates`, `unless`) say the work is not done yet; an upload's
//! content is never in place; a host drawn unreachable (`--unreachable` rate) fails every
//! connection attempt after its connect timeout, so the connector's own retries and
//! backoff play out. Verify checks pass at once (printing `0`, a number for `compare`).
//! Which task a call belongs to comes from [`crate::exec::task::WORK`].

use super::durations::{mix, unit, Durations};
use crate::exec::task::{Work, WORK};
use crate::inventory::Host;
use crate::plan::Plan;
use crate::playbook::Action;
use crate::transport::connect::Opener;
use crate::transport::{BoxFuture, CommandOutput, Connection, Stream, TransportError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Salts that keep the draws of different questions apart.
const DRAW_DURATION: u64 = 1;
const DRAW_FAILURE: u64 = 2;
const DRAW_UNREACHABLE: u64 = 3;

/// What the simulated hosts do.
pub struct Model {
    pub plan: Arc<Plan>,
    pub durations: Durations,
    pub seed: u64,
    /// Probability that one attempt of a task fails.
    pub fail: f64,
    /// Probability that a host cannot be reached at all.
    pub unreachable: f64,
    /// Tasks (by node index) every attempt of which fails (`--fail-task`).
    pub failing: std::collections::HashSet<usize>,
    calls: Calls,
}

impl Model {
    pub fn new(plan: Arc<Plan>, durations: Durations, options: &super::SimOptions) -> Self {
        Model {
            plan,
            durations,
            seed: options.seed,
            fail: options.fail,
            unreachable: options.unreachable,
            failing: options.failing.iter().map(|n| n.index()).collect(),
            calls: Calls::default(),
        }
    }

    /// Whether the host was drawn unreachable.
    pub fn is_unreachable(&self, host: usize) -> bool {
        self.unreachable > 0.0
            && unit(self.seed, &[DRAW_UNREACHABLE, host as u64]) < self.unreachable
    }

    /// One attempt of the task's action: its duration and whether it fails.
    fn attempt(&self, work: &Work, call: u32) -> (Duration, bool) {
        let parts = [work.node as u64, call as u64, work.rollback as u64];
        let r = mix(self.seed, &[&[DRAW_DURATION][..], &parts].concat());
        if work.rollback {
            return (self.durations.rollback(work.step, r), false);
        }
        let failed = self.failing.contains(&work.node)
            || (self.fail > 0.0
                && unit(self.seed, &[&[DRAW_FAILURE][..], &parts].concat()) < self.fail);
        (self.durations.task(work.step, work.host, r), failed)
    }
}

/// Calls made so far per task (and per rollback), to tell guards from the action.
#[derive(Default)]
pub(super) struct Calls(Mutex<HashMap<(usize, bool), u32>>);

impl Calls {
    /// The number of this call within its task (0 for the first).
    pub(super) fn next(&self, work: &Work) -> u32 {
        let mut calls = self.0.lock().expect("not poisoned");
        let n = calls.entry((work.node, work.rollback)).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// Whether call number `call` of a task is one of its step's guards (`creates`,
/// `unless`: its first calls), which a simulated host answers "not done yet".
pub(super) fn is_guard(plan: &Plan, work: &Work, call: u32) -> bool {
    let step = &plan.playbook.steps[work.step];
    !work.rollback && call < step.creates.is_some() as u32 + step.unless.is_some() as u32
}

/// Opens simulated connections.
pub struct SimOpener(pub Arc<Model>);

impl Opener for SimOpener {
    fn open<'a>(
        &'a self,
        host: &'a Host,
        connect_timeout: Duration,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            let id = self
                .0
                .plan
                .inventory
                .host_id(&host.name)
                .expect("a host of the plan");
            if self.0.is_unreachable(id) {
                tokio::time::sleep(connect_timeout).await;
                return Err(TransportError::Connect(format!(
                    "ssh: connect to host {}: Connection timed out (simulated --unreachable)",
                    host.destination()
                )));
            }
            Ok(Arc::new(SimConnection {
                model: self.0.clone(),
            }) as Arc<dyn Connection>)
        })
    }
}

struct SimConnection {
    model: Arc<Model>,
}

fn output(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        exit_code: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

const FAILED: &str = "simulated failure (--fail)\n";

impl Connection for SimConnection {
    fn run<'a>(
        &'a self,
        _command: &'a str,
        _timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            // A verify check: healthy, and a number for `compare`.
            let Ok(work) = WORK.try_with(|w| *w) else {
                return Ok(output(0, "0\n", ""));
            };
            let call = self.model.calls.next(&work);
            if is_guard(&self.model.plan, &work, call) {
                // `creates` / `unless`: the work is not done yet.
                return Ok(output(1, "", ""));
            }
            let action = &self.model.plan.playbook.steps[work.step].action;
            if !work.rollback && matches!(action, Action::Upload(_) | Action::Template(_)) {
                // The upload's checksum, mkdir and rename: the time is in the write.
                return Ok(output(0, "", ""));
            }
            let (duration, failed) = self.model.attempt(&work, call);
            tokio::time::sleep(duration).await;
            Ok(if failed {
                output(1, "", FAILED)
            } else {
                output(0, "", "")
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        _path: &'a str,
        _content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let Ok(work) = WORK.try_with(|w| *w) else {
                return Ok(());
            };
            let call = self.model.calls.next(&work);
            let (duration, failed) = self.model.attempt(&work, call);
            tokio::time::sleep(duration).await;
            if failed {
                return Err(TransportError::Other(FAILED.trim().into()));
            }
            Ok(())
        })
    }

    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Other(format!(
                "a simulation opens no port ({address}:{port})"
            )))
        })
    }

    fn is_simulated(&self) -> bool {
        true
    }

    fn simulated_probe(&self) -> Option<BoxFuture<'_, Result<String, String>>> {
        Some(Box::pin(async move {
            let Ok(work) = WORK.try_with(|w| *w) else {
                return Ok("simulated".to_string());
            };
            let call = self.model.calls.next(&work);
            let (duration, failed) = self.model.attempt(&work, call);
            tokio::time::sleep(duration).await;
            if failed {
                Err(FAILED.trim().to_string())
            } else {
                Ok("simulated".to_string())
            }
        }))
    }
}
