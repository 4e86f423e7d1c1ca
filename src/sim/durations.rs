//! How long each simulated task takes. Per step, the best source available:
//! 1. `--durations FILE` (rules per step, first matching host pattern wins);
//! 2. what the step's tasks took in earlier runs of the playbook (their journals): the
//!    whole distribution, sampled, not only its median;
//! 3. the step's `estimate:`;
//! 4. [`DEFAULT_TASK`].
//!
//! Rollback commands take what the step's rollbacks took in earlier runs, else the
//! file's `rollback:` for the step, else [`DEFAULT_ROLLBACK`]. Sampling is a pure
//! function of the seed, the task and the attempt ([`mix`]), so a result does not depend
//! on the order in which the scheduler happens to start tasks.

use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::pattern::{HostPattern, HostSet};
use crate::inventory::HostId;
use crate::plan::Plan;
use crate::playbook::StepId;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// A task whose step has no duration from any source.
pub const DEFAULT_TASK: Duration = Duration::from_secs(10);
/// A rollback command whose step has none.
pub const DEFAULT_ROLLBACK: Duration = Duration::from_secs(5);

/// A distribution of durations.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Fixed(Duration),
    /// Uniform between the two.
    Between(Duration, Duration),
    /// Measured samples (milliseconds), drawn from with equal weight.
    Samples(Vec<u64>),
}

impl Dist {
    /// The duration for the random number `r`.
    pub fn sample(&self, r: u64) -> Duration {
        match self {
            Dist::Fixed(d) => *d,
            Dist::Between(a, b) => {
                let span = b.saturating_sub(*a).as_millis() as u64;
                *a + Duration::from_millis(if span == 0 { 0 } else { r % (span + 1) })
            }
            Dist::Samples(ms) => Duration::from_millis(ms[(r % ms.len() as u64) as usize]),
        }
    }

    fn describe(&self) -> String {
        let f = |d: &Duration| crate::duration::short_ms(d.as_millis() as u64);
        match self {
            Dist::Fixed(d) => f(d),
            Dist::Between(a, b) => format!("{}..{}", f(a), f(b)),
            Dist::Samples(ms) => {
                let mut sorted = ms.clone();
                sorted.sort_unstable();
                format!(
                    "{} sample{}, median {}",
                    ms.len(),
                    if ms.len() == 1 { "" } else { "s" },
                    crate::duration::short_ms(sorted[sorted.len() / 2])
                )
            }
        }
    }
}

/// Where a step's durations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    File,
    Journal,
    Estimate,
    Default,
}

#[derive(Debug, Clone)]
struct StepDurations {
    /// First rule whose hosts contain the task's host wins; `None` matches every host.
    rules: Vec<(Option<HostSet>, Dist)>,
    source: Source,
    rollback: Dist,
    rollback_source: Source,
}

/// Every step's durations for one plan.
#[derive(Debug, Clone)]
pub struct Durations {
    steps: Vec<StepDurations>,
}

/// What earlier runs' journals say: `(task label, milliseconds)` of succeeded tasks and
/// of rollback commands.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    pub tasks: Vec<(String, u64)>,
    pub rollbacks: Vec<(String, u64)>,
}

/// One line of the durations table a simulation prints.
#[derive(Debug, Clone, Serialize)]
pub struct StepSource {
    pub step: String,
    pub source: Source,
    pub durations: String,
    pub rollback: String,
}

impl Durations {
    /// The durations of `plan`'s steps from `file` (already read), the journals'
    /// samples, the steps' `estimate:` and the defaults, in that order.
    pub fn build(
        plan: &Plan,
        file: Option<(&Path, &str)>,
        learned: &Learned,
    ) -> Result<Durations, Diagnostics> {
        let steps = &plan.playbook.steps;
        let per_step = |samples: &[(String, u64)]| {
            let mut out: Vec<Vec<u64>> = vec![Vec::new(); steps.len()];
            for (label, ms) in samples {
                let step = label.split('@').next().unwrap_or_default();
                if let Some(id) = plan.playbook.step_id(step) {
                    out[id].push(*ms);
                }
            }
            out
        };
        let tasks = per_step(&learned.tasks);
        let rollbacks = per_step(&learned.rollbacks);
        let mut from_file = match file {
            Some((path, text)) => parse_file(plan, path, text)?,
            None => vec![None; steps.len()],
        };
        let steps = steps
            .iter()
            .enumerate()
            .map(|(s, step)| {
                let file = from_file[s].take();
                let (rules, source) = if let Some(rules) = file
                    .as_ref()
                    .map(|f| f.rules.clone())
                    .filter(|r| !r.is_empty())
                {
                    (rules, Source::File)
                } else if !tasks[s].is_empty() {
                    (
                        vec![(None, Dist::Samples(tasks[s].clone()))],
                        Source::Journal,
                    )
                } else if let Some(estimate) = step.estimate {
                    (vec![(None, Dist::Fixed(estimate))], Source::Estimate)
                } else {
                    (vec![(None, Dist::Fixed(DEFAULT_TASK))], Source::Default)
                };
                let (rollback, rollback_source) = if !rollbacks[s].is_empty() {
                    (Dist::Samples(rollbacks[s].clone()), Source::Journal)
                } else if let Some(d) = file.and_then(|f| f.rollback) {
                    (d, Source::File)
                } else {
                    (Dist::Fixed(DEFAULT_ROLLBACK), Source::Default)
                };
                StepDurations {
                    rules,
                    source,
                    rollback,
                    rollback_source,
                }
            })
            .collect();
        Ok(Durations { steps })
    }

