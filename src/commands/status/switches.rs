//! The dead man's switches of a run, for `pony status`: which hosts the journal shows
//! left in flight under a `dead_man:` step (so a switch was armed there and no
//! controller disarmed it), and with `--hosts` what each of those hosts shows now —
//! armed, firing, or fired (when, and the rollback's exit status). Checking reads the
//! switch files on the hosts and changes nothing there; a resume reports and journals a
//! firing when it arms the task again.

use crate::exec::dead_man::{in_flight_hosts, inspect_command};
use crate::plan::{NodeId, Plan};
use crate::settings::Settings;
use crate::state::runs::{RunDetail, TaskStatus};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How long reading one host's switches may take, connecting included.
const CHECK_BOUND: Duration = Duration::from_secs(30);

/// The run's switches: the hosts left under one, and what they showed when checked.
#[derive(Debug, Serialize)]
pub struct Switches {
    /// Hosts the journal shows in flight under a dead man's switch.
    pub hosts: Vec<String>,
    /// What each of those hosts showed (`pony status --hosts`); absent when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<Vec<HostSwitches>>,
}

/// What one host showed.
#[derive(Debug, Serialize)]
pub struct HostSwitches {
    pub host: String,
    /// Why the host could not be read, if it could not (its switches may still fire).
    pub error: Option<String>,
    pub switches: Vec<SwitchSeen>,
}

/// One switch as its host shows it.
#[derive(Debug, Serialize)]
pub struct SwitchSeen {
    /// The task that armed it (`step@host`).
    pub task: String,
    pub state: SwitchState,
    /// When it fired (the host's clock, UTC).
    pub fired_at: Option<String>,
    /// The exit status of the rollback it ran.
    pub rollback_exit: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchState {
    /// Armed and not fired: no controller re-arms it, so it fires once its bound passes.
    Armed,
    /// Running the step's rollback now.
    Firing,
    /// Fired; no resume has reported it yet.
    Fired,
    /// Fired, and a resume reported it (and armed the task again).
    Reported,
}

impl Switches {
    /// The hosts left under a switch, per the journal; `None` when there are none.
    pub fn of(detail: &RunDetail, plan: &Plan) -> Option<Switches> {
        let hosts = left_under_a_switch(detail, plan);
        (!hosts.is_empty()).then(|| Switches {
            hosts: hosts
                .iter()
                .map(|&h| plan.inventory.hosts[h].name.clone())
                .collect(),
            checked: None,
        })
    }

    /// Reads the switches on each host (in parallel, as `pony ping` reaches hosts).
    pub fn check(&mut self, settings: &Settings, plan: &Plan, run_id: &str) -> anyhow::Result<()> {
        let by_name = |name: &String| {
            plan.inventory
                .hosts
                .iter()
                .position(|h| &h.name == name)
                .expect("a host of the plan")
        };
        let hosts: Vec<usize> = self.hosts.iter().map(by_name).collect();
        let opener = crate::commands::ping::connector(
            settings,
            &plan.inventory,
            &hosts,
            false,
            crate::transport::connect::HANDSHAKES,
        )?;
        let (inventory, opener) = (Arc::new(plan.inventory.clone()), Arc::new(opener));
        let connections = crate::commands::ping::connections(settings);
        let (answers, _) = crate::commands::ping::on_each_host(hosts, connections, |host| {
            let (inventory, opener) = (inventory.clone(), opener.clone());
            let command = inspect_command(run_id, host);
            async move {
                let read = async {
                    let connection = opener.open(&inventory.hosts[host]).await?;
                    connection.run(&command, Some(CHECK_BOUND)).await
                };
                match tokio::time::timeout(CHECK_BOUND, read).await {
                    Ok(Ok(output)) if output.success() => Ok(output.stdout),
                    Ok(Ok(output)) => Err(format!(
                        "reading the switches exited {:?}: {}",
                        output.exit_code,
                        String::from_utf8_lossy(&output.stderr).trim()
                    )),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "no answer within {}",
                        crate::duration::short(CHECK_BOUND)
                    )),
                }
            }
        })?;
        let checked = self
            .hosts
            .iter()
            .zip(answers)
            .map(|(host, answer)| match answer {
                Ok(stdout) => HostSwitches {
                    host: host.clone(),
                    error: None,
                    switches: parse(&String::from_utf8_lossy(&stdout), plan),
                },
                Err(error) => HostSwitches {
                    host: host.clone(),
                    error: Some(error),
                    switches: Vec::new(),
                },
            })
            .collect();
        self.checked = Some(checked);
        Ok(())
    }
}

