//! Verified rollbacks: once every rollback command of a host succeeded, the playbook's
//! `health:` checks that apply to it run, tried again every `health.every` until they all
//! pass or `health.wait` is over. The host counts as rolled back only when they pass;
//! else it is `rollback failed` (exit 3), with what did not pass. A host no check applies
//! to is rolled back "unverified" (said in its event and the journal). A rollback job is
//! reported complete only once its hosts' checks are judged, and never when one failed.

use super::*;
use crate::playbook::health::HealthCheck;
use crate::playbook::CheckAction;

/// A host's checks, back from their worker: `None` when all passed, else what failed.
pub(super) struct HealthRun {
    pub job: usize,
    pub host: HostId,
    pub failure: Option<String>,
    pub duration: Duration,
}

/// Health checks of one rollback job's hosts still being judged, and whether one failed.
#[derive(Default)]
pub(super) struct JobHealth {
    pub pending: usize,
    pub failed: bool,
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
            .filter(|check| match &check.hosts {
                None => true,
                Some(pattern) => pattern
                    .resolve(&self.plan.inventory)
                    .is_ok_and(|set| set.contains(host)),
            })
            .cloned()
            .collect()
    }

    /// Every rollback command of `host` succeeded: its health decides whether it is
    /// rolled back. The host keeps its slot while its checks run.
    pub(super) fn verify_rollback(&mut self, job: usize, host: HostId) {
        let checks = self.health_checks_of(host);
        if checks.is_empty() {
            self.emit_health(host, false, None, Duration::ZERO);
            self.rollback_judged(host, true);
            return;
        }
        self.job_health(job).pending += 1;
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
        self.health_runs.spawn(async move {
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
        self.emit_health(host, true, failure, duration);
        let health = self.job_health(job);
        health.pending -= 1;
        health.failed |= !ok;
        self.rollback_judged(host, ok);
        self.pump_rollback(job);
    }

    pub(super) fn job_health(&mut self, job: usize) -> &mut JobHealth {
        if self.rollback_health.len() <= job {
            self.rollback_health
                .resize_with(job + 1, JobHealth::default);
        }
        &mut self.rollback_health[job]
    }

    fn emit_health(
        &mut self,
        host: HostId,
        checked: bool,
        failure: Option<String>,
        duration: Duration,
    ) {
        let inventory = &self.plan.inventory;
        let spec = &inventory.hosts[host];
        self.emit(Event::HealthChecked {
            host: spec.name.clone(),
            region: inventory.regions[spec.region].name.clone(),
            cluster: inventory.clusters[spec.cluster].name.clone(),
            checked,
            ok: failure.is_none(),
            error: failure,
            duration_ms: duration.as_millis() as u64,
        });
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
