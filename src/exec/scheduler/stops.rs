//! What stops a run: failed hosts (through the failure policy), stopped regions, the
//! whole run, interrupts; and the end of the run with its outcome.

use super::nodes::State;
use super::{Scheduler, Stop};
use crate::events::{Event, HostOutcome};
use crate::exec::host_run::Phase;
use crate::exec::outcome::{self, Tally};
use crate::exec::policy::{self, FailureAction};
use crate::exec::RunReport;
use crate::inventory::HostId;
use std::time::Duration;

use crate::playbook::Unreachable;

impl Scheduler {
    // ----- failures -----

    pub(super) fn host_failed(&mut self, host: HostId) {
        if self.fleet.hosts[host].failed() {
            return;
        }
        self.fleet.hosts[host].phase = Phase::Failed {
            rollback_due: false,
        };
        self.fleet.hosts[host].pending.clear();
        self.cancel_unstarted_of_host(host);
        let spec = &self.plan.inventory.hosts[host];
        let (cluster, region) = (spec.cluster, spec.region);
        let (failed_hosts, max_failures) = self.budgets.host_failed(cluster);
        let policy = self.plan.playbook.strategy.on_failure;
        if let Some(action) = self.budgets.beyond_run(policy) {
            self.run_budget_exceeded(host, action);
            return;
        }
        if let Some(wave) = self.plan.host_wave[host] {
            let run = &mut self.waves[wave];
            run.failed_hosts += 1;
            if let Some(action) = policy::on_run_failure(run.failed_hosts, run.max_failures, policy)
            {
                self.wave_budget_exceeded(wave, host, action);
                return;
            }
        }
        let action = policy::on_host_failure(failed_hosts, max_failures, policy);
        if !action.beyond_budget() {
            self.fleet.hosts[host].phase = Phase::Failed { rollback_due: true };
            self.rollbacks.host_due(host);
            return;
        }
        let inventory = &self.plan.inventory;
        if let Some(wave) = self.plan.host_wave[host] {
            self.waves[wave].failed.get_or_insert_with(|| {
                format!(
                    "cluster {} (region {}) failed {failed_hosts} host(s), beyond max_failures {max_failures}",
                    inventory.clusters[cluster].name, inventory.regions[region].name,
                )
            });
        }
        self.emit(Event::BudgetExceeded {
            cluster: inventory.clusters[cluster].name.clone(),
            region: inventory.regions[region].name.clone(),
            failed_hosts,
            max_failures,
            action: policy.as_str().to_string(),
        });
        self.apply_failure_action(action, region);
    }

    /// Beyond `max_failures_run`: the failed host waits for the run-wide action (a halt
    /// leaves it failed; a rollback takes it with every touched host).
    fn run_budget_exceeded(&mut self, host: HostId, action: FailureAction) {
        let (failed, max) = self.budgets.run_count();
        if let Some(wave) = self.plan.host_wave[host] {
            self.waves[wave].failed.get_or_insert_with(|| {
                format!("the run failed {failed} host(s), beyond max_failures_run {max}")
            });
        }
        // Once: later failures (hosts that were in flight) find the run stopped already.
        if failed == max + 1 {
            self.emit(Event::RunBudgetExceeded {
                failed_hosts: failed,
                max_failures_run: max,
                action: self.plan.playbook.strategy.on_failure.as_str().to_string(),
            });
        }
        let region = self.plan.inventory.hosts[host].region;
        self.apply_failure_action(action, region);
    }

    /// Beyond the wave's `max_failures`: like the run-wide budget, `on_failure` applies
    /// to the whole run (the wave's hosts are spread over many clusters and regions).
    fn wave_budget_exceeded(&mut self, wave: usize, host: HostId, action: FailureAction) {
        let run = &mut self.waves[wave];
        let (failed, max) = (run.failed_hosts, run.max_failures.unwrap_or_default());
        let name = self.plan.waves[wave].name.clone();
        run.failed.get_or_insert_with(|| {
            format!("wave {name} failed {failed} host(s), beyond its max_failures {max}")
        });
        if failed == max + 1 {
            self.emit(Event::WaveBudgetExceeded {
                wave: name,
                failed_hosts: failed,
                max_failures: max,
                action: self.plan.playbook.strategy.on_failure.as_str().to_string(),
            });
        }
        let region = self.plan.inventory.hosts[host].region;
        self.apply_failure_action(action, region);
    }

    fn apply_failure_action(&mut self, action: FailureAction, region: usize) {
        match action {
            FailureAction::RollbackHost => {}
            FailureAction::Halt => {
                self.course.ending.halted = true;
                self.stop_all("failure budget exceeded: halted");
            }
            FailureAction::RollbackRegion => {
                self.fleet.regions[region].rollback_due = true;
                self.stop_region(region);
            }
            FailureAction::RollbackAll => {
                self.rollbacks.all_due = true;
                self.stop_all("failure budget exceeded: rolling back every touched host");
            }
        }
    }

