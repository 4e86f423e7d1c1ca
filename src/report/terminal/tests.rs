use super::*;

fn counts(ok: usize, failed: usize, rolled_back: usize, running: usize) -> Counts {
    Counts {
        ok,
        failed,
        rolled_back,
        rollback_failed: 0,
        running,
    }
}

const PLAIN: Palette = Palette { color: false };

/// After a failed canary, a region whose hosts never started is `not run`, not done:
/// its bar stays empty (0/4).
#[test]
fn hosts_never_started_are_not_run_never_done() {
    let none = counts(0, 0, 0, 0);
    assert_eq!(region_words(4, 0, 4, "", &none, &PLAIN), "not run");
    // Some ran, the rest never started.
    assert_eq!(
        region_words(4, 1, 3, "canary", &counts(0, 1, 1, 0), &PLAIN),
        "ended · 1 failed · 1 rolled back · 3 not run"
    );
    // Every host ran and is ok: done.
    assert_eq!(
        region_words(4, 4, 0, "world", &counts(4, 0, 0, 0), &PLAIN),
        "done"
    );
    // All ended, some rolled back: ended, not done.
    assert_eq!(
        region_words(4, 4, 0, "world", &counts(0, 1, 4, 0), &PLAIN),
        "ended · 1 failed · 4 rolled back"
    );
    // In progress.
    assert_eq!(
        region_words(4, 1, 0, "world", &counts(1, 0, 0, 2), &PLAIN),
        "wave world · 2 running"
    );
    // The overall bar says how many never ran.
    assert_eq!(
        overall_words(&counts(7, 1, 1, 0), 4, None, &Activity::Going, None, &PLAIN),
        "· 1 failed · 1 rolled back · 4 not run"
    );
}

#[test]
fn waits_are_named_and_hide_the_eta() {
    let soak = Waiting::Soak {
        wave: "canary".into(),
        until: "14:05:10".into(),
    };
    assert_eq!(
        overall_words(
            &counts(1, 0, 0, 0),
            0,
            Some((&soak, Some(Duration::from_millis(12_400)))),
            &Activity::Going,
            eta(Duration::from_secs(10), 1, 11, true),
            &PLAIN
        ),
        "· canary soaking until 14:05:10 (12s left)"
    );
    let approval = Waiting::Approval {
        wave: "canary".into(),
    };
    assert_eq!(
        overall_words(
            &counts(1, 0, 0, 0),
            0,
            Some((&approval, None)),
            &Activity::Going,
            None,
            &PLAIN
        ),
        "· waiting for approval of canary"
    );
    assert_eq!(
        overall_words(
            &counts(1, 0, 0, 3),
            0,
            None,
            &Activity::Paused {
                by: "ann@ctl".into()
            },
            None,
            &PLAIN
        ),
        "· 3 running · paused by ann@ctl: no new host starts"
    );
    let window = Waiting::Window {
        wave: "world".into(),
        zone: "Asia/Shanghai".into(),
        opens: Some("02:00:00".into()),
    };
    assert_eq!(
        overall_words(
            &counts(1, 0, 0, 0),
            0,
            Some((&window, Some(Duration::from_secs(3600)))),
            &Activity::Going,
            None,
            &PLAIN
        ),
        "· world waiting for the change window (Asia/Shanghai, opens at 02:00:00) (1h left)"
    );
    let checks = Waiting::Checks {
        wave: "canary".into(),
    };
    assert_eq!(
        overall_words(
            &counts(1, 0, 0, 0),
            0,
            Some((&checks, None)),
            &Activity::Going,
            None,
            &PLAIN
        ),
        "· checks of canary running before its approval question"
    );
    for (reason, rollback, words) in [
        (
            "aborted by ann@ctl",
            false,
            "· 1 running · stopping: abort in progress, no new host starts",
        ),
        (
            "failure budget exceeded: halted",
            false,
            "· 1 running · stopping: no new host starts",
        ),
        ("x", true, "· 1 running · stopping: rollback in progress"),
    ] {
        assert_eq!(
            overall_words(
                &counts(0, 0, 0, 1),
                0,
                None,
                &Activity::Stopping {
                    words: super::super::stopping_words(reason, rollback)
                },
                None,
                &PLAIN
            ),
            words
        );
    }
}

#[test]
fn the_eta_counts_working_time_and_only_once_a_host_ended() {
    // Nothing ended yet: no ETA (not `00:00:00`).
    assert_eq!(eta(Duration::from_secs(30), 0, 12, false), None);
    // 2 of 12 ended in 20s of work: 10 more take 100s.
    assert_eq!(
        eta(Duration::from_secs(20), 2, 10, false),
        Some(Duration::from_secs(100))
    );
    // While waiting, and with nothing left: none.
    assert_eq!(eta(Duration::from_secs(20), 2, 10, true), None);
    assert_eq!(eta(Duration::from_secs(20), 12, 0, false), None);
    assert_eq!(
        overall_words(
            &counts(2, 0, 0, 1),
            0,
            None,
            &Activity::Going,
            Some(Duration::from_secs(100)),
            &PLAIN
        ),
        "· 1 running · ETA 00:01:40"
    );
}

/// An abort while h1 and h3 run: the bar says the run is stopping; h1 and h3 finish,
/// h2 and h4 never start and are `not run`, never drawn as done.
#[test]
fn after_an_abort_hosts_never_started_are_not_done() {
    let mut reporter = TerminalReporter::new(PLAIN);
    crate::term::attach_progress(None);
    reporter.multi.set_draw_target(ProgressDrawTarget::hidden());
    reporter.event(&Event::RunStarted {
        run_id: "RUN".into(),
        playbook: "pb".into(),
        inventory: "inv".into(),
        hosts: 4,
        tasks: 4,
        waves: vec!["all".into()],
        regions: vec![("r1".into(), 2), ("r2".into(), 2)],
    });
    let task = |id: usize, host: &str, region: &str| crate::events::TaskRef {
        id,
        step: "work".into(),
        host: host.into(),
        region: region.into(),
        cluster: "c".into(),
        wave: "all".into(),
        label: format!("work@{host}"),
    };
    let host = |name: &str, region: &str, outcome| Event::HostFinished {
        host: name.into(),
        region: region.into(),
        cluster: "c".into(),
        outcome,
    };
    for (id, name, region) in [(1, "h1", "r1"), (3, "h3", "r2")] {
        reporter.event(&Event::TaskStarted {
            task: task(id, name, region),
        });
    }
    reporter.event(&Event::Stopped {
        reason: "aborted by ann@ctl".into(),
        region: None,
        rollback: false,
    });
    assert!(
        reporter
            .overall_message()
            .contains("stopping: abort in progress, no new host starts"),
        "{}",
        reporter.overall_message()
    );
    for (id, name, region) in [(1, "h1", "r1"), (3, "h3", "r2")] {
        reporter.event(&Event::TaskFinished {
            task: task(id, name, region),
            changed: true,
            exit_code: Some(0),
            duration_ms: 1,
            attempts: 1,
            record: Default::default(),
        });
        reporter.event(&host(name, region, HostOutcome::Ok));
    }
    for (name, region) in [("h2", "r1"), ("h4", "r2")] {
        reporter.event(&host(name, region, HostOutcome::Cancelled));
    }
    assert_eq!(reporter.overall_done, 2);
    assert_eq!(reporter.overall_not_run, 2);
    for region in &reporter.regions {
        assert_eq!((region.done, region.not_run), (1, 1));
        assert_eq!(reporter.region_message(region), "ended · 1 not run");
    }
    reporter.finish();
}