/// Hosts a task of a `dead_man` step started on that did not finish: the rule a resume
/// follows ([`in_flight_hosts`]), applied to what the journal shows.
fn left_under_a_switch(detail: &RunDetail, plan: &Plan) -> Vec<usize> {
    let rolled_back = detail.rolled_back();
    let started: HashSet<&str> = detail.tasks.iter().map(|t| t.label.as_str()).collect();
    let done: HashSet<&str> = detail
        .tasks
        .iter()
        .filter(|t| matches!(t.state, TaskStatus::Succeeded | TaskStatus::Skipped))
        .filter(|t| !rolled_back.contains(t.label.as_str()))
        .map(|t| t.label.as_str())
        .collect();
    // A host whose task failed ended there, and its switch was disarmed with it.
    let failed: HashSet<&str> = detail
        .tasks
        .iter()
        .filter(|t| t.state == TaskStatus::Failed)
        .filter_map(|t| t.label.rsplit_once('@').map(|(_, host)| host))
        .collect();
    let label = |node: usize| plan.label(NodeId::new(node));
    in_flight_hosts(
        plan,
        |node| started.contains(label(node).as_str()),
        |node| done.contains(label(node).as_str()),
    )
    .iter()
    .enumerate()
    .filter(|(host, in_flight)| {
        **in_flight && !failed.contains(plan.inventory.hosts[*host].name.as_str())
    })
    .map(|(host, _)| host)
    .collect()
}

impl Switches {
    /// The human lines: the hosts left under a switch and how to check them, or what
    /// the hosts showed.
    pub fn human(&self, run_id: &str) -> String {
        let Some(checked) = &self.checked else {
            return format!(
                "\ndead man's switches: {} {} in flight under one when the run stopped; each runs its step's rollback once its bound passes with no controller\n  check them: {}\n",
                self.hosts.len(),
                if self.hosts.len() == 1 { "host was" } else { "hosts were" },
                crate::hint::pony(format!("status {run_id} --hosts"))
            );
        };
        let mut out = String::from("\ndead man's switches, read on the hosts now:\n");
        let width = checked.iter().map(|h| h.host.len()).max().unwrap_or(0);
        for host in checked {
            if let Some(error) = &host.error {
                out.push_str(&format!("  {:width$}  not read: {error}\n", host.host));
                continue;
            }
            if host.switches.is_empty() {
                out.push_str(&format!("  {:width$}  none armed or fired\n", host.host));
            }
            for switch in &host.switches {
                let at = switch.fired_at.as_deref().unwrap_or("?");
                let exit = switch
                    .rollback_exit
                    .map(|rc| rc.to_string())
                    .unwrap_or_else(|| "?".into());
                let what = match switch.state {
                    SwitchState::Armed => "armed: fires once its bound passes".to_string(),
                    SwitchState::Firing => "firing: its rollback runs now".to_string(),
                    SwitchState::Fired => format!("fired at {at}, rollback exit {exit}; a resume deploys the host again from its first task"),
                    SwitchState::Reported => format!("fired at {at}, rollback exit {exit} (reported by a resume)"),
                };
                out.push_str(&format!(
                    "  {:width$}  {}: {what}\n",
                    host.host, switch.task
                ));
            }
        }
        out
    }
}

/// The lines [`inspect_command`] prints: `STATE t<node>.<suffix> [AT RC]`.
fn parse(text: &str, plan: &Plan) -> Vec<SwitchSeen> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let state = match words.next()? {
                "armed" => SwitchState::Armed,
                "firing" => SwitchState::Firing,
                "fired" => SwitchState::Fired,
                "reported" => SwitchState::Reported,
                _ => return None,
            };
            let node: usize = words
                .next()?
                .strip_prefix('t')?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let task = plan
                .task(NodeId::new(node))
                .map(|_| plan.label(NodeId::new(node)))
                .unwrap_or_else(|| format!("task {node}"));
            let fired_at = words
                .next()
                .and_then(|at| at.parse::<i64>().ok())
                .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
                .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            let rollback_exit = words.next().and_then(|rc| rc.parse().ok());
            Some(SwitchSeen {
                task,
                state,
                fired_at,
                rollback_exit,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_lines_are_read_and_unknown_ones_ignored() {
        let plan = crate::plan::from_yaml(
            "name: t\nregions:\n  r1:\n    clusters:\n      c1: { hosts: { m1: } }\n",
            "name: e\nsteps:\n  - { name: drain, run: x }\n  - { name: accept, run: y, needs: [drain] }\n",
        );
        let node = |label: &str| {
            plan.tasks()
                .find(|(node, _)| plan.label(*node) == label)
                .map(|(node, _)| node.index())
                .unwrap()
        };
        let (drain, accept) = (node("drain@m1"), node("accept@m1"));
        let seen = parse(
            &format!("armed t{drain}.armed\nfired t{accept}.fired 1700000000 0\nreported t{accept}.fired.1699999000 1699999000 3\nnoise\n"),
            &plan,
        );
        let states: Vec<_> = seen.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [
                SwitchState::Armed,
                SwitchState::Fired,
                SwitchState::Reported
            ]
        );
        assert_eq!(seen[1].fired_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(seen[1].rollback_exit, Some(0));
        assert_eq!(seen[2].rollback_exit, Some(3));
        assert_eq!(seen[0].fired_at, None);
        assert_eq!(seen[0].task, "drain@m1");
        assert_eq!(seen[1].task, "accept@m1");
    }
}
