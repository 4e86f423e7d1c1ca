//! `verify:` checks at a wave's gate: soak rounds, baseline comparisons, checks before
//! the `approve` question, checks as templates.

use super::*;

fn verify_events(events: &[Event]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::VerifyCheck(crate::events::VerifyCheck {
                check, host, ok, ..
            }) => Some((check.clone(), host.clone(), *ok)),
            _ => None,
        })
        .collect()
}

/// Wave `canary` (a1) soaks for an hour with a check every 10ms; wave `rest` follows.
fn canary_playbook(verify: &str, pause: &str) -> String {
    format!(
        r#"name: p
strategy:
  max_failures: 0
  waves:
    - name: canary
      regions: [r1]
      hosts: a1
      pause: {pause}
      verify:
{verify}
    - {{ name: rest, regions: ["*"] }}
steps:
  - name: deploy
    run: echo deploy >> log
    rollback: echo undo-deploy >> log
  - name: health
    needs: [deploy]
    run: "true"
"#
    )
}

/// A check printing 50 on the canary (r1) and `baseline` elsewhere, compared to b1,b2.
fn compare_check(baseline: u32, tolerance: &str) -> String {
    format!(
        "        - name: errors\n          run: 'case $(basename \"$PWD\") in a*) echo 50;; *) echo {baseline};; esac'\n          every: 20ms\n          compare: median\n          baseline: b1,b2\n          tolerance: \"{tolerance}\"\n"
    )
}

/// A compare check whose command records how many of its hosts are in it at once: each
/// waits (a bounded second) for another host to arrive, so two lanes side by side always
/// meet and one lane at a time never does (a lane that met leaves its marker for the
/// other to see; one that was alone removes it).
fn meeting_check() -> String {
    let command = "h=$(basename $PWD); touch ../in-$h; n=0; while [ $(ls ../in-* | wc -l) -lt 2 ] && [ $n -lt 10 ]; do sleep 0.1; n=$((n+1)); done; c=$(ls ../in-* | wc -l); echo $c >> ../met; [ $c -ge 2 ] || rm ../in-$h; echo 5";
    format!("        - name: meet\n          run: '{command}'\n          every: 20ms\n          compare: median\n          baseline: b1\n")
}

#[tokio::test]
async fn a_check_failing_during_the_soak_fails_the_wave_and_rolls_the_canary_back() {
    // The canary passes its own health step; its check reads a marker the test flips
    // after two passing checks.
    let verify = "        - { name: healthy, run: \"test ! -e unhealthy\", every: 10ms }\n";
    let mut run = start(&canary_playbook(verify, "1h"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        run.until(
            &mut seen,
            |e| matches!(e, Event::VerifyCheck(crate::events::VerifyCheck { ok: true, host, .. }) if host == "a1"),
        )
        .await;
    }
    std::fs::write(run.host_dir("a1").join("unhealthy"), "x").unwrap();
    let (report, events, run) = run.finish(seen).await;
    let checks = verify_events(&events);
    let failed: Vec<_> = checks.iter().filter(|c| !c.2).collect();
    assert_eq!(failed.len(), 1, "{checks:?}");
    assert_eq!(failed[0].1, "a1");
    assert!(checks.iter().filter(|c| c.2).count() >= 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WaveFailed { wave, reason, .. }
            if wave == "canary" && reason.contains("check healthy failed on a1"))),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::GatePassed { .. })));
    // Rolled back although it had finished; nothing of the next wave started.
    assert_eq!(rolled_back_hosts(&events), vec!["a1"]);
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(run.outcome(&report, "a1"), Some(HostOutcome::RolledBack));
    assert_eq!(started_hosts(&events), vec!["a1"]);
    for host in ["a2", "a3", "a4", "b1", "b2"] {
        assert!(run.read(host, "log").is_none(), "{host} never deployed");
    }
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

#[tokio::test]
async fn a_canary_five_times_the_baseline_fails_the_wave() {
    let (report, events, run) = run_to_end(&canary_playbook(&compare_check(10, "50%"), "1h")).await;
    let checks = verify_events(&events);
    assert_eq!(checks, vec![("errors".into(), "a1".into(), false)]);
    let detail = events.iter().find_map(|e| match e {
        Event::VerifyCheck(crate::events::VerifyCheck { detail, .. }) => Some(detail.clone()),
        _ => None,
    });
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.contains("canary median 50 vs baseline median 10")),
        "{detail:?}"
    );
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(started_hosts(&events), vec!["a1"]);
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

