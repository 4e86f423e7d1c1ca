//! Host health (`health:`): the checks that apply to a host run, tried again every
//! `health.every` until they all pass or `health.wait` is over, at two moments:
//! - after its deploy (every task of it succeeded): it stays out of service, holding its
//!   slot, until they pass; if they do not, the host fails there (and is rolled back as
//!   the failure policy says); its wave's gate waits for them;
//! - after its rollback commands all succeeded: it counts as rolled back only when they
//!   pass, else it is `rollback failed` (exit 3). A host no check applies to is rolled
//!   back "unverified". A rollback job is reported complete only once its hosts' checks
//!   are judged, and never when one failed.

use super::nodes::State;
use super::workers::HealthRun;
use super::{verify, Scheduler};
use crate::events::Event;
use crate::exec::hosts::HostPool;
use crate::exec::Mode;
use crate::inventory::pattern::HostSet;
use crate::inventory::{HostId, Vars};
use crate::plan::{NodeId, Plan};
use std::time::Duration;

use crate::events::HealthAfter;
use crate::playbook::health::HealthCheck;
use crate::playbook::CheckAction;

/// Per `health:` check, the hosts it applies to: its `hosts:` pattern (validated when the
/// plan was built), or every host.
pub(super) fn targets(plan: &Plan) -> Vec<HostSet> {
    let size = plan.inventory.hosts.len();
    plan.playbook
        .health
        .checks
        .iter()
        .map(|check| match &check.hosts {
            None => HostSet::full(size),
            Some(pattern) => pattern
                .resolve(&plan.inventory)
                .unwrap_or_else(|_| HostSet::empty(size)),
        })
        .collect()
}

impl Scheduler {
    /// The health checks that apply to `host` (those whose `hosts:` matches it; all
    /// without one).
    fn health_checks_of(&self, host: HostId) -> Vec<HealthCheck> {
        self.plan
            .playbook
            .health
            .checks
            .iter()
            .zip(&self.health_targets)
            .filter(|(_, hosts)| hosts.contains(host))
            .map(|(check, _)| check.clone())
            .collect()
    }

    /// Every rollback command of `host` succeeded: its health decides whether it is
    /// rolled back. The host keeps its slot while its checks run.
    pub(super) fn verify_rollback(&mut self, job: usize, host: HostId) {
        let checks = self.health_checks_of(host);
        if checks.is_empty() {
            self.emit_health(host, HealthAfter::Rollback, false, None, Duration::ZERO);
            self.rollback_judged(host, true);
            return;
        }
        self.rollbacks.health(job).pending += 1;
        self.spawn_health(Some(job), host, &checks);
    }

    /// Every task of `host` succeeded and it leaves service: when checks apply to it
    /// (and this controller deploys it), they run first; returns whether they do.
    pub(super) fn verify_deploy(&mut self, host: HostId) -> bool {
        if !matches!(self.options.mode, Mode::Deploy) || self.is_remote(host) {
            return false;
        }
        let checks = self.health_checks_of(host);
        if checks.is_empty() {
            return false;
        }
        self.fleet.hosts[host].health_pending = true;
        self.spawn_health(None, host, &checks);
        true
    }

    fn spawn_health(&mut self, job: Option<usize>, host: HostId, checks: &[HealthCheck]) {
        let health = &self.plan.playbook.health;
        let (wait, every) = (health.wait, health.every);
        let wave = self.plan.host_wave[host].unwrap_or(0);
        let ctx = self
            .plan
            .host_context(host, wave, &self.options.run_id, &Vars::new());
        let env = crate::playbook::template::environment();
        let rendered: Vec<(String, Result<CheckAction, String>)> = checks
            .iter()
            .map(|check| {
                let action = check.action.rendered(|field, source| {
                    env.render_str(source, &ctx)
                        .map_err(|e| format!("`{field}` cannot be rendered: {e}"))
                });
                (check.name.clone(), action)
            })
            .collect();
        let pool = self.pool.clone();
        self.workers.health.spawn(async move {
            let started = tokio::time::Instant::now();
            let failure = until_healthy(&pool, host, &rendered, wait, every).await;
            HealthRun {
                job,
                host,
                failure,
                duration: started.elapsed(),
            }
        });
    }