    /// Under `unreachable: skip`: a host none of whose tasks reached it, while fewer than
    /// `max_unreachable` hosts were skipped.
    pub(super) fn may_skip_unreachable(&self, host: HostId) -> bool {
        let strategy = &self.plan.playbook.strategy;
        let h = &self.fleet.hosts[host];
        strategy.unreachable == Unreachable::Skip
            && !h.reached
            && matches!(h.phase, Phase::Active | Phase::Idle | Phase::Queued)
            && self.budgets.may_skip_unreachable(strategy.max_unreachable)
    }

    /// Leaves an unreachable host alone: reported `unreachable`, its other tasks
    /// cancelled, its slot given back; the failure budget does not count it.
    pub(super) fn host_unreachable(&mut self, host: HostId) {
        self.budgets.skipped_unreachable();
        self.set_host_outcome(host, HostOutcome::Unreachable);
        self.fleet.hosts[host].pending.clear();
        self.cancel_unstarted_of_host(host);
        self.free_slot(host);
        self.pool.close(host);
    }

    pub(super) fn stop_region(&mut self, region: usize) {
        if std::mem::replace(&mut self.fleet.regions[region].stopped, true) {
            return;
        }
        let name = self.plan.inventory.regions[region].name.clone();
        self.emit(Event::Stopped {
            reason: format!("region {name} stopped"),
            region: Some(name),
            rollback: self.fleet.regions[region].rollback_due,
        });
        let inventory = self.plan.inventory.clone();
        self.admission
            .forget_waiting(|h| inventory.hosts[h].region == region);
        self.cancel_unstarted(|s, t| s.plan.inventory.hosts[t.host].region == region);
    }

    /// The journal could not write a fact the run must not go past (a task's start or
    /// end): nothing more starts, since nothing could be recorded; running tasks finish;
    /// the run ends halted (exit 3), resumable once the journal can be written again.
    pub(super) fn journal_lost(&mut self) {
        if self
            .options
            .lease_lost
            .as_ref()
            .is_some_and(|lost| lost.is_lost())
        {
            // Fenced: the state database refuses this controller's records because its
            // lease is gone. It starts nothing more; what runs is killed by the lost
            // lease's interrupt (the second Ctrl-C's kill), and it ends interrupted.
            self.course.ending.interrupted = true;
            self.stop_all(
                "this controller lost its lease (expired, taken over, or broken with `pony unlock`): nothing it journals is accepted any more, so no task starts; its running commands are killed",
            );
            return;
        }
        if self.course.stop != Stop::All {
            self.course.ending.halted = true;
        }
        self.stop_all(&format!(
            "the journal cannot be written: no task starts that it could not record; make room for it, then `{}`",
            crate::hint::pony(format_args!("resume {}", self.options.run_id))
        ));
    }

    pub(super) fn stop_all(&mut self, reason: &str) {
        if self.course.stop == Stop::All {
            return;
        }
        self.course.stop = Stop::All;
        self.emit(Event::Stopped {
            reason: reason.to_string(),
            region: None,
            rollback: self.rollbacks.all_due,
        });
        self.admission.forget_waiting(|_| true);
        self.cancel_unstarted(|_, _| true);
    }

    // ----- interrupts and the end -----

    /// First interrupt: admit no new host; hosts in flight finish every task (or fail
    /// and roll back per policy). Second: kill what runs; its hosts are half-done.
    pub(super) async fn interrupt(&mut self, count: u32) {
        self.course.interrupts_taken = count;
        if count == 0 {
            return;
        }
        if self.course.stop == Stop::No {
            self.drain("interrupted: no new host starts; hosts in flight finish all their tasks (interrupt again to kill them)".into());
        }
        self.course.ending.interrupted = true;
        if count < 2 {
            return;
        }
        self.course.stop = Stop::All;
        self.cancel_unstarted(|_, _| true);
        let running = self.nodes.running();
        // The chains first: no next task of one starts behind the kills.
        let behind = self.behind_in_chains();
        self.cut_all_chains().await;
        self.workers.chains.abort_all();
        self.workers.tasks.abort_all();
        self.workers.remote.abort_all();
        self.workers.rollbacks.abort_all();
        // A host whose health was being checked after its deploy or its rollback ends
        // incomplete.
        self.workers.health.abort_all();
        for host in self.fleet.hosts.iter_mut().filter(|h| h.health_pending) {
            host.health_pending = false;
            host.cut_short = true;
        }
        // Aborting a worker ends pony's side only: its command on the host is killed
        // as a whole (its process group), every host at once, and the task is journaled
        // interrupted with what became of it.
        let kills = running.iter().map(|&node| {
            let pool = self.pool.clone();
            let on = self.plan.task(node).expect("a task").runs_on().host();
            let mark = self.task_mark(node);
            async move {
                let connection = match pool.open_connection(on).await {
                    Some(connection) => connection,
                    None => return crate::transport::KillOutcome::Gone,
                };
                match tokio::time::timeout(
                    crate::transport::KILL_TIMEOUT,
                    connection.kill_marked(&mark),
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => crate::transport::KillOutcome::Unconfirmed(
                        "the host did not answer the kill in time".into(),
                    ),
                }
            }
        });
        let outcomes = futures_join_all(kills).await;
        let mut synced = Vec::new();
        for (node, outcome) in running.into_iter().zip(outcomes) {
            if outcome == crate::transport::KillOutcome::Gone && behind.contains(&node) {
                self.not_started_at_kill(node);
                continue;
            }
            let task = self.task_ref(node);
            match &outcome {
                crate::transport::KillOutcome::Unconfirmed(_) => {
                    tracing::warn!("{}: {}", task.label, outcome.describe())
                }
                _ => tracing::info!("{}: {}", task.label, outcome.describe()),
            }
            synced.push(self.emit_durable(Event::TaskInterrupted {
                task,
                kill: outcome.describe(),
            }));
            self.nodes.set(node, State::Cancelled);
            let task = *self.plan.task(node).expect("a task");
            let region = self.plan.inventory.hosts[task.host].region;
            self.fleet.task_ended(task.host, region);
        }
        for durable in synced {
            durable.await;
        }
        while self.workers.tasks.join_next().await.is_some() {}
        while self.workers.chains.join_next().await.is_some() {}
        while self.workers.rollbacks.join_next().await.is_some() {}
        while self.workers.health.join_next().await.is_some() {}
        self.rollbacks.forget();
    }

