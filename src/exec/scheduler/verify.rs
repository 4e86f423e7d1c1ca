//! Soak gates that watch: a wave's `verify:` checks, run every `every` for the length of
//! its `pause:` (the soak, before any `approve:` question), or once right before the
//! question when the gate has no pause. Each check runs in a
//! worker (the loop only spawns and judges); a failing check fails the wave: its hosts
//! count as failed, `on_failure` applies to them (finished hosts too), and no later
//! wave starts. `compare` checks judge the median over hosts and samples so far of the
//! number each host gives: a `run` command's output or the mail-flow probe's latency.

use super::workers::{After, CheckRound, Checked, Timer};
use super::Scheduler;
use crate::events::Event;
use crate::exec::host_run::Phase;
use crate::exec::hosts::HostPool;
use crate::exec::task::{self, TaskSpec};
use crate::inventory::{HostId, Vars};
use std::collections::HashMap;
use std::time::Duration;

use crate::playbook::{Check, CheckAction, OnFailure};

/// A verify command or probe gets this long per host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Soak state of a wave's gate.
#[derive(Default)]
pub(super) struct Soak {
    /// Check chains (and the pause timer) still running; the gate passes at 0.
    pub left: usize,
    /// A check failed: later results are ignored and nothing more is spawned.
    pub failed: bool,
    /// `compare` samples per check: (canary, baseline).
    pub samples: HashMap<usize, (Vec<f64>, Vec<f64>)>,
    /// Checks still to report before the `approve:` question.
    pub before_ask: usize,
    /// The pause timer: a failed soak ends it (the run does not sit out the pause).
    pub pause: Option<tokio::task::AbortHandle>,
    /// Rounds due but waiting for connections.
    pub queued: std::collections::VecDeque<CheckRound>,
    /// Connections held by rounds in flight.
    pub lanes_out: usize,
    /// When the pause ends, while it runs (`pony approve` during the soak says so).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Check results that passed (for the approval question).
    pub checks_ok: usize,
    /// The soak ran to its end in an earlier process of the run (resumed at the question).
    pub over: bool,
}

impl Scheduler {
    fn check_hosts(
        &self,
        wave: usize,
        pattern: Option<&crate::inventory::pattern::HostPattern>,
    ) -> Vec<HostId> {
        let wave_hosts = &self.plan.waves[wave].hosts;
        match pattern {
            None => wave_hosts.clone(),
            Some(p) => p
                .resolve(&self.plan.inventory)
                .map(|set| set.iter().collect())
                .unwrap_or_default(),
        }
    }

    /// Runs one round of `check` of `wave` after `delay`, in a worker.
    pub(super) fn spawn_check(&mut self, wave: usize, check: usize, delay: Duration, after: After) {
        if delay.is_zero() {
            self.check_due(CheckRound { wave, check, after });
            return;
        }
        self.workers.timers.spawn(async move {
            tokio::time::sleep(delay).await;
            Timer::CheckDue(CheckRound { wave, check, after })
        });
    }

    /// A round is due: it starts once its connections fit under `connections` (checks of
    /// a gate are queued behind nothing but each other and the hosts holding connections).
    pub(super) fn check_due(&mut self, round: CheckRound) {
        let lanes = self.check_lanes(&round);
        if !self.admission.borrow_connections(lanes) {
            self.waves[round.wave].soak.queued.push_back(round);
            return;
        }
        let CheckRound { wave, check, after } = round;
        self.waves[wave].soak.lanes_out += lanes;
        let spec: Check = self.plan.playbook.strategy.waves[wave].verify[check].clone();
        let canary = self.check_hosts(wave, spec.hosts.as_ref());
        let baseline = match &spec.compare {
            Some(c) => self.check_hosts(wave, Some(&c.baseline)),
            None => Vec::new(),
        };
        let pool = self.pool.clone();
        let plan = self.plan.clone();
        let run_id = self.options.run_id.clone();
        self.workers.timers.spawn(async move {
            let run_all = |hosts: Vec<HostId>| {
                let (pool, plan, run_id) = (pool.clone(), plan.clone(), run_id.clone());
                let action = spec.action.clone();
                async move {
                    let mut results = Vec::new();
                    for host in hosts {
                        let ctx = plan.host_context(host, wave, &run_id, &Vars::new());
                        let env = crate::playbook::template::environment();
                        let rendered =
                            action.rendered(|field, source| match env.render_str(source, &ctx) {
                                Ok(text) => Ok(text),
                                Err(e) => Err(format!("`{field}` cannot be rendered: {e}")),
                            });
                        results.push(match rendered {
                            Ok(action) => run_check(&pool, host, &action).await,
                            Err(problem) => (host, false, problem),
                        });
                    }
                    results
                }
            };
            // Canaries and baseline side by side when two connections are allowed.
            let (canary, baseline) = if lanes >= 2 {
                tokio::join!(run_all(canary), run_all(baseline))
            } else {
                (run_all(canary).await, run_all(baseline).await)
            };
            Timer::Checked(Box::new(Checked {
                wave,
                check,
                after,
                lanes,
                canary,
                baseline,
            }))
        });
    }