#[tokio::test]
async fn a_canary_within_tolerance_passes_and_the_next_wave_runs() {
    // 50 against 45.4545…: 1.1× the baseline, within 50%. 3 rounds in a 60ms soak.
    let playbook = canary_playbook(&compare_check(10, "50%"), "60ms")
        .replace("*) echo 10;;", "*) echo 45.4545;;");
    let (report, events, run) = run_to_end(&playbook).await;
    let checks = verify_events(&events);
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks.iter().all(|c| c.2 && c.1 == "a1"), "{checks:?}");
    assert_eq!(report.exit, Exit::Success);
    for host in ["a1", "a2", "b1", "b2"] {
        assert_eq!(run.read(host, "log").as_deref(), Some("deploy\n"), "{host}");
    }
}

#[tokio::test]
async fn checks_run_before_the_approve_question_and_a_failure_fails_the_wave_instead() {
    // No terminal: without checks the run would stop awaiting approval.
    let playbook = canary_playbook(
        "        - { name: healthy, run: \"! grep -q deploy log\" }\n",
        "1h",
    )
    .replace("      pause: 1h\n", "      approve: true\n");
    let (report, events, run) = run_to_end(&playbook).await;
    assert_eq!(
        verify_events(&events),
        vec![("healthy".into(), "a1".into(), false)]
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::GateWaiting { reason, .. } if *reason == crate::events::GateReason::Approve)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WaveFailed { wave, .. } if wave == "canary")));
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(started_hosts(&events), vec!["a1"]);
    assert_ne!(report.exit, Exit::AwaitingApproval);
}

#[tokio::test]
async fn a_checks_command_is_a_template_rendered_for_each_host() {
    // Unrendered, `{{ host.name }}` would never equal the host's folder name.
    let verify = "        - { name: mine, run: 'grep -qx \"{{ marker }}\" log && test \"$(basename \"$PWD\")\" = \"{{ host.name }}\"', hosts: \"a1,a2\", every: 20ms }\n";
    let playbook = canary_playbook(verify, "40ms")
        .replace("name: p\n", "name: p\nvars: { marker: deploy }\n")
        .replace("hosts: a1\n", "hosts: \"a1,a2\"\n");
    let (report, events, _run) = run_to_end(&playbook).await;
    let checks = verify_events(&events);
    assert!(checks.len() >= 4, "{checks:?}");
    assert!(checks.iter().all(|c| c.2), "{checks:?}");
    assert!(checks.iter().any(|c| c.1 == "a2"));
    assert_eq!(report.exit, Exit::Success);
}

#[tokio::test]
async fn a_checks_connections_count_against_the_connections_limit() {
    let playbook = canary_playbook(&meeting_check(), "20ms");
    let one = playbook.replace(
        "  max_failures: 0\n",
        "  max_failures: 0\n  connections: 1\n",
    );
    let (report, _events, run) = run_to_end(&one).await;
    assert_eq!(report.exit, Exit::Success);
    let met = std::fs::read_to_string(run.dir.path().join("hosts/met")).unwrap();
    assert_eq!(
        met.lines().collect::<Vec<_>>(),
        vec!["1", "1"],
        "one connection: canary, then baseline"
    );
    // With room for two, the canary and the baseline are checked side by side.
    let (report, _events, run) = run_to_end(&playbook).await;
    assert_eq!(report.exit, Exit::Success);
    let met = std::fs::read_to_string(run.dir.path().join("hosts/met")).unwrap();
    assert_eq!(met.lines().collect::<Vec<_>>(), vec!["2", "2"]);
}

#[tokio::test]
async fn passing_checks_before_the_approve_question_let_it_be_asked() {
    let playbook = canary_playbook(
        "        - { name: deployed, run: \"grep -q deploy log\" }\n",
        "1h",
    )
    .replace("      pause: 1h\n", "      approve: true\n");
    let (report, events, _run) = run_to_end(&playbook).await;
    assert_eq!(
        verify_events(&events),
        vec![("deployed".into(), "a1".into(), true)]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::GateWaiting { reason, .. } if *reason == crate::events::GateReason::Approve)));
    assert_eq!(report.exit, Exit::AwaitingApproval);
}

#[tokio::test]
async fn an_interrupt_during_a_long_pause_ends_the_run_without_waiting_it_out() {
    let text = "name: p\nstrategy:\n  waves:\n    - { name: first, regions: [r2], pause: 1h }\n    - { name: rest, regions: [\"*\"] }\nsteps:\n  - { name: one, run: 'echo one >> log' }\n";
    let mut run = start(text);
    let mut seen = Vec::new();
    run.until(
        &mut seen,
        |e| matches!(e, Event::GateWaiting { reason, .. } if *reason == crate::events::GateReason::Soak),
    )
    .await;
    run.interrupts.send(1).unwrap();
    // A run that waited the hour out would hang this test.
    let (report, _, run) = run.finish(seen).await;
    assert_eq!(report.exit, Exit::Interrupted);
    assert_eq!(run.read("b1", "log").as_deref(), Some("one\n"));
    assert!(!run.host_dir("a1").exists(), "the next wave never starts");
}