    /// Every step's durations (tests, and `plan --estimate` without journals).
    pub fn fixed(plan: &Plan) -> Durations {
        Durations::build(plan, None, &Learned::default()).expect("no file, no error")
    }

    /// How long one attempt of `step` on `host` takes for the random number `r`.
    pub fn task(&self, step: StepId, host: HostId, r: u64) -> Duration {
        let rules = &self.steps[step].rules;
        rules
            .iter()
            .find(|(hosts, _)| hosts.as_ref().is_none_or(|h| h.contains(host)))
            .map(|(_, dist)| dist.sample(r))
            .unwrap_or(DEFAULT_TASK)
    }

    pub fn rollback(&self, step: StepId, r: u64) -> Duration {
        self.steps[step].rollback.sample(r)
    }

    /// Where each step's durations come from, for the report.
    pub fn sources(&self, plan: &Plan) -> Vec<StepSource> {
        plan.playbook
            .steps
            .iter()
            .zip(&self.steps)
            .map(|(step, d)| StepSource {
                step: step.name.clone(),
                source: d.source,
                durations: d
                    .rules
                    .iter()
                    .map(|(hosts, dist)| match hosts {
                        Some(_) if d.rules.len() > 1 => format!("{} (some hosts)", dist.describe()),
                        _ => dist.describe(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                rollback: match d.rollback_source {
                    Source::Default => format!("{} (default)", d.rollback.describe()),
                    _ => d.rollback.describe(),
                },
            })
            .collect()
    }
}

/// One step's entry in a durations file.
#[derive(Debug, Clone)]
struct FileStep {
    rules: Vec<(Option<HostSet>, Dist)>,
    rollback: Option<Dist>,
}

/// A durations file:
///
/// ```yaml
/// stage: 20s                      # every host
/// drain:                          # first matching rule wins
///   - { hosts: mta, duration: 8m..12m }
///   - { duration: 2s }
/// switch: { duration: 1s, rollback: 3s }
/// ```
fn parse_file(plan: &Plan, path: &Path, text: &str) -> Result<Vec<Option<FileStep>>, Diagnostics> {
    let mut errors = Diagnostics::default();
    let mut out: Vec<Option<FileStep>> = vec![None; plan.playbook.steps.len()];
    let value: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(Diagnostic::from_yaml(path, &e).into()),
    };
    let Some(map) = value.as_mapping() else {
        return Err(Diagnostic::new(path, "a durations file maps step names to durations")
            .hint("e.g. `drain: 10m` or `drain: [{ hosts: mta, duration: 10m }, { duration: 2s }]`")
            .into());
    };
    let names: Vec<&str> = plan
        .playbook
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for (key, entry) in map {
        let name = key.as_str().unwrap_or_default();
        let Some(step) = plan.playbook.step_id(name) else {
            errors.push(
                Diagnostic::new(
                    path,
                    format!("no step `{name}` in playbook `{}`", plan.playbook.name),
                )
                .suggest(name, names.iter().copied()),
            );
            continue;
        };
        let what = format!("step `{name}`");
        match file_step(plan, path, &what, entry) {
            Ok(parsed) => out[step] = Some(parsed),
            Err(e) => errors.extend(e),
        }
    }
    errors.into_result(out)
}

fn file_step(
    plan: &Plan,
    path: &Path,
    what: &str,
    entry: &serde_yaml::Value,
) -> Result<FileStep, Diagnostics> {
    use serde_yaml::Value;
    let bad = |message: String| -> Diagnostics {
        Diagnostic::new(path, message)
            .hint("a duration is `10m`, `1m 30s` or a range `8m..12m`; a rule is `{ hosts: PATTERN, duration: D }`")
            .into()
    };
    let rule = |value: &Value| -> Result<(Option<HostSet>, Dist, Option<Dist>), Diagnostics> {
        match value {
            Value::String(_) | Value::Number(_) => Ok((
                None,
                dist(value).map_err(|e| bad(format!("{what}: {e}")))?,
                None,
            )),
            Value::Mapping(m) => {
                for key in m.keys() {
                    let key = key.as_str().unwrap_or_default();
                    if !["hosts", "duration", "rollback"].contains(&key) {
                        return Err(bad(format!(
                            "{what}: unknown key `{key}` (hosts, duration, rollback)"
                        )));
                    }
                }
                let hosts = match m.get("hosts").and_then(Value::as_str) {
                    None => None,
                    Some(text) => Some(
                        HostPattern::parse(text)
                            .and_then(|p| p.resolve(&plan.inventory))
                            .map_err(|e| bad(format!("{what}: hosts `{text}`: {e}")))?,
                    ),
                };
                let duration = m
                    .get("duration")
                    .ok_or_else(|| bad(format!("{what}: a rule needs `duration:`")))
                    .and_then(|v| dist(v).map_err(|e| bad(format!("{what}: {e}"))))?;
                let rollback = m
                    .get("rollback")
                    .map(|v| dist(v).map_err(|e| bad(format!("{what}: rollback: {e}"))))
                    .transpose()?;
                Ok((hosts, duration, rollback))
            }
            _ => Err(bad(format!(
                "{what}: expected a duration, a rule or a list of rules"
            ))),
        }
    };
    let mut step = FileStep {
        rules: Vec::new(),
        rollback: None,
    };
    let entries: Vec<&Value> = match entry {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    for value in entries {
        let (hosts, duration, rollback) = rule(value)?;
        step.rules.push((hosts, duration));
        if rollback.is_some() {
            step.rollback = rollback;
        }
    }
    Ok(step)
}

/// `10m`, `90s`, `1m 30s`, or `8m..12m`.
fn dist(value: &serde_yaml::Value) -> Result<Dist, String> {
    let text = match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => format!("{n}s"),
        _ => return Err("expected a duration such as `10m`".into()),
    };
    let one = |t: &str| {
        humantime::parse_duration(t.trim())
            .map_err(|e| format!("`{}` is not a duration: {e}", t.trim()))
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(format!("`{text}`: the range ends before it starts"));
            }
            Ok(Dist::Between(a, b))
        }
        None => one(&text).map(Dist::Fixed),
    }
}

