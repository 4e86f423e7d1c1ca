//! Live control applied to the run (`pony pause|continue|abort|approve` from another
//! shell): the pause that holds every task that would start a new host, the abort (as the
//! first Ctrl-C, or with a rollback of every touched host), and answers to `approve:`
//! gates from outside the terminal. Each command is journaled (who, when, from where)
//! before its sender is told it was applied.

use super::nodes::State;
use super::{Scheduler, Stop};
use crate::events::Event;
use crate::exec::host_run::Phase;
use crate::plan::{NodeId, Task};
use crate::playbook::Per;
use std::collections::HashMap;

use crate::control::{ControlCommand, ControlReply, ControlRequest, Operator};
use tokio::task::AbortHandle;

/// The run's live-control state.
#[derive(Default)]
pub(super) struct Live {
    /// Who paused the run; while set, no new host starts.
    paused: Option<Operator>,
    /// Tasks that became ready while paused and would have started a host (or are
    /// `per: region`/`per: run`): they go through readiness again at `continue`.
    held: Vec<NodeId>,
    /// Waves whose `approve:` gate waits for an answer, with the wait to end when the
    /// answer comes from elsewhere (the terminal question, or the bounded wait of a run
    /// without a terminal).
    pub(super) asking: HashMap<usize, AbortHandle>,
}

fn who(operator: &Operator) -> String {
    format!("{}@{} (pid {})", operator.user, operator.host, operator.pid)
}

impl Scheduler {
    /// With nothing running, a paused run still waits: for `continue` or an abort.
    pub(super) fn waits_for_continue(&self) -> bool {
        self.course.stop == Stop::No && self.live.paused.is_some()
    }

    /// While paused, a task that would start a host that is not in flight (or a `per:
    /// region`/`per: run` task) waits for `continue`; returns whether `node` waits.
    pub(super) fn hold_while_paused(&mut self, node: NodeId, task: &Task) -> bool {
        if self.live.paused.is_none() {
            return false;
        }
        if task.per == Per::Host && self.fleet.hosts[task.host].phase == Phase::Active {
            return false;
        }
        self.nodes.set(node, State::Queued);
        self.live.held.push(node);
        true
    }

    /// Hosts queued for a slot stay queued while paused.
    pub(super) fn admits_queued_hosts(&self) -> bool {
        self.live.paused.is_none()
    }

    /// A person answered an `approve:` gate at the terminal, or its bounded wait ended.
    /// An answer that came after the gate was answered from elsewhere changes nothing.
    pub(super) fn answered(&mut self, wave: usize, approved: bool) {
        if self.live.asking.remove(&wave).is_none() {
            return;
        }
        if approved {
            self.pass_gate(wave);
        } else {
            self.stop_for_approval(wave);
        }
    }

    /// Applies a command, journals it, and answers its sender once the record is on
    /// disk. The record comes before whatever the command causes.
    pub(super) fn control(&mut self, request: ControlRequest) {
        let ControlRequest {
            command,
            operator,
            reply,
        } = request;
        let answer = match self.check_control(&command) {
            Ok(message) => ControlReply {
                accepted: true,
                message,
            },
            Err(message) => ControlReply {
                accepted: false,
                message,
            },
        };
        let durable = self.emit_durable(Event::Control(crate::events::Control {
            command: command.describe(),
            user: operator.user.clone(),
            host: operator.host.clone(),
            pid: operator.pid,
            accepted: answer.accepted,
            message: answer.message.clone(),
        }));
        if answer.accepted {
            self.apply_control(command, operator);
        }
        tokio::spawn(async move {
            durable.await;
            let _ = reply.send(answer);
        });
    }

