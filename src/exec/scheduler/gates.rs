//! Wave gates: change windows before a wave, `pause`/`approve` after it, and the gate
//! that does not pass because a cluster of the wave went beyond its failure budget.

use super::nodes::State;
use super::workers::Timer;
use super::Scheduler;
use crate::events::Event;
use crate::exec::{change_window, ApprovalRequest};
use crate::plan::NodeId;

impl Scheduler {
    // ----- gates -----

    pub(super) fn gate_ready(&mut self, wave: usize, node: NodeId) {
        if self.gate_waits_for_health(wave, node) {
            return;
        }
        if let Some(reason) = self.waves[wave].failed.clone() {
            self.wave_failed(wave, node, reason);
            return;
        }
        if self.stopped() {
            self.nodes.set(node, State::Held);
            return;
        }
        // A wave without hosts with tasks is skipped: nothing of it ran, so there is
        // nothing to soak or approve.
        if self.plan.waves[wave].hosts.is_empty() {
            self.pass_gate(wave);
            return;
        }
        // First the soak (`pause:` with its `verify:` rounds), then the `approve:`
        // question: a person approves having seen what the soak showed.
        self.pause_or_pass(wave);
    }

    /// The soak is over, or the gate has none: the `approve:` question (unless approved
    /// up front, or the last wave with hosts), then the gate passes.
    pub(super) fn soaked(&mut self, wave: usize) {
        let node = self.plan.waves[wave].gate;
        self.waves[wave].soak.until = None;
        if self.stopped() {
            self.nodes.set(node, State::Held);
            return;
        }
        let spec = &self.plan.playbook.strategy.waves[wave];
        let last = self.plan.next_wave_with_hosts(wave).is_none();
        if !spec.approve || last || self.options.approvals.contains(&spec.name) {
            self.pass_gate(wave);
            return;
        }
        self.nodes.set(node, State::Held);
        // A soak's rounds are the checks' latest results; without a pause the checks
        // run once right before the question.
        if spec.verify.is_empty() || spec.pause.is_some() {
            self.ask(wave);
        } else {
            self.verify_before_ask(wave);
        }
    }

    /// Asks the `approve:` question at the terminal; without one, waits up to
    /// `approval_wait` for `pony approve` from another shell, or stops the run there.
    pub(super) fn ask(&mut self, wave: usize) {
        let name = self.plan.waves[wave].name.clone();
        // Pre-approved from another shell while its checks ran.
        if self.options.approvals.contains(&name) {
            self.pass_gate(wave);
            return;
        }
        let wait = self.options.approval_wait;
        self.emit(Event::GateWaiting {
            wave: name.clone(),
            reason: crate::events::GateReason::Approve,
            seconds: wait.map_or(0, |w| w.as_secs()),
            until: None,
            zone: None,
        });
        let waiting = match (&self.options.approver, wait) {
            (Some(approver), _) => {
                let (answer, question) = tokio::sync::oneshot::channel();
                let soak = self.soak_summary(wave);
                let _ = approver.send(ApprovalRequest {
                    wave: name,
                    soak,
                    answer,
                });
                self.workers
                    .timers
                    .spawn(async move { Timer::Approved(wave, question.await.unwrap_or(false)) })
            }
            (None, Some(wait)) => self.workers.timers.spawn(async move {
                tokio::time::sleep(wait).await;
                Timer::Approved(wave, false)
            }),
            (None, None) => return self.stop_for_approval(wave),
        };
        self.live.asking.insert(wave, waiting);
    }

    /// A wave with a cluster beyond its failure budget does not pass its gate, whatever
    /// `on_failure` did in its region: the other regions of the wave have finished, and
    /// no task of a later wave starts.
    pub(super) fn wave_failed(&mut self, wave: usize, node: NodeId, reason: String) {
        self.nodes.set(node, State::Held);
        let name = self.plan.waves[wave].name.clone();
        self.emit(Event::WaveFailed {
            wave: name.clone(),
            reason,
            node: node.index(),
        });
        self.course.stopped_wave = Some(name.clone());
        if self.plan.next_wave_with_hosts(wave).is_some() {
            self.stop_all(&format!(
                "wave {name} failed: later waves do not start; fix its hosts and `{}`",
                crate::hint::pony(format_args!("resume {}", self.options.run_id))
            ));
        }
    }

    pub(super) fn stop_for_approval(&mut self, wave: usize) {
        let name = self.plan.waves[wave].name.clone();
        self.course.ending.awaiting_approval = true;
        self.stop_all(&format!(
            "waiting for approval of wave {name}: continue with `{}`",
            crate::hint::pony(format_args!(
                "resume {} --approve {name}",
                self.options.run_id
            ))
        ));
    }