/// A random number from the seed and the parts that name a draw (splitmix64 over them):
/// the same draw always gives the same number, whatever else was drawn before.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        x = x.wrapping_add(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

/// A number in [0, 1) from [`mix`].
pub fn unit(seed: u64, parts: &[u64]) -> f64 {
    (mix(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::plan::from_yaml(
            "name: t\nregions:\n  r1:\n    clusters:\n      c1: { roles: [mta], hosts: { \"m[1:2]\": } }\n      c2: { hosts: { \"i[1:2]\": } }\n",
            "name: e\nsteps:\n  - { name: stage, run: x, estimate: 20s }\n  - { name: drain, run: y, needs: [stage] }\n  - { name: switch, run: z, needs: [drain] }\n",
        )
    }

    #[test]
    fn the_file_beats_the_journal_which_beats_the_estimate_which_beats_the_default() {
        let plan = plan();
        let file = "drain:\n  - { hosts: mta, duration: 10m }\n  - { duration: 2s }\n";
        let learned = Learned {
            tasks: vec![
                ("stage@m1".into(), 300),
                ("switch@m1".into(), 700),
                ("switch@i1".into(), 900),
            ],
            rollbacks: vec![("drain@m1".into(), 40)],
        };
        let d = Durations::build(&plan, Some((Path::new("d.yaml"), file)), &learned).unwrap();
        let (m1, i1) = (
            plan.inventory.host_id("m1").unwrap(),
            plan.inventory.host_id("i1").unwrap(),
        );
        assert_eq!(
            d.task(0, m1, 7),
            Duration::from_millis(300),
            "journal over estimate"
        );
        assert_eq!(d.task(1, m1, 7), Duration::from_secs(600), "the mta rule");
        assert_eq!(
            d.task(1, i1, 7),
            Duration::from_secs(2),
            "the catch-all rule"
        );
        let switch: Vec<Duration> = (0..2).map(|r| d.task(2, m1, r)).collect();
        assert_eq!(
            switch,
            vec![Duration::from_millis(700), Duration::from_millis(900)],
            "samples drawn"
        );
        assert_eq!(d.rollback(1, 3), Duration::from_millis(40));
        assert_eq!(d.rollback(0, 3), DEFAULT_ROLLBACK);
        let without = Durations::fixed(&plan);
        assert_eq!(without.task(0, m1, 1), Duration::from_secs(20), "estimate");
        assert_eq!(without.task(1, m1, 1), DEFAULT_TASK);
    }

    #[test]
    fn a_bad_file_names_the_step_and_the_fix() {
        let plan = plan();
        let err = Durations::build(
            &plan,
            Some((Path::new("d.yaml"), "drian: 5m\nstage: soon\n")),
            &Learned::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no step `drian`") && err.contains("did you mean `drain`"),
            "{err}"
        );
        assert!(err.contains("`soon` is not a duration"), "{err}");
    }

    #[test]
    fn ranges_stay_inside_their_bounds_and_draws_are_pure() {
        let between = Dist::Between(Duration::from_secs(8), Duration::from_secs(12));
        for r in 0..1000 {
            let d = between.sample(mix(1, &[r]));
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
        }
        assert_eq!(mix(5, &[1, 2]), mix(5, &[1, 2]));
        assert_ne!(mix(5, &[1, 2]), mix(5, &[2, 1]));
        let u = unit(9, &[3]);
        assert!((0.0..1.0).contains(&u));
    }
}
