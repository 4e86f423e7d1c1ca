//! `pony plan --estimate` is the short form of `pony simulate`: the deploy scheduler in
//! virtual time, with step durations learned from earlier runs' journals (per step, the
//! succeeded tasks' `duration_ms` over the latest runs of the same playbook, sampled per
//! task). The journals are written here with known durations, so the expected estimate
//! is exact and nothing depends on how fast this machine is.

mod support;

use serde_json::json;
use std::path::Path;

const PLAYBOOK: &str = "name: timed\nsteps:\n  - { name: a, run: \"true\" }\n  - { name: b, needs: [a], run: \"true\", estimate: 2s }\n";

/// A finished run of `playbook` whose tasks took the given times.
fn journal(state: &Path, id: &str, playbook: &str, tasks: &[(&str, &str, u64)]) {
    let dir = state.join("runs").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = vec![
        json!({"type": "run_started", "run_id": id, "playbook": playbook,
        "inventory": "local", "time": "2026-01-01T00:00:00Z", "pid": 1, "user": "u",
        "host": "h"}),
    ];
    for (node, (label, state, ms)) in tasks.iter().enumerate() {
        lines.push(json!({"type": "task_started", "node": node, "label": label,
            "time": "2026-01-01T00:00:00Z"}));
        lines.push(
            json!({"type": "task_finished", "node": node, "label": label,
            "state": state, "exit_code": 0, "duration_ms": ms, "captures": [],
            "output_tail": "", "error": null}),
        );
    }
    lines.push(
        json!({"type": "run_finished", "outcome": "succeeded", "exit_code": 0,
        "time": "2026-01-01T00:01:00Z"}),
    );
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("journal.jsonl"), text).unwrap();
}

#[test]
fn plan_estimate_simulates_with_the_durations_of_earlier_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let playbook = dir.path().join("timed.yaml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    let estimate = || {
        let out = support::pony(
            &state,
            &[
                "plan",
                "-i",
                "inventories/local.yaml",
                playbook.to_str().unwrap(),
                "--estimate",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let before = estimate();
    // The 12 hosts of the local inventory run side by side: a takes the stated default
    // (10s, no `estimate:` and no journal yet), then b its `estimate: 2s`.
    assert!(
        before.contains("estimate: 12s (simulated with the deploy scheduler")
            && before.contains("(without `estimate:` or journal samples, 10s each: a)")
            && before.contains("(from `estimate:`: b)"),
        "{before}"
    );

    // Samples of `a` over two runs: 100, 900 and 400 ms (median 400). A failed task and
    // another playbook's run do not count.
    journal(
        &state,
        "20260101-000000-0001",
        "timed",
        &[
            ("a@mx-gz-01", "succeeded", 100),
            ("a@web-gz-01", "succeeded", 900),
            ("a@imap-gz-01", "failed", 60_000),
            ("b@mx-gz-01", "succeeded", 7),
        ],
    );
    journal(
        &state,
        "20260101-000000-0002",
        "timed",
        &[("a@mx-gz-01", "succeeded", 400)],
    );
    journal(
        &state,
        "20260101-000000-0003",
        "other",
        &[("a@mx-gz-01", "succeeded", 50_000)],
    );

    let after = estimate();
    assert!(
        after.contains(
            "(from earlier runs' journals: a 3 samples, median 400ms, b 1 sample, median 7ms)"
        ),
        "a's samples are 100, 400 and 900 ms; b's measured 7 ms beats its `estimate: 2s`: {after}"
    );
    assert!(
        !after.contains("10s each") && !after.contains("from `estimate:`"),
        "{after}"
    );
    // Each of the 12 hosts draws a's duration from its 3 samples (seed 1): the slowest
    // host drew 900 ms, then b's 7 ms; shown to the tenth of a second.
    assert!(after.contains("estimate: 900ms (simulated"), "{after}");
}
