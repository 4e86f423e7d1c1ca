use super::*;

#[test]
fn only_the_events_a_person_must_know_about_notify() {
    let waiting = |reason: &str| Event::GateWaiting {
        wave: "canary".into(),
        reason: reason.parse().unwrap(),
        seconds: 0,
        until: None,
        zone: None,
    };
    assert!(notifies(&waiting("approve")));
    assert!(!notifies(&waiting("soak")));
    let rollback = |scope: &str| Event::RollbackFinished {
        scope: scope.into(),
        ok: true,
    };
    assert!(notifies(&rollback("region eu")));
    assert!(notifies(&rollback("all")));
    assert!(!notifies(&rollback("host mx-1")));
    assert!(!notifies(&Event::Stopped {
        reason: "x".into(),
        region: None,
        rollback: false,
    }));
    let check = |ok| {
        Event::VerifyCheck(crate::events::VerifyCheck {
            wave: "canary".into(),
            check: "errors".into(),
            host: "mx-1".into(),
            ok,
            detail: String::new(),
        })
    };
    assert!(notifies(&check(false)));
    assert!(!notifies(&check(true)));
}

mod test_calls {
    use super::*;
    use std::path::{Path, PathBuf};

    /// An ordinary event notifiers are called for.
    pub(super) fn wave_failed() -> Event {
        Event::WaveFailed {
            wave: "w".into(),
            reason: "r".into(),
            node: 0,
        }
    }

    /// A reporter with the one notifier `command`, logging to `dir/notify.log`.
    pub(super) fn reporter(
        dir: &Path,
        command: String,
        timeout: Duration,
    ) -> (NotifyReporter, PathBuf) {
        let log = dir.join("notify.log");
        let notifier = Notifier { command, timeout };
        (
            NotifyReporter::new(vec![notifier], log.clone(), "run-1"),
            log,
        )
    }

    /// A notifier command that appends the event's name to `calls`, then runs `then`.
    pub(super) fn recording(calls: &Path, then: &str) -> String {
        format!(
            "sed -n 's/.*\"event\":\"\\([a-z_]*\\)\".*/\\1/p' >> {}; {then}",
            calls.display()
        )
    }
}

mod queue_tests {
    use super::test_calls::{reporter, wave_failed};
    use super::*;

    /// A notifier that cannot keep up loses events beyond its queue, and says so; it
    /// never holds up whoever hands them over.
    #[test]
    fn a_full_queue_drops_events_and_logs_each_drop() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            format!(
                "echo call >> {}; until [ -e {} ]; do sleep 0.01; done",
                calls.display(),
                release.display()
            ),
            Duration::from_secs(60),
        );
        let failed = wave_failed();
        for _ in 0..QUEUE + 10 {
            reporter.event(&failed);
        }
        std::fs::write(&release, "").unwrap();
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        let dropped = text.matches("wave_failed dropped").count();
        // The first call may have been taken off the queue before it filled, or not.
        assert!((9..=10).contains(&dropped), "{text}");
        let called = std::fs::read_to_string(&calls).unwrap().lines().count();
        assert_eq!(called + dropped, QUEUE + 10, "{text}");
        assert_eq!(text.matches("wave_failed ok").count(), called, "{text}");
    }
}

mod burst_tests {
    use super::test_calls::{recording, reporter, wave_failed};
    use super::*;
    use crate::events::RunOutcome;

    fn summary() -> Event {
        Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::FailedRolledBack,
            exit_code: 1,
            hosts: 500,
            ok: 0,
            failed: 500,
            rolled_back: 0,
            cancelled: 0,
            rollback_failed: 0,
            incomplete: Vec::new(),
            stopped_wave: None,
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 1,
            regions: Vec::new(),
            run_dir: "/state/runs/RUN".into(),
            interrupts_taken: 0,
        }
    }

    /// A Ctrl-C or SIGTERM after the run's end and before the wait for notifiers began
    /// (the reporters' thread still busy with the last events) ends that wait too: the
    /// count the `summary` took in is the mark, not the count when the wait starts.
    #[test]
    fn an_interrupt_between_the_runs_end_and_the_wait_ends_the_wait() {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let (mut reporter, log) =
            reporter(dir.path(), "sleep 600".into(), Duration::from_secs(300));
        reporter.interrupts = &COUNT;
        reporter.event(&summary());
        COUNT.store(1, Ordering::SeqCst);
        let started = Instant::now();
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("interrupted"), "{text}");
        // Bounded by GRACE + 300 s without the interrupt; a kill and its poll with it.
        assert!(started.elapsed() < Duration::from_secs(60), "{text}");
    }

    /// An interrupt the run itself took (its outcome says interrupted) leaves the
    /// summary its call.
    #[test]
    fn an_interrupt_the_run_took_leaves_the_summary_its_call() {
        static COUNT: AtomicU32 = AtomicU32::new(1);
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            recording(&calls, "true"),
            Duration::from_secs(60),
        );
        reporter.interrupts = &COUNT;
        let mut taken = summary();
        if let Event::Summary {
            interrupts_taken, ..
        } = &mut taken
        {
            *interrupts_taken = 1;
        }
        reporter.event(&taken);
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("summary ok"), "{text}");
        assert!(!text.contains("interrupted"), "{text}");
    }

    /// 500 events at once for a notifier that takes a fifth of a second a call: ordinary
    /// events are shed, the run's `summary` is delivered, and the wait at the end is
    /// bounded by one call's timeout (plus the grace), not by the backlog.
    #[test]
    fn the_summary_is_delivered_after_a_burst_of_500_events() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            recording(&calls, "sleep 0.2"),
            Duration::from_secs(5),
        );
        let failed = wave_failed();
        for _ in 0..500 {
            reporter.event(&failed);
        }
        reporter.event(&summary());
        reporter.finish();
        let called = std::fs::read_to_string(&calls).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(called.lines().any(|l| l == "summary"), "{called}\n{text}");
        assert!(text.contains("summary ok"), "{text}");
        assert!(!text.contains("summary dropped"), "{text}");
        assert!(text.contains("wave_failed dropped"), "{text}");
    }

    /// A full queue when the `summary` arrives: the oldest ordinary event makes room.
    #[test]
    fn a_full_queue_sheds_an_ordinary_event_for_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            recording(
                &calls,
                &format!("until [ -e {} ]; do sleep 0.01; done", release.display()),
            ),
            Duration::from_secs(60),
        );
        let failed = wave_failed();
        // The first call is under way (and held) before the queue fills, so the queue
        // holds exactly QUEUE ordinary events when the summary comes.
        reporter.event(&failed);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the first call never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..QUEUE {
            reporter.event(&failed);
        }
        reporter.event(&summary());
        std::fs::write(&release, "").unwrap();
        reporter.finish();
        let called = std::fs::read_to_string(&calls).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(called.lines().any(|l| l == "summary"), "{called}");
        assert!(text.contains("and summary goes first"), "{text}");
    }

    /// Each call's output is kept under its own line, bounded per call.
    #[test]
    fn a_calls_output_is_kept_apart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reporter, log) = reporter(
            dir.path(),
            "echo first; head -c 200000 /dev/zero | tr '\\0' x; echo; echo last >&2".into(),
            Duration::from_secs(30),
        );
        reporter.event(&wave_failed());
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() < CALL_OUTPUT + 4096, "{}", text.len());
        assert!(
            text.starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            &text[..80]
        );
        assert!(
            text.contains("wave_failed ok\n  | first\n"),
            "{}",
            &text[..200]
        );
        assert!(
            text.contains("output truncated"),
            "{}",
            &text[text.len() - 300..]
        );
    }
}
