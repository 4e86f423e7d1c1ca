//! Lost controllers of a run split by region (`--regions`): another controller's region
//! leases expired with its work left (it died, was cut off, or stopped). This controller
//! says so once per lost controller (journaled, with the command that takes its regions
//! over) and, by `strategy.on_controller_loss`, goes on and waits for the lost regions at
//! the next barrier (`wait`) or stops as on a first Ctrl-C (`stop`).

use super::nodes::State;
use super::Scheduler;
use crate::events::Event;

use crate::playbook::OnControllerLoss;
use crate::state::split::ControllerLoss;
use std::collections::HashSet;

impl Scheduler {
    pub(super) async fn controller_lost(&mut self, loss: ControllerLoss) {
        // What the lost controller journaled before its leases expired is known: it
        // applies first, as it would have had the controller gone on (a failure of its
        // may stop this run by `on_failure`, and then the loss changes nothing here).
        self.take_read_remote_results().await;
        let Some(policy) = self.options.split.as_ref().map(|s| s.on_loss()) else {
            return;
        };
        // A run that stops already waits for no other controller.
        if self.stopped() {
            return;
        }
        let regions = loss.regions.join(",");
        self.emit(Event::ControllerLost(crate::events::ControllerLost {
            lost_controller: loss.controller.clone(),
            machine: loss.machine,
            pid: loss.pid,
            regions: loss.regions,
            policy: policy.as_str().to_string(),
            resume: crate::hint::pony(format_args!(
                "resume {} --regions {regions}",
                self.options.run_id
            )),
        }));
        if policy == OnControllerLoss::Stop {
            self.drain(format!(
                "controller {} lost its regions {regions} (on_controller_loss: stop): no new host starts; hosts in flight finish all their tasks",
                loss.controller
            ));
        }
    }

    /// Finishes the remote tasks whose results the shared journal already gave: their
    /// awaiting tasks resolve at once.
    async fn take_read_remote_results(&mut self) {
        let Some(split) = self.options.split.clone() else {
            return;
        };
        let mut read: HashSet<usize> = self
            .plan
            .tasks()
            .filter(|(node, task)| {
                self.nodes.state(*node) == State::Running
                    && self.is_remote(task.host)
                    && split.has_result(node.index())
            })
            .map(|(node, _)| node.index())
            .collect();
        while !read.is_empty() {
            match self.workers.remote.join_next().await {
                Some(Ok((node, run, log))) => {
                    read.remove(&node.index());
                    self.finished(node, run, log);
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
    }
}