    pub(super) fn health_judged(&mut self, run: HealthRun) {
        let HealthRun {
            job,
            host,
            failure,
            duration,
        } = run;
        let ok = failure.is_none();
        let Some(job) = job else {
            self.emit_health(host, HealthAfter::Deploy, true, failure, duration);
            self.deploy_judged(host, ok);
            return;
        };
        self.emit_health(host, HealthAfter::Rollback, true, failure, duration);
        let health = self.rollbacks.health(job);
        health.pending -= 1;
        health.failed |= !ok;
        self.rollback_judged(host, ok);
        self.pump_rollback(job);
    }

    fn deploy_judged(&mut self, host: HostId, ok: bool) {
        self.fleet.hosts[host].health_pending = false;
        if ok {
            self.free_slot(host);
            self.maybe_host_finished(host);
        } else {
            self.host_failed(host);
        }
        // Its wave's gate waited for the health of the wave's hosts.
        if let Some(wave) = self.plan.host_wave[host] {
            if self.waves[wave].gate_after_health && !self.health_pending_in(wave) {
                self.waves[wave].gate_after_health = false;
                let gate = self.plan.waves[wave].gate;
                self.nodes.set(gate, State::Waiting);
                self.gate_ready(wave, gate);
            }
        }
    }

    /// Whether a host of the wave is still being checked after its deploy.
    pub(super) fn health_pending_in(&self, wave: usize) -> bool {
        self.plan.waves[wave]
            .hosts
            .iter()
            .any(|&h| self.fleet.hosts[h].health_pending)
    }

    /// A wave's gate waits while hosts of the wave are checked after their deploy;
    /// returns whether it waits.
    pub(super) fn gate_waits_for_health(&mut self, wave: usize, node: NodeId) -> bool {
        if !self.health_pending_in(wave) {
            return false;
        }
        self.nodes.set(node, State::Held);
        self.waves[wave].gate_after_health = true;
        true
    }

    fn emit_health(
        &mut self,
        host: HostId,
        after: HealthAfter,
        checked: bool,
        failure: Option<String>,
        duration: Duration,
    ) {
        let inventory = &self.plan.inventory;
        let spec = &inventory.hosts[host];
        self.emit(Event::HealthChecked(crate::events::HealthChecked {
            host: spec.name.clone(),
            region: inventory.regions[spec.region].name.clone(),
            cluster: inventory.clusters[spec.cluster].name.clone(),
            after,
            checked,
            ok: failure.is_none(),
            error: failure,
            duration_ms: duration.as_millis() as u64,
        }));
    }
}

/// Runs every check on the host, then the failing ones again every `every`, until all
/// passed (`None`) or `wait` is over (what the failing ones said last).
async fn until_healthy(
    pool: &HostPool,
    host: HostId,
    checks: &[(String, Result<CheckAction, String>)],
    wait: Duration,
    every: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut failing: Vec<usize> = (0..checks.len()).collect();
    loop {
        let mut still = Vec::new();
        let mut said = Vec::new();
        for &i in &failing {
            let (name, action) = &checks[i];
            let result = match action {
                Ok(action) => {
                    let (_, ok, detail) = verify::run_check(pool, host, action).await;
                    if ok {
                        Ok(())
                    } else {
                        Err(detail)
                    }
                }
                Err(problem) => Err(problem.clone()),
            };
            if let Err(detail) = result {
                still.push(i);
                said.push(format!("{name}: {detail}"));
            }
        }
        if still.is_empty() {
            return None;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Some(format!(
                "{} (not passing after {})",
                said.join("; "),
                humantime::format_duration(wait)
            ));
        }
        failing = still;
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}
