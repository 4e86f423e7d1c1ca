//! `pony simulate` against reality and against itself: a real deploy on a real-sshd lab
//! fleet (steps of known, varied lengths, a failure that rolls its host back, a pause
//! gate), then a simulation fed each task's journaled duration has the run's outcome and
//! exactly those durations on its critical path, and is never longer than the run; a simulation with every sshd stopped contacts nothing, writes
//! nothing and takes no lock; the same seed gives the same JSON; bad what-ifs exit 2; the
//! timeline has wall-clock and local-time labels (`simulate/svg_labels.rs`).

mod support;
#[path = "simulate/svg_labels.rs"]
mod svg_labels;

use serde_json::Value;
use std::path::Path;
use support::{lab_with, pony, text};

/// Steps that take known, different times; `drain` fails where `fail-drain` exists, and a
/// failed host rolls back (drain's rollback, then fetch's) within the budget of one.
const TIMED: &str = r#"
name: timed
strategy:
  waves:
    - { name: first, regions: [r1], pause: 1s }
    - { name: rest, regions: ["*"] }
  max_unavailable: 50%
  max_failures: 1
  on_failure: rollback-region
steps:
  - name: fetch
    run: sleep 0.3 && touch {{ root }}/fetched
    rollback: sleep 0.2
  - name: drain
    needs: [fetch]
    run: sleep 0.8 && test ! -e {{ root }}/fail-drain
    rollback: sleep 0.4
  - name: switch
    needs: [drain]
    run: sleep 0.2
"#;

fn simulation(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    json["simulation"].clone()
}

/// `--durations` rules that give every task of the run, on its host, the time its journal
/// says it took (and its rollback, where it had one): `step: [{ hosts, duration,
/// rollback }, ...]`. Returns the file's text and each task's label → milliseconds.
fn journaled_durations(journal: &[Value]) -> (String, std::collections::BTreeMap<String, u64>) {
    use std::collections::BTreeMap;
    let mut took: BTreeMap<String, u64> = BTreeMap::new();
    let mut rolled: BTreeMap<String, u64> = BTreeMap::new();
    for record in journal {
        let (Some(label), Some(ms)) = (record["label"].as_str(), record["duration_ms"].as_u64())
        else {
            continue;
        };
        match record["type"].as_str() {
            Some("task_finished") => took.insert(label.to_string(), ms),
            Some("rollback_finished") => rolled.insert(label.to_string(), ms),
            _ => None,
        };
    }
    let mut steps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (label, ms) in &took {
        let (step, host) = label.split_once('@').unwrap();
        let rollback = rolled
            .get(label)
            .map(|r| format!(", rollback: {r}ms"))
            .unwrap_or_default();
        steps.entry(step).or_default().push(format!(
            "  - {{ hosts: {host}, duration: {ms}ms{rollback} }}\n"
        ));
    }
    let text = steps
        .iter()
        .map(|(step, rules)| format!("{step}:\n{}", rules.concat()))
        .collect();
    (text, took)
}