    /// Admits no new host; hosts in flight finish every task. The run ends interrupted
    /// (resumable): the first Ctrl-C, or `pony abort`.
    pub(super) fn drain(&mut self, reason: String) {
        self.course.ending.interrupted = true;
        if self.course.stop != Stop::No {
            return;
        }
        self.course.stop = Stop::Draining;
        self.emit(Event::Stopped {
            reason,
            region: None,
            rollback: false,
        });
        self.admission.forget_waiting(|_| true);
        self.cancel_unstarted(|s, t| !s.may_start(t.host));
        // No gate passes and no window opens for an interrupted run: its pauses,
        // window waits, soak checks and approval questions end now, not when their
        // timers would have.
        self.workers.timers.abort_all();
        self.forget_check_rounds();
        self.live.asking.clear();
        // A paused run's held tasks: those of hosts in flight run, the others are
        // cancelled.
        self.release_held();
    }

    pub(super) async fn finish(mut self) -> RunReport {
        for host in 0..self.fleet.hosts.len() {
            let h = &self.fleet.hosts[host];
            if self.course.ending.rollback_only
                || h.outcome().is_some()
                || self.plan.tasks_of_host(host).is_empty()
            {
                continue;
            }
            let outcome = match h.phase {
                Phase::Failed { .. } => HostOutcome::Failed,
                // Some of its tasks ran and not all: never `ok`, never `not run`.
                Phase::RollingBack => HostOutcome::Incomplete,
                _ if h.touched => h.touched_outcome(),
                _ => HostOutcome::Cancelled,
            };
            self.set_host_outcome(host, outcome);
        }
        // In a run split by region, another controller's hosts are its to judge: this
        // one saw their forward tasks through the database, not their rollbacks, so its
        // verdict, summary and exit code count its own regions (`pony status` shows all).
        let outcomes: Vec<Option<HostOutcome>> = (0..self.fleet.hosts.len())
            .map(|h| self.fleet.hosts[h].outcome().filter(|_| !self.is_remote(h)))
            .collect();
        let tally = Tally::of(outcomes.iter().flatten());
        let (outcome, exit) = outcome::run_outcome(tally, self.course.ending);
        let finished: Vec<Duration> = self.fleet.regions.iter().map(|r| r.finished).collect();
        let regions = outcome::regions(&self.plan.inventory, &outcomes, &finished);
        let incomplete = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(HostOutcome::Incomplete))
            .map(|(h, _)| self.plan.inventory.hosts[h].name.clone())
            .collect();
        self.emit_durable(Event::Summary {
            run_id: self.options.run_id.clone(),
            outcome,
            exit_code: exit.code(),
            hosts: tally.hosts,
            ok: tally.ok,
            failed: tally.failed + tally.rollback_failed,
            rolled_back: tally.rolled_back,
            cancelled: tally.cancelled,
            rollback_failed: tally.rollback_failed,
            incomplete,
            stopped_wave: self.course.stopped_wave.clone(),
            rollbacks_not_attempted: self.rollbacks.not_attempted.clone(),
            duration_ms: self.course.started.elapsed().as_millis() as u64,
            regions,
            run_dir: self.options.run_dir_display.clone(),
            interrupts_taken: self.course.interrupts_taken,
        })
        .await;
        RunReport {
            outcome,
            exit,
            hosts: outcomes,
        }
    }
}

/// Runs every future at once (each on its own worker) and gives their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut count = 0;
    for (i, future) in futures.enumerate() {
        set.spawn(async move { (i, future.await) });
        count += 1;
    }
    let mut outputs: Vec<Option<F::Output>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, output)) = joined {
            outputs[i] = Some(output);
        }
    }
    outputs.into_iter().flatten().collect()
}
