//! `health:`: what "this host serves" means, as checks by role (a `run` command that exits
//! 0, or a protocol `probe`), and how long a host may take to pass them. pony runs them
//! after a host's rollback: a host counts as rolled back only when its rollback commands
//! succeeded and its checks pass within `wait` (the executor's `health` module).

use super::raw::{RawHealth, RawHealthCheck};
use super::strategy::CheckAction;
use super::Builder;
use crate::inventory::pattern::HostPattern;
use std::time::Duration;

/// How long a host may take to pass its checks when `wait:` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How often failing checks are tried again when `every:` is not given.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(2);

/// The playbook's health checks; without any, a rollback is "unverified".
#[derive(Debug, Clone)]
pub struct Health {
    pub wait: Duration,
    pub every: Duration,
    pub checks: Vec<HealthCheck>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            wait: DEFAULT_WAIT,
            every: DEFAULT_EVERY,
            checks: Vec::new(),
        }
    }
}

/// One check, on the hosts its pattern matches (every host without one).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub name: String,
    pub action: CheckAction,
    pub hosts: Option<HostPattern>,
}

impl HealthCheck {
    /// What the check does, as `pony plan` and failures show it.
    pub fn describe(&self) -> String {
        let what = self.action.describe();
        let hosts = self.hosts.as_ref().map_or("all", |h| h.as_str());
        format!("{}: {what} on {hosts}", self.name)
    }
}

impl Builder<'_> {
    pub(super) fn health(&mut self, raw: Option<RawHealth>) -> Health {
        let Some(raw) = raw else {
            return Health::default();
        };
        let wait = raw
            .wait
            .as_ref()
            .and_then(|w| self.duration("health.wait", w))
            .unwrap_or(DEFAULT_WAIT);
        let every = raw
            .every
            .as_ref()
            .and_then(|e| self.duration("health.every", e))
            .unwrap_or(DEFAULT_EVERY);
        if every.is_zero() {
            self.error(
                "health.every is 0",
                "try failing checks again at most as often as `every: 1s`",
            );
        }
        let mut names = std::collections::HashSet::new();
        let checks = raw
            .checks
            .into_iter()
            .filter_map(|check| {
                if !names.insert(check.name.clone()) {
                    self.error(
                        format!("health check `{}` is defined twice", check.name),
                        "give every health check a unique name",
                    );
                }
                self.health_check(check)
            })
            .collect();
        Health {
            wait,
            every,
            checks,
        }
    }

    fn health_check(&mut self, raw: RawHealthCheck) -> Option<HealthCheck> {
        let what = format!("health check `{}`", raw.name);
        let action = match (raw.run, raw.probe) {
            (Some(run), None) => CheckAction::Run(run),
            (None, Some(probe)) => CheckAction::Probe(probe),
            (Some(_), Some(_)) => {
                self.error(
                    format!("{what} has both `run` and `probe`"),
                    "give each check one of them; split it into two checks",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    format!("{what} has nothing to check"),
                    "add `run: <command>` (exit 0 passes) or `probe: { smtp: { port: 25 } }`",
                );
                return None;
            }
        };
        let hosts = match raw.hosts.as_deref().map(HostPattern::parse) {
            None => None,
            Some(Ok(pattern)) => Some(pattern),
            Some(Err(e)) => {
                self.pattern_error(
                    &format!("{what} hosts"),
                    &e,
                    "use a role or pattern, e.g. `hosts: mta`",
                );
                return None;
            }
        };
        Some(HealthCheck {
            name: raw.name,
            action,
            hosts,
        })
    }
}