    /// Connections a round holds at once: one per side (canary, baseline) that has hosts,
    /// within `connections`.
    fn check_lanes(&self, round: &CheckRound) -> usize {
        let spec = &self.plan.playbook.strategy.waves[round.wave].verify[round.check];
        let sides = 1 + usize::from(spec.compare.is_some());
        sides.min(self.admission.connection_limit())
    }

    /// Every timer was aborted (the run stops for good): rounds in flight never come
    /// back, so their connections are given back here and queued rounds are dropped.
    pub(super) fn forget_check_rounds(&mut self) {
        for wave in 0..self.waves.len() {
            let soak = &mut self.waves[wave].soak;
            let lanes = std::mem::take(&mut soak.lanes_out);
            soak.queued.clear();
            self.admission.repay_connections(lanes);
        }
    }

    /// Connections were given back: queued check rounds go first (a gate in progress),
    /// then waiting hosts.
    pub(super) fn start_queued_checks(&mut self) {
        for wave in 0..self.waves.len() {
            while let Some(&round) = self.waves[wave].soak.queued.front() {
                if !self.admission.can_borrow(self.check_lanes(&round)) {
                    return;
                }
                self.waves[wave].soak.queued.pop_front();
                self.check_due(round);
            }
        }
    }

    /// Starts the wave's soak: every check every `every` for `pause` (at least once).
    pub(super) fn start_soak(&mut self, wave: usize, pause: Duration) {
        let checks = self.plan.playbook.strategy.waves[wave].verify.clone();
        self.waves[wave].soak.left = checks.len() + 1;
        for (i, check) in checks.iter().enumerate() {
            let rounds = (pause.as_nanos() / check.every.as_nanos().max(1)).max(1) as u32;
            self.spawn_check(
                wave,
                i,
                check.every.min(pause),
                After::Soak { left: rounds - 1 },
            );
        }
        let timer = self.workers.timers.spawn(async move {
            tokio::time::sleep(pause).await;
            Timer::Paused(wave)
        });
        self.waves[wave].soak.pause = Some(timer);
    }

    /// The pause timer or a check chain ended; the gate passes when all have.
    pub(super) fn soak_part_done(&mut self, wave: usize) {
        let soak = &mut self.waves[wave].soak;
        if soak.failed {
            return;
        }
        soak.left = soak.left.saturating_sub(1);
        if soak.left == 0 {
            self.soaked(wave);
        }
    }

    /// Runs every check once before the `approve:` question.
    pub(super) fn verify_before_ask(&mut self, wave: usize) {
        let count = self.plan.playbook.strategy.waves[wave].verify.len();
        // The gate is held while they run: said, so that nobody reads it as idle.
        self.emit(Event::GateWaiting {
            wave: self.plan.waves[wave].name.clone(),
            reason: crate::events::GateReason::Verify,
            seconds: 0,
            until: None,
            zone: None,
        });
        self.waves[wave].soak.before_ask = count;
        for check in 0..count {
            self.spawn_check(wave, check, Duration::ZERO, After::Ask);
        }
    }

