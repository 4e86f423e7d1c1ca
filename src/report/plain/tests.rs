use super::*;
use crate::events::{RegionSummary, RunOutcome, TaskRef};
use std::sync::{Arc, Mutex};

/// A writer whose bytes the test can read afterwards.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn task(host: &str) -> TaskRef {
    TaskRef {
        id: 1,
        step: "switch".into(),
        host: host.into(),
        region: "r1".into(),
        cluster: "c1".into(),
        wave: "all".into(),
        label: format!("switch@{host}"),
    }
}

fn host(name: &str, outcome: HostOutcome) -> Event {
    Event::HostFinished {
        host: name.into(),
        region: "r1".into(),
        cluster: "c1".into(),
        outcome,
    }
}

/// A run of `hosts` hosts in region r1, one task each.
fn run_started(hosts: usize) -> Event {
    Event::RunStarted {
        run_id: "RUN".into(),
        playbook: "pb".into(),
        inventory: "inv".into(),
        hosts,
        tasks: hosts,
        waves: vec!["all".into()],
        regions: vec![("r1".into(), hosts)],
    }
}

fn run(quiet: bool, palette: Palette) -> String {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(Box::new(out.clone()), quiet, palette, PROGRESS_EVERY);
    let events = [
        run_started(2),
        Event::TaskStarted { task: task("a") },
        Event::TaskFailed {
            task: task("a"),
            exit_code: Some(3),
            error: "exited with 3".into(),
            stderr_tail: "bad config".into(),
            duration_ms: 5,
            attempts: 1,
            record: Default::default(),
        },
        host("b", HostOutcome::Ok),
        host("a", HostOutcome::RolledBack),
        Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::FailedRolledBack,
            exit_code: 1,
            hosts: 2,
            ok: 1,
            failed: 0,
            rolled_back: 1,
            cancelled: 0,
            rollback_failed: 0,
            incomplete: Vec::new(),
            stopped_wave: None,
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 10,
            regions: vec![RegionSummary {
                region: "r1".into(),
                hosts: 2,
                ok: 1,
                failed: 0,
                rolled_back: 1,
                cancelled: 0,
                duration_ms: 10,
            }],
            run_dir: "/s/runs/RUN".into(),
            interrupts_taken: 0,
        },
    ];
    for event in &events {
        reporter.event(event);
    }
    reporter.finish();
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn one_line_per_host_failures_with_their_tail_and_the_summary() {
    let text = run(false, Palette::new(false));
    assert!(text.contains("FAILED a [r1] step switch: exit 3, exited with 3"));
    assert!(text.contains("    | bad config"));
    assert!(text.contains("ok              b (r1/c1)"), "{text}");
    assert!(text.contains("rolled back     a (r1/c1)"), "{text}");
    assert!(text.contains("FAILED HOSTS"), "{text}");
    assert!(text.contains("run RUN failed; rollback complete"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour unless asked: {text}");
}

#[test]
fn quiet_keeps_failures_and_the_summary_only() {
    let text = run(true, Palette::new(false));
    assert!(!text.contains("ok              b"), "{text}");
    assert!(text.contains("rolled back     a"), "{text}");
    assert!(text.contains("REGION"), "{text}");
}

/// In CI the gate's wait names the real run in the `pony approve` to type, after a
/// line on how the soak went.
#[test]
fn the_ci_gate_line_names_the_run_after_the_soak() {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(
        Box::new(out.clone()),
        false,
        Palette::new(false),
        PROGRESS_EVERY,
    );
    let mut started = run_started(1);
    if let Event::RunStarted { run_id, .. } = &mut started {
        *run_id = "20260310-200000-abcd".into();
    }
    for event in [
        started,
        Event::GateWaiting {
            wave: "all".into(),
            reason: crate::events::GateReason::Soak,
            seconds: 20,
            until: None,
            zone: None,
        },
        Event::GateWaiting {
            wave: "all".into(),
            reason: crate::events::GateReason::Approve,
            seconds: 600,
            until: None,
            zone: None,
        },
    ] {
        reporter.event(&event);
    }
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let soak = text.find("== soak after wave all: 20s, no checks\n");
    let wait = text.find(
        "== gate after wave all: waiting up to 10m for `pony approve 20260310-200000-abcd all`",
    );
    assert!(soak.is_some() && wait.is_some() && soak < wait, "{text}");
    assert!(!text.contains("pony approve RUN"), "{text}");
}

/// After a failed canary the hosts that never started are counted as not run, not
/// done; the time left leaves the gate's wait out.
#[tokio::test(start_paused = true)]
async fn progress_counts_never_started_hosts_as_not_run_and_leaves_waits_out() {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(
        Box::new(out.clone()),
        false,
        Palette::new(false),
        Duration::ZERO,
    );
    reporter.event(&run_started(4));
    tokio::time::advance(Duration::from_secs(10)).await;
    reporter.event(&host("a", HostOutcome::Ok));
    reporter.event(&Event::GateWaiting {
        wave: "all".into(),
        reason: crate::events::GateReason::Soak,
        seconds: 3600,
        until: None,
        zone: None,
    });
    tokio::time::advance(Duration::from_secs(3600)).await;
    reporter.event(&Event::TaskStarted { task: task("b") });
    reporter.event(&host("c", HostOutcome::Cancelled));
    let lines = progress_lines(&out);
    assert_eq!(
        lines.last().unwrap(),
        "progress: 1/4 hosts done, 1 not run, 0 failed, 1 tasks running, 1h 00m elapsed, about 20.0s left",
        "{lines:?}"
    );
}

/// After an abort the progress line says the run is stopping until it ends, and a
/// rollback of every touched host stays said; hosts never started are not run.
#[tokio::test(start_paused = true)]
async fn progress_says_the_run_is_stopping_after_an_abort() {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(
        Box::new(out.clone()),
        false,
        Palette::new(false),
        Duration::ZERO,
    );
    reporter.event(&run_started(3));
    reporter.event(&Event::TaskStarted { task: task("a") });
    reporter.event(&Event::Stopped {
        reason: "aborted by ann@ctl: no new host starts".into(),
        region: None,
        rollback: false,
    });
    reporter.event(&host("b", HostOutcome::Cancelled));
    assert!(
        progress_lines(&out)
            .last()
            .unwrap()
            .ends_with("; stopping: abort in progress, no new host starts"),
        "{:?}",
        progress_lines(&out)
    );
    reporter.event(&Event::Stopped {
        reason: "aborted by ann@ctl: rolling back every host the run touched".into(),
        region: None,
        rollback: true,
    });
    reporter.event(&host("c", HostOutcome::Cancelled));
    let lines = progress_lines(&out);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("progress: 0/3 hosts done, 2 not run")
            && lines
                .last()
                .unwrap()
                .ends_with("; stopping: rollback in progress"),
        "{lines:?}"
    );
}

/// A host whose release folder cannot be written fails each render (six tasks) and
/// is rolled back with its region: the line counts it once as failed, and the
/// region's hosts as rolled back (the mail trial read "6 failed" for one host).
#[tokio::test(start_paused = true)]
async fn progress_counts_failed_hosts_not_failed_tasks() {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(
        Box::new(out.clone()),
        false,
        Palette::new(false),
        Duration::ZERO,
    );
    reporter.event(&run_started(4));
    for step in ["render-main-cf", "render-master-cf", "render-users"] {
        let mut failing = task("a");
        failing.step = step.into();
        reporter.event(&Event::TaskStarted {
            task: failing.clone(),
        });
        reporter.event(&Event::TaskFailed {
            task: failing,
            exit_code: None,
            error: "sftp write: No such file".into(),
            stderr_tail: String::new(),
            duration_ms: 5,
            attempts: 1,
            record: Default::default(),
        });
    }
    reporter.event(&host("a", HostOutcome::RolledBack));
    reporter.event(&host("b", HostOutcome::RolledBack));
    reporter.event(&host("c", HostOutcome::Ok));
    reporter.event(&Event::TaskStarted { task: task("d") });
    let lines = progress_lines(&out);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("progress: 3/4 hosts done, 1 failed, 2 rolled back, 1 tasks running"),
        "{lines:?}"
    );
}