    /// The soak: the gate waits `pause:` (running its `verify:` checks meanwhile), then
    /// goes on to its approval ([`Self::soaked`]). The last wave with hosts does not wait.
    pub(super) fn pause_or_pass(&mut self, wave: usize) {
        let node = self.plan.waves[wave].gate;
        let spec = &self.plan.playbook.strategy.waves[wave];
        let soaked = self.waves[wave].soak.over;
        match spec
            .pause
            .filter(|_| !soaked && self.plan.next_wave_with_hosts(wave).is_some())
        {
            Some(pause) => {
                self.nodes.set(node, State::Held);
                let until = self.options.clock.now()
                    + chrono::Duration::from_std(pause).unwrap_or_default();
                self.emit(Event::GateWaiting {
                    wave: spec.name.clone(),
                    reason: crate::events::GateReason::Soak,
                    seconds: pause.as_secs(),
                    until: Some(rfc3339(until)),
                    zone: None,
                });
                self.waves[wave].soak.until = Some(until);
                if !spec.verify.is_empty() {
                    self.start_soak(wave, pause);
                    return;
                }
                self.workers.timers.spawn(async move {
                    tokio::time::sleep(pause).await;
                    Timer::Paused(wave)
                });
            }
            None => self.soaked(wave),
        }
    }

    /// What the soak showed, for the approval question: `its 20s soak passed (6 checks
    /// ok)`; `None` for a gate without a pause or checks.
    fn soak_summary(&self, wave: usize) -> Option<String> {
        let spec = &self.plan.playbook.strategy.waves[wave];
        let ok = self.waves[wave].soak.checks_ok;
        let checks = match ok {
            0 => String::new(),
            1 => " (1 check ok)".to_string(),
            n => format!(" ({n} checks ok)"),
        };
        match spec.pause {
            Some(pause) => Some(format!(
                "its {} soak passed{checks}",
                humantime::format_duration(pause)
            )),
            None if ok > 0 => Some(format!("its checks passed{checks}")),
            None => None,
        }
    }

    pub(super) fn pass_gate(&mut self, wave: usize) {
        let node = self.plan.waves[wave].gate;
        if self.stopped() {
            self.nodes.set(node, State::Held);
            return;
        }
        self.nodes.set(node, State::Succeeded);
        // A skipped wave's gate passes silently; the next wave with hosts is announced
        // when the last gate before it passes.
        let skipped = self.plan.waves[wave].hosts.is_empty();
        if !skipped {
            self.emit(Event::GatePassed {
                wave: self.plan.waves[wave].name.clone(),
                node: node.index(),
            });
        }
        let next = self.plan.waves.get(wave + 1);
        if let Some(next) = next.filter(|n| !n.hosts.is_empty()) {
            self.emit(Event::WaveStarted {
                wave: next.name.clone(),
                hosts: next.hosts.len(),
            });
        }
        self.release(node, true);
    }

    // ----- change windows -----

    /// A wave's hosts start only inside its change window; returns whether `node` waits.
    /// A `local` window is the host's own inventory `tz` (UTC without one).
    pub(super) fn hold_for_window(&mut self, node: NodeId, wave: usize) -> bool {
        let Some(window) = &self.plan.playbook.strategy.waves[wave].window else {
            return false;
        };
        let host = self.plan.task(node).expect("a task").host;
        let mut window = window.clone();
        if window.time_zone == crate::playbook::strategy::LOCAL {
            let tz = self.plan.inventory.hosts[host].tz.as_deref();
            window.time_zone = tz.unwrap_or("UTC").to_string();
        }
        // One reading of the clock: the opening announced is the window's own minute.
        let now = self.options.clock.now();
        let Some(wait) = change_window::wait_until_open(&window, now) else {
            return false;
        };
        self.nodes.set(node, State::Queued);
        let zone = window.time_zone.clone();
        let local = window.text.ends_with(crate::playbook::strategy::LOCAL);
        let held = &mut self.waves[wave].window_held;
        if let Some(nodes) = held.get_mut(&zone) {
            nodes.push(node);
            return true;
        }
        held.insert(zone.clone(), vec![node]);
        let text = if local {
            format!("{} ({zone})", window.text)
        } else {
            window.text.clone()
        };
        let opens = now + chrono::Duration::from_std(wait).unwrap_or_default();
        self.emit(Event::GateWaiting {
            wave: self.plan.waves[wave].name.clone(),
            reason: crate::events::GateReason::Window(text),
            // Whole seconds, rounded up: the wait is exact to the nanosecond, and a
            // window 5 h away is not announced as 4:59:59.
            seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            until: Some(rfc3339(opens)),
            zone: Some(zone.clone()),
        });
        self.workers.timers.spawn(async move {
            tokio::time::sleep(wait).await;
            Timer::WindowOpen(wave, zone)
        });
        true
    }

    pub(super) fn window_opened(&mut self, wave: usize, zone: &str) {
        for node in self.waves[wave]
            .window_held
            .remove(zone)
            .unwrap_or_default()
        {
            if self.nodes.state(node) == State::Queued {
                self.nodes.set(node, State::Waiting);
                self.ready(node);
            }
        }
    }
}

/// `2026-12-07T07:30:00Z`: a wait's end as events and the journal write it (whole
/// seconds, rounded up, as the announced wait).
fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    let up = if time.timestamp_subsec_nanos() > 0 {
        time + chrono::Duration::seconds(1)
    } else {
        time
    };
    up.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