    pub(super) fn checked(&mut self, done: Checked) {
        let Checked {
            wave,
            check,
            after,
            lanes,
            canary,
            baseline,
        } = done;
        self.admission.repay_connections(lanes);
        let soak = &mut self.waves[wave].soak;
        soak.lanes_out = soak.lanes_out.saturating_sub(lanes);
        self.connections_freed();
        for &(host, _, _) in canary.iter().chain(&baseline) {
            if !matches!(
                self.fleet.hosts[host].phase,
                Phase::Active | Phase::RollingBack
            ) {
                self.pool.close(host);
            }
        }
        if self.waves[wave].soak.failed {
            return;
        }
        let check_name = self.plan.playbook.strategy.waves[wave].verify[check]
            .name
            .clone();
        let compared = self.plan.playbook.strategy.waves[wave].verify[check]
            .compare
            .is_some();
        let (failed_hosts, failure) = if compared {
            self.judge_compared(wave, check, &canary, &baseline)
        } else {
            self.judge_each(wave, check, &canary)
        };
        if let Some(failure) = failure {
            self.verify_failed(
                wave,
                format!("check {check_name} failed {failure}"),
                failed_hosts,
            );
            return;
        }
        self.round_passed(wave, check, after);
    }

    /// A plain check's round: each host passes or fails on its own. Returns the failed
    /// hosts and what the first said.
    fn judge_each(
        &mut self,
        wave: usize,
        check: usize,
        canary: &[(HostId, bool, String)],
    ) -> (Vec<HostId>, Option<String>) {
        let wave_name = self.plan.waves[wave].name.clone();
        let check_name = self.plan.playbook.strategy.waves[wave].verify[check]
            .name
            .clone();
        let inventory = self.plan.inventory.clone();
        let name = |h: HostId| inventory.hosts[h].name.clone();
        let mut failed_hosts = Vec::new();
        let mut failure = None;
        for (host, ok, detail) in canary {
            self.emit(Event::VerifyCheck(crate::events::VerifyCheck {
                wave: wave_name.clone(),
                check: check_name.clone(),
                host: name(*host),
                ok: *ok,
                detail: detail.clone(),
            }));
            if *ok {
                self.waves[wave].soak.checks_ok += 1;
            } else {
                failed_hosts.push(*host);
                failure.get_or_insert_with(|| format!("on {}: {detail}", name(*host)));
            }
        }
        (failed_hosts, failure)
    }

    /// A `compare` check's round: the canaries' median against the baseline's, within
    /// the tolerance; all canaries fail together. Returns the failed hosts and why.
    fn judge_compared(
        &mut self,
        wave: usize,
        check: usize,
        canary: &[(HostId, bool, String)],
        baseline: &[(HostId, bool, String)],
    ) -> (Vec<HostId>, Option<String>) {
        let spec = &self.plan.playbook.strategy.waves[wave].verify[check];
        let (wave_name, check_name) = (self.plan.waves[wave].name.clone(), spec.name.clone());
        let tolerance = spec.compare.as_ref().expect("a compare check").tolerance;
        let inventory = self.plan.inventory.clone();
        let name = |h: HostId| inventory.hosts[h].name.clone();
        let verdict = self.compare_round(wave, check, canary, baseline, &name);
        let (ok, detail) = match verdict {
            Err(problem) => (false, problem),
            Ok((c, b)) => {
                let limit = tolerance.limit(b);
                let ok = c <= limit;
                // Shown to the microsecond: `0.356 + 1` is 1.3559999999999999 in binary.
                let shown = (limit * 1e6).round() / 1e6;
                (
                    ok,
                    format!(
                        "canary median {c} vs baseline median {b} (tolerance {tolerance}: at most {shown})"
                    ),
                )
            }
        };
        let hosts: Vec<String> = canary.iter().map(|(h, _, _)| name(*h)).collect();
        self.emit(Event::VerifyCheck(crate::events::VerifyCheck {
            wave: wave_name,
            check: check_name,
            host: hosts.join(","),
            ok,
            detail: detail.clone(),
        }));
        if ok {
            self.waves[wave].soak.checks_ok += 1;
            (Vec::new(), None)
        } else {
            (canary.iter().map(|(h, _, _)| *h).collect(), Some(detail))
        }
    }

    /// A round passed: the question comes once every check before it reported, a soak
    /// round is followed by the next (unless the run stops), a chain that ended counts
    /// towards the soak's end.
    fn round_passed(&mut self, wave: usize, check: usize, after: After) {
        match after {
            After::Ask => {
                let soak = &mut self.waves[wave].soak;
                soak.before_ask -= 1;
                if soak.before_ask == 0 {
                    self.ask(wave);
                }
            }
            After::Soak { left } if left > 0 && !self.stopped() => {
                let every = self.plan.playbook.strategy.waves[wave].verify[check].every;
                self.spawn_check(wave, check, every, After::Soak { left: left - 1 });
            }
            After::Soak { .. } => self.soak_part_done(wave),
        }
    }

