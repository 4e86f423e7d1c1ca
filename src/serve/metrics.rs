//! `/metrics` of `pony serve` in the OpenMetrics text format (which Prometheus reads),
//! encoded by the `prometheus-client` crate. What a rollout dashboard needs, read from
//! the state at each scrape: runs in flight, hosts by state per run, region and wave,
//! how long each wave's gate waited, and task durations by step. The runs covered are
//! those running and the newest one (so a run that just ended still shows how it ended).

use super::view::{HostState, HostsView};
use crate::plan::Plan;
use crate::state::runs::{self, RunState};
use crate::state::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    run: String,
    region: String,
    wave: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    run: String,
    wave: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The plans rebuilt from the runs' snapshots, kept across scrapes (a run's plan does
/// not change).
#[derive(Debug, Default)]
pub struct Plans(Mutex<HashMap<String, Option<Arc<Plan>>>>);

impl Plans {
    fn of(&self, id: &str, run_path: &Path) -> Option<Arc<Plan>> {
        let mut plans = self.0.lock().expect("plans lock");
        plans
            .entry(id.to_string())
            .or_insert_with(|| runs::snapshot_plan(run_path).ok().map(Arc::new))
            .clone()
    }
}

/// The metrics as OpenMetrics text.
pub fn render(store: &Store, plans: &Plans) -> anyhow::Result<String> {
    let in_flight = Gauge::<i64>::default();
    let hosts = Family::<HostLabels, Gauge>::default();
    let gate_wait = Family::<GateLabels, FloatGauge>::default();
    let durations = Family::<StepLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.05, 4.0, 10))
    });
    let ids = store.list()?;
    for (n, id) in ids.iter().enumerate() {
        let mut detail = store.read_summary(id);
        let running = detail.summary.state == RunState::Running;
        if !running && n > 0 {
            continue;
        }
        if running {
            in_flight.inc();
        }
        let plan = match plans.of(id, &detail.summary.path) {
            Some(plan) => Some(plan),
            None => {
                // A database's run: copy its snapshot the first time.
                detail = store.read(id);
                plans.0.lock().expect("plans lock").remove(id);
                plans.of(id, &detail.summary.path)
            }
        };
        if let Some(plan) = plan {
            count_hosts(&hosts, id, &HostsView::of(&detail, &plan));
        }
        for (wave, seconds) in gate_waits(&detail.summary.path, running) {
            let labels = GateLabels {
                run: id.clone(),
                wave,
            };
            gate_wait.get_or_create(&labels).set(seconds);
        }
        for task in &detail.tasks {
            if let Some(ms) = task.duration_ms {
                let step = task.label.rsplit_once('@').map_or(&*task.label, |(s, _)| s);
                durations
                    .get_or_create(&StepLabels {
                        step: step.to_string(),
                    })
                    .observe(ms as f64 / 1000.0);
            }
        }
    }
    let mut registry = Registry::with_prefix("pony");
    registry.register("runs_in_flight", "Runs running now", in_flight);
    registry.register(
        "hosts",
        "Hosts of a run by state (done, running, failed, rolled_back, partly, not_run) per region and wave",
        hosts,
    );
    registry.register(
        "gate_wait_seconds",
        "How long a wave's gate waited (for an approval, a soak or its checks); still growing while it waits",
        gate_wait,
    );
    registry.register(
        "task_duration_seconds",
        "Durations of finished tasks by step",
        durations,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The run's hosts by state per region and wave.
fn count_hosts(hosts: &Family<HostLabels, Gauge>, id: &str, view: &HostsView) {
    for wave in &view.waves {
        for (region, counts) in &wave.by_region {
            for state in HostState::ALL {
                let labels = HostLabels {
                    run: id.to_string(),
                    region: region.clone(),
                    wave: wave.name.clone(),
                    state: state.name().to_string(),
                };
                hosts.get_or_create(&labels).set(counts.get(state) as i64);
            }
        }
    }
}

/// Per wave, how long its gate waited: from its `gate_waiting` record to the first
/// timed record after its `gate_passed` (the journal does not time a gate's passing), or
/// to now while it waits (to the journal's last timed record when the run is not
/// running: it waits no more). Read from the run's local journal.
fn gate_waits(run_path: &Path, running: bool) -> Vec<(String, f64)> {
    let Ok(text) = std::fs::read_to_string(run_path.join("journal.jsonl")) else {
        return Vec::new();
    };
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let time_of = |r: &serde_json::Value| r["time"].as_str().and_then(runs::parse_time);
    let mut waits: Vec<(String, f64)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if record["type"] != "gate_waiting" {
            continue;
        }
        let (Some(wave), Some(since)) = (record["wave"].as_str(), time_of(record)) else {
            continue;
        };
        let passed = records[i..]
            .iter()
            .position(|r| r["type"] == "gate_passed" && r["wave"] == wave)
            .map(|p| i + p);
        let end = match passed {
            Some(p) => records[p..].iter().find_map(time_of),
            None if running => Some(SystemTime::now()),
            None => records.iter().rev().find_map(time_of),
        };
        let seconds = end
            .and_then(|end| end.duration_since(since).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        match waits.iter_mut().find(|(w, _)| w == wave) {
            // Several waits of one gate (a soak, then its approval): added up.
            Some((_, total)) => *total += seconds,
            None => waits.push((wave.to_string(), seconds)),
        }
    }
    waits
}
