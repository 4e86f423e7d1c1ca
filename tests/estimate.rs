//! `pony plan --estimate` learns step durations from earlier runs' journals: per step,
//! the median of the succeeded tasks' `duration_ms` over the latest runs of the same
//! playbook. The journals are written here with known durations, so the expected
//! estimate is exact and nothing depends on how fast this machine is.

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
fn plan_estimate_uses_the_median_duration_from_earlier_runs() {
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
    assert!(
        before.contains("critical path 2s with") && before.contains("count as 0s: a"),
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
        after.contains("(from earlier runs' journals: a 400ms)"),
        "a's median is 400 ms: {after}"
    );
    assert!(!after.contains("count as 0s"), "{after}");
    // b keeps its `estimate: 2s`; the critical path is a then b.
    assert!(after.contains("critical path 2s 400ms with"), "{after}");
}