    /// Adds a `compare` round's numbers to the samples; the medians so far.
    fn compare_round(
        &mut self,
        wave: usize,
        check: usize,
        canary: &[(HostId, bool, String)],
        baseline: &[(HostId, bool, String)],
        name: &dyn Fn(HostId) -> String,
    ) -> Result<(f64, f64), String> {
        let number = |(host, ok, out): &(HostId, bool, String)| -> Result<f64, String> {
            if !ok {
                return Err(format!("on {}: {out}", name(*host)));
            }
            out.trim().parse::<f64>().map_err(|_| {
                format!(
                    "on {}: the check printed `{}`, not a number",
                    name(*host),
                    out.trim()
                )
            })
        };
        if baseline.is_empty() {
            return Err("the baseline pattern matches no host".into());
        }
        let c: Vec<f64> = canary.iter().map(number).collect::<Result<_, _>>()?;
        let b: Vec<f64> = baseline.iter().map(number).collect::<Result<_, _>>()?;
        let samples = self.waves[wave].soak.samples.entry(check).or_default();
        samples.0.extend(c);
        samples.1.extend(b);
        Ok((median(&samples.0), median(&samples.1)))
    }

    /// A check failed: the wave fails, its failing hosts count as failed, `on_failure`
    /// applies to them (hosts that had finished are rolled back too).
    fn verify_failed(&mut self, wave: usize, reason: String, failed: Vec<HostId>) {
        self.waves[wave].soak.failed = true;
        if let Some(timer) = self.waves[wave].soak.pause.take() {
            timer.abort();
        }
        let mut regions = Vec::new();
        for host in failed {
            if !self.fleet.hosts[host].touched || self.fleet.hosts[host].failed() {
                continue;
            }
            self.fleet.hosts[host].phase = Phase::Failed {
                rollback_due: false,
            };
            let region = self.plan.inventory.hosts[host].region;
            if !regions.contains(&region) {
                regions.push(region);
            }
        }
        match self.plan.playbook.strategy.on_failure {
            OnFailure::Halt => self.course.ending.halted = true,
            OnFailure::RollbackRegion => {
                for region in regions {
                    self.fleet.regions[region].rollback_due = true;
                    self.stop_region(region);
                }
            }
            OnFailure::RollbackAll => {
                self.rollbacks.all_due = true;
                self.stop_all(&format!(
                    "wave {} failed its checks: rolling back every touched host",
                    self.plan.waves[wave].name
                ));
            }
        }
        let node = self.plan.waves[wave].gate;
        self.wave_failed(wave, node, reason.clone());
        // The last wave has no later wave to stop; the run still must not look passed.
        self.stop_all(&format!(
            "wave {} failed: {reason}",
            self.plan.waves[wave].name
        ));
    }
}

/// The median (the mean of the middle two for an even count).
pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Runs a check on one host: `(host, ok, stdout or the error)`.
pub(super) async fn run_check(
    pool: &HostPool,
    host: HostId,
    action: &CheckAction,
) -> (HostId, bool, String) {
    let spec = TaskSpec {
        action: match action {
            CheckAction::Run(command) => task::RenderedAction::Run(command.clone()),
            CheckAction::Probe(probe) => task::RenderedAction::Probe(probe.clone()),
        },
        creates: None,
        unless: None,
        capture: None,
        until: None,
        timeout: Some(CHECK_TIMEOUT),
        retries: 0,
        retry_delay: Duration::ZERO,
        dead_man: None,
        changed_when: Default::default(),
    };
    let run = task::execute(pool, host, &spec).await;
    let detail = if run.ok {
        String::from_utf8_lossy(&run.stdout).trim().to_string()
    } else {
        let tail = run.tail(3);
        let error = run.error.clone().unwrap_or_else(|| "failed".into());
        if tail.is_empty() {
            error
        } else {
            format!("{error}: {tail}")
        }
    };
    (host, run.ok, detail)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