    /// Whether the command applies now, and what it will do in words.
    fn check_control(&self, command: &ControlCommand) -> Result<String, String> {
        let id = &self.options.run_id;
        let hint = |words: std::fmt::Arguments| crate::hint::pony(words);
        let stopping = || {
            format!(
                "the run is already stopping; `{}` shows where it is",
                hint(format_args!("status {id}"))
            )
        };
        match command {
            ControlCommand::Pause => match (&self.live.paused, self.course.stop) {
                (_, stop) if stop != Stop::No => Err(stopping()),
                (Some(by), _) => Ok(format!("already paused by {}", who(by))),
                (None, _) => Ok(format!(
                    "paused: no new host starts, hosts in flight finish their tasks; `{}` goes on",
                    hint(format_args!("continue {id}"))
                )),
            },
            ControlCommand::Continue => match (&self.live.paused, self.course.stop) {
                (_, stop) if stop != Stop::No => Err(stopping()),
                (None, _) => Ok("not paused; nothing to do".into()),
                (Some(_), _) => Ok("continued: held hosts start as their slots allow".into()),
            },
            ControlCommand::Abort { rollback: false } if self.course.stop != Stop::No => Err(stopping()),
            ControlCommand::Abort { rollback: false } => Ok(format!(
                "aborted: no new host starts, hosts in flight finish their tasks; the run ends interrupted (exit 130), `{}` goes on",
                hint(format_args!("resume {id}"))
            )),
            ControlCommand::Abort { rollback: true } => Ok(
                "aborted: no new task starts; once running tasks finish, every host the run touched rolls back (exit 1 when all rolled back)".into(),
            ),
            ControlCommand::Approve { wave } => self.check_approve(wave),
        }
    }

    fn check_approve(&self, name: &str) -> Result<String, String> {
        let Some(wave) = self.plan.waves.iter().position(|w| w.name == name) else {
            let names: Vec<&str> = self.plan.waves.iter().map(|w| w.name.as_str()).collect();
            return Err(format!(
                "the run has no wave `{name}` (its waves: {})",
                names.join(", ")
            ));
        };
        if !self.plan.playbook.strategy.waves[wave].approve {
            return Err(format!("wave {name} has no `approve:` gate"));
        }
        if self.nodes.state(self.plan.waves[wave].gate) == State::Succeeded {
            return Err(format!("the gate of wave {name} has passed already"));
        }
        if self.stopped() {
            return Err(format!(
                "the run is stopping; continue it later with `{}`",
                crate::hint::pony(format_args!(
                    "resume {} --approve {name}",
                    self.options.run_id
                ))
            ));
        }
        if self.live.asking.contains_key(&wave) {
            Ok(format!("approved: the gate of wave {name} passes"))
        } else if let Some(until) = self.waves[wave].soak.until {
            // The question comes after the soak: this answers it up front.
            let local = until.with_timezone(&chrono::Local);
            Ok(format!(
                "approved; the soak runs until {}, then the gate of wave {name} passes",
                local.format("%H:%M:%S")
            ))
        } else if self.nodes.state(self.plan.waves[wave].gate) == State::Held {
            Ok(format!(
                "approved: the gate of wave {name} passes once its checks passed"
            ))
        } else {
            Ok(format!(
                "pre-approved: the gate of wave {name} passes when the wave is done"
            ))
        }
    }

    fn apply_control(&mut self, command: ControlCommand, operator: Operator) {
        match command {
            ControlCommand::Pause => {
                self.live.paused.get_or_insert(operator);
            }
            ControlCommand::Continue => self.release_held(),
            ControlCommand::Abort { rollback: false } => {
                self.drain(format!(
                    "aborted by {}: no new host starts; hosts in flight finish all their tasks",
                    who(&operator)
                ));
            }
            ControlCommand::Abort { rollback: true } => {
                // Not interrupted nor halted: a person chose to take the release back,
                // and the run ends as a rolled-back rollout.
                self.course.ending.interrupted = false;
                self.course.ending.halted = false;
                self.workers.timers.abort_all();
                self.forget_check_rounds();
                self.live.asking.clear();
                self.rollbacks.all_due = true;
                self.stop_all(&format!(
                    "aborted by {}: rolling back every host the run touched",
                    who(&operator)
                ));
                self.release_held();
            }
            ControlCommand::Approve { wave } => {
                let Some(index) = self.plan.waves.iter().position(|w| w.name == wave) else {
                    return;
                };
                match self.live.asking.remove(&index) {
                    Some(wait) => {
                        wait.abort();
                        self.pass_gate(index);
                    }
                    None => self.options.approvals.push(wave),
                }
            }
        }
    }

    /// Ends the pause: held tasks go through readiness again (under a stop they are
    /// cancelled there), and hosts queued for a slot are let in.
    pub(super) fn release_held(&mut self) {
        self.live.paused = None;
        for node in std::mem::take(&mut self.live.held) {
            if self.nodes.state(node) == State::Queued {
                self.nodes.set(node, State::Waiting);
                self.ready(node);
            }
        }
        if self.course.stop == Stop::No {
            while let Some((_, next)) = self.admission.next_admissible() {
                self.start_queued_host(next);
            }
        }
    }
}