/// The simulation is the real run without the time between tasks: fed the very durations
/// the run's journal recorded for each task (`--durations`, one rule per task), it has the
/// run's outcome, every task on its critical path takes exactly its journaled time, and
/// its total is never longer than the real run (which adds connecting, process start-up
/// and journaling between tasks; a loaded machine only adds more). Nothing is compared
/// with a tolerance on the wall clock.
#[test]
fn a_simulation_with_the_journals_durations_is_the_real_run_without_its_overheads() {
    let lab = lab_with(2, 1, 4);
    let playbook = lab.playbook(TIMED);
    lab.make_fail("r2-c1-03", "drain");
    let deploy = lab.deploy(&playbook, &["--output", "json"]);
    let events = support::events(&deploy);
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {}", text(&deploy)));
    let measured = summary["duration_ms"].as_u64().unwrap();
    // The run did what the test says it does: the failure, the rollback, the pause.
    assert_eq!(summary["rolled_back"], 1, "{summary}");
    assert_eq!(summary["ok"], 7, "{summary}");
    assert!(events
        .iter()
        .any(|e| e["event"] == "rollback_task" && e["task"]["host"] == "r2-c1-03"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "gate_waiting" && e["reason"] == "soak"));

    // Without --durations, the simulation learns each step's durations from this journal.
    let inventory = lab.inventory.to_str().unwrap();
    let learned = simulation(
        &lab.pony(&[
            "simulate",
            "-i",
            inventory,
            playbook.to_str().unwrap(),
            "--fail-task",
            "drain@r2-c1-03",
            "--output",
            "json",
        ])
        .output()
        .unwrap(),
    );
    for step in learned["durations"].as_array().unwrap() {
        assert_eq!(step["source"], "journal", "{step}");
    }
    // The failed host's rollbacks were journaled with their durations.
    for step in &learned["durations"].as_array().unwrap()[..2] {
        let rollback = step["rollback"].as_str().unwrap();
        assert!(rollback.starts_with("1 sample, median"), "{step}");
    }

    let (_, run_dir) = support::only_run(&lab.state);
    let (rules, took) = journaled_durations(&support::journal(&run_dir));
    assert_eq!(
        took.len(),
        3 * 8 - 1,
        "every task but the failed host's switch: {took:?}"
    );
    let durations = lab.path("durations.yaml");
    std::fs::write(&durations, &rules).unwrap();

    let out = lab
        .pony(&[
            "simulate",
            "-i",
            inventory,
            playbook.to_str().unwrap(),
            "--fail-task",
            "drain@r2-c1-03",
            "--durations",
            durations.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let sim = simulation(&out);
    for step in sim["durations"].as_array().unwrap() {
        assert_eq!(step["source"], "file", "{step}");
    }
    assert_eq!(sim["failures"]["failed_tasks"], 1, "{sim}");
    assert_eq!(sim["host_outcomes"]["rolled_back"], 1, "{sim}");
    assert_eq!(sim["host_outcomes"]["ok"], 7, "{sim}");

    // Each task on the critical path took, in the simulation, what it took for real.
    let path = sim["critical_path"].as_array().unwrap();
    let mut tasks_on_path = 0;
    for segment in path {
        let what = segment["what"].as_str().unwrap();
        if let Some(ms) = took.get(what) {
            let length =
                segment["end_ms"].as_u64().unwrap() - segment["start_ms"].as_u64().unwrap();
            assert_eq!(length, *ms, "{what}: {segment}");
            tasks_on_path += 1;
        }
    }
    assert!(tasks_on_path >= 6, "two waves of chained steps: {path:#?}");
    assert!(
        path.iter().any(|s| s["what"] == "gate of wave first"),
        "the pause is on the path: {path:#?}"
    );

    // The real run is the simulation plus the time between tasks: never shorter.
    let predicted = sim["total_ms"].as_u64().unwrap();
    eprintln!("simulated {predicted} ms, measured {measured} ms");
    assert!(
        predicted <= measured,
        "the simulation ({predicted} ms) is longer than the run it replays ({measured} ms)"
    );
    // The simulation added no run to the state dir.
    assert_eq!(
        std::fs::read_dir(lab.state.join("runs")).unwrap().count(),
        1
    );
}

#[test]
fn a_simulation_contacts_no_host_writes_nothing_and_takes_no_lock() {
    let mut lab = lab_with(2, 1, 2);
    let playbook = lab.playbook(TIMED);
    for host in lab.host_names() {
        lab.fleet.kill(&host).unwrap();
    }
    let inventory = lab.inventory.to_str().unwrap().to_string();
    // Every sshd is down: a real connection fails.
    let ping = lab.pony(&["ping", "-i", &inventory]).output().unwrap();
    assert_ne!(ping.status.code(), Some(0), "{}", text(&ping));

    let out = lab
        .pony(&[
            "simulate",
            "-i",
            &inventory,
            playbook.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let sim = simulation(&out);
    assert_eq!(sim["outcome"], "succeeded", "{sim}");
    assert_eq!(sim["host_outcomes"]["ok"], 4, "{sim}");
    for host in lab.host_names() {
        assert!(
            !lab.root(&host).join("fetched").exists(),
            "{host} was touched"
        );
    }
    for folder in ["runs", "locks", "hosts"] {
        assert!(
            !lab.state.join(folder).exists(),
            "a simulation wrote {folder}/ into the state dir"
        );
    }
}

fn simulate_local(state: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "simulate",
        "-i",
        "inventories/local.yaml",
        "playbooks/mail-rollout.yaml",
        "--start",
        "2026-03-10T20:00:00Z",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    pony(state, &args).output().unwrap()
}

#[test]
fn the_same_seed_gives_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let what_if = ["--fail", "15%", "--unreachable", "5%", "--seed", "42"];
    let first = simulate_local(dir.path(), &what_if);
    let second = simulate_local(dir.path(), &what_if);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout)
    );
    let sim = simulation(&first);
    assert!(
        sim["failures"]["failed_tasks"].as_u64().unwrap() > 0,
        "{sim}"
    );
    let other = simulation(&simulate_local(
        dir.path(),
        &["--fail", "15%", "--unreachable", "5%", "--seed", "43"],
    ));
    assert_ne!(sim, other, "another seed draws other failures");
}

const HOUR: u64 = 3_600_000;

/// The `(kind, wave, length)` of a simulation's gates and windows.
fn gates(sim: &Value) -> Vec<(String, String, u64)> {
    sim["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_string(),
                g["wave"].as_str().unwrap().to_string(),
                g["end_ms"].as_u64().unwrap() - g["start_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn compare_prints_the_by_hand_baseline_and_the_svg_has_a_lane_per_region() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("timeline.svg");
    // 20:00 UTC on 10 March 2026: 02:00 in Dublin (UTC+0) is 6 h later, 02:00 in New York
    // (UTC-4 since 8 March) 10 h later. A drain takes ~10 minutes, so one host at a
    // time misses a five-minute window.
    let what = [
        "--durations",
        "playbooks/mail-rollout.durations.yaml",
        "--set",
        "strategy.max_unavailable=100%",
        "--set",
        "strategy.waves.world.window=02:00-02:05 local",
        "--set",
        "strategy.waves.canary.pause=30m",
        "--approve-after",
        "7m",
        "--compare",
        "--svg",
        svg.to_str().unwrap(),
    ];
    let out = simulate_local(dir.path(), &what);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let (sim, one_host, same_policy) = (
        &json["simulation"],
        &json["baseline"],
        &json["same_policy_baseline"],
    );
    let slots = |sim: &Value| -> Vec<u64> {
        sim["regions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["clusters"].as_array().unwrap())
            .map(|c| c["slots"].as_u64().unwrap())
            .collect()
    };
    assert!(
        slots(one_host).iter().all(|&s| s == 1),
        "one host per cluster"
    );
    assert_eq!(
        slots(same_policy),
        slots(sim),
        "the playbook's own max_unavailable"
    );
    assert!(slots(sim).iter().all(|&s| s == 2), "100% of two hosts");
    for base in [one_host, same_policy] {
        // One region after the other, in the order the waves reach them.
        let waves = base["waves"].as_array().unwrap();
        let names: Vec<&str> = waves.iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["cn-south", "eu-west", "us-east"]);
        for pair in waves.windows(2) {
            assert!(
                pair[1]["start_ms"].as_u64() >= pair[0]["end_ms"].as_u64(),
                "a region starts after the one before it ended: {pair:?}"
            );
        }
        // Windows kept: eu-west and us-east start at 02:00 local (06:00 and 10:00 after
        // the start, modulo a day).
        for (region, opens) in [("eu-west", 6 * HOUR), ("us-east", 10 * HOUR)] {
            let span = base["regions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == region)
                .unwrap();
            let since_open = (span["start_ms"].as_u64().unwrap() + 24 * HOUR - opens) % (24 * HOUR);
            assert!(
                since_open < 5 * 60_000,
                "{region} starts inside its window: {span}"
            );
        }
        // A person starts each next region (7 minutes each).
        let approvals: Vec<(String, u64)> = gates(base)
            .into_iter()
            .filter(|(kind, _, _)| kind == "approve")
            .map(|(_, wave, ms)| (wave, ms))
            .collect();
        assert_eq!(
            approvals,
            vec![("cn-south".into(), 420_000), ("eu-west".into(), 420_000)]
        );
    }
    let pauses = |sim: &Value| -> Vec<(String, u64)> {
        gates(sim)
            .into_iter()
            .filter(|(kind, _, _)| kind == "soak")
            .map(|(_, wave, ms)| (wave, ms))
            .collect()
    };
    assert_eq!(
        pauses(same_policy),
        vec![("cn-south".into(), 1_800_000)],
        "the soak kept"
    );
    assert_eq!(pauses(one_host), vec![], "no soak in the one-host practice");
    // The window holds hosts queued for a slot: one at a time, eu-west's second host of
    // each cluster waits for the next night.
    let eu_west = one_host["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "eu-west")
        .unwrap();
    for cluster in eu_west["clusters"].as_array().unwrap() {
        let bar = &cluster["bars"][0];
        let length = bar["end_ms"].as_u64().unwrap() - bar["start_ms"].as_u64().unwrap();
        assert!(length > 24 * HOUR, "{cluster}");
    }

    let total = |sim: &Value| sim["total_ms"].as_u64().unwrap() as f64;
    let speedup = json["speedup"].as_f64().unwrap();
    let tool = json["speedup_from_tool"].as_f64().unwrap();
    let policy = json["speedup_from_policy"].as_f64().unwrap();
    assert!((speedup - total(one_host) / total(sim)).abs() < 1e-9);
    assert!((tool - total(same_policy) / total(sim)).abs() < 1e-9);
    assert!(
        (tool * policy - speedup).abs() < 1e-9,
        "tool × policy = total"
    );
    assert!(tool > 1.0 && policy > 1.0, "{tool} {policy}");

    let human = pony(
        dir.path(),
        &[
            "simulate",
            "-i",
            "inventories/local.yaml",
            "playbooks/mail-rollout.yaml",
        ],
    )
    .args(["--start", "2026-03-10T20:00:00Z"])
    .args(&what[..what.len() - 2])
    .output()
    .unwrap();
    let said = text(&human);
    for line in [
        "by hand, the same policy",
        "by hand, one host per cluster at a time",
        &format!("of the {speedup:.1}x: {tool:.1}x from the tool"),
        &format!("{policy:.1}x from the policy"),
    ] {
        assert!(said.contains(line), "{line:?} in:\n{said}");
    }

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let labels: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.descendants().filter_map(|t| t.text()).collect::<String>())
        .collect();
    for region in ["cn-south", "eu-west", "us-east"] {
        assert!(
            labels.iter().any(|l| l.starts_with(region)),
            "no lane for {region}: {labels:?}"
        );
    }
    let bars = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("rect")
                && n.children().any(|c| {
                    c.has_tag_name("title") && c.text().is_some_and(|t| t.contains(" wave "))
                })
        })
        .count();
    let expected: usize = sim["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["clusters"].as_array().unwrap())
        .map(|c| c["bars"].as_array().unwrap().len())
        .sum();
    assert_eq!(bars, expected, "a bar per cluster and wave");
}

#[test]
fn bad_what_ifs_exit_2_naming_the_option_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--set", "strategy.waves.chnia.pause=1m"],
            "no element named `chnia`",
        ),
        (&["--set", "strategy.max_unavailable=0"], "max_unavailable"),
        (
            &["--fail-task", "drian@mx-gz-01"],
            "did you mean `drain@mx-gz-01`?",
        ),
        (&["--fail", "150%"], "not between 0 and 100%"),
    ];
    for (extra, expected) in cases {
        let out = simulate_local(dir.path(), extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{extra:?}: {}",
            text(&out)
        );
    }
    let durations = dir.path().join("d.yaml");
    std::fs::write(&durations, "drian: 5m\n").unwrap();
    let out = simulate_local(dir.path(), &["--durations", durations.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("d.yaml") && err.contains("did you mean `drain`"),
        "{err}"
    );
}