#[test]
fn quiet_prints_what_needs_a_person_and_not_the_routine() {
    let gate = |reason: &str| Event::GateWaiting {
        wave: "canary".into(),
        reason: reason.parse().unwrap(),
        seconds: 60,
        until: None,
        zone: None,
    };
    let check = |ok: bool| {
        Event::VerifyCheck(crate::events::VerifyCheck {
            wave: "canary".into(),
            check: "smtp".into(),
            host: "a".into(),
            ok,
            detail: if ok { "fine" } else { "refused" }.into(),
        })
    };
    let events = [
        run_started(2),
        Event::WaveStarted {
            wave: "canary".into(),
            hosts: 1,
        },
        gate("soak"),
        gate("window 02:00-04:00"),
        check(true),
        Event::GatePassed {
            wave: "canary".into(),
            node: 0,
        },
        check(false),
        gate("approve"),
        Event::Stopped {
            reason: "aborted".into(),
            region: None,
            rollback: false,
        },
    ];
    let printed = |quiet: bool| {
        let out = Shared::default();
        let mut reporter = PlainReporter::new(
            Box::new(out.clone()),
            quiet,
            Palette::new(false),
            Duration::ZERO,
        );
        for event in &events {
            reporter.event(event);
        }
        reporter.event(&Event::TaskStarted { task: task("a") });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    };
    let quiet = printed(true);
    for routine in [
        "run RUN",
        "== wave canary (",
        "soaking",
        "change window",
        "check smtp on a: ok",
        "passed",
        "progress:",
    ] {
        assert!(!quiet.contains(routine), "-q printed {routine:?}:\n{quiet}");
    }
    for needed in [
        "check smtp on a FAILED",
        "waiting up to 1m for `pony approve RUN canary`",
        "== aborted",
    ] {
        assert!(quiet.contains(needed), "-q left out {needed:?}:\n{quiet}");
    }
    let loud = printed(false);
    for line in ["run RUN", "soaking", "change window", "passed", "progress:"] {
        assert!(
            loud.contains(line),
            "without -q, {line:?} is printed:\n{loud}"
        );
    }
}

#[test]
fn colour_when_asked() {
    assert!(run(false, Palette::new(true)).contains("\u{1b}["));
}

fn progress_lines(out: &Shared) -> Vec<String> {
    String::from_utf8(out.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_progress_line_at_most_every_10_seconds_of_the_clock() {
    let out = Shared::default();
    let mut reporter = PlainReporter::new(
        Box::new(out.clone()),
        false,
        Palette::new(false),
        PROGRESS_EVERY,
    );
    reporter.event(&run_started(4));
    let advance = |secs| tokio::time::advance(Duration::from_secs(secs));
    let finish = |reporter: &mut PlainReporter, name: &str| {
        reporter.event(&Event::TaskFinished {
            task: task(name),
            changed: true,
            exit_code: Some(0),
            duration_ms: 5,
            attempts: 1,
            record: Default::default(),
        });
        reporter.event(&host(name, HostOutcome::Ok));
    };
    // Under 10 s: events come, no progress line.
    advance(9).await;
    reporter.event(&Event::TaskStarted { task: task("a") });
    finish(&mut reporter, "a");
    assert!(progress_lines(&out).is_empty());
    // At 10 s the next event brings one, with what is done so far.
    advance(1).await;
    reporter.event(&Event::TaskStarted { task: task("b") });
    assert_eq!(
        progress_lines(&out),
        ["progress: 1/4 hosts done, 0 failed, 1 tasks running, 10.0s elapsed, about 30.0s left"]
    );
    // Many events within the next 10 s: still one.
    advance(9).await;
    finish(&mut reporter, "b");
    reporter.event(&Event::TaskStarted { task: task("c") });
    assert_eq!(progress_lines(&out).len(), 1);
    // 10 s after the last line, the next event brings the next one (c's task has
    // ended; its host's outcome comes next).
    advance(1).await;
    finish(&mut reporter, "c");
    let lines = progress_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with("progress: 2/4 hosts done, 0 failed, 0 tasks running, 20.0s"),
        "{lines:?}"
    );
}
