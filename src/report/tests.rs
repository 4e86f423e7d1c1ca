use super::*;

#[test]
fn durations_read_well() {
    assert_eq!(crate::duration::short(Duration::from_millis(850)), "850ms");
    assert_eq!(crate::duration::short(Duration::from_millis(4200)), "4.2s");
    assert_eq!(crate::duration::short(Duration::from_secs(185)), "3m 05s");
    assert_eq!(crate::duration::short(Duration::from_secs(3720)), "1h 02m");
}

fn gate(wave: &str, reason: &str, seconds: u64) -> Event {
    Event::GateWaiting {
        wave: wave.into(),
        reason: reason.parse().unwrap(),
        seconds,
        until: None,
        zone: None,
    }
}

fn check(wave: &str, ok: bool) -> Event {
    Event::VerifyCheck(crate::events::VerifyCheck {
        wave: wave.into(),
        check: "healthy".into(),
        host: "a1".into(),
        ok,
        detail: String::new(),
    })
}

fn run_started(id: &str) -> Event {
    Event::RunStarted {
        run_id: id.into(),
        playbook: "pb".into(),
        inventory: "inv".into(),
        hosts: 1,
        tasks: 1,
        waves: vec!["canary".into()],
        regions: vec![("r1".into(), 1)],
    }
}

/// Before the approval question: what the soak showed; the wait for `pony approve`
/// names the real run, not `RUN`.
#[test]
fn the_approval_lines_say_how_the_soak_went_and_name_the_run() {
    let mut notes = GateNotes::default();
    for event in [
        run_started("20260310-200000-abcd"),
        gate("canary", "soak", 20),
        check("canary", true),
        check("canary", true),
        check("other", true),
    ] {
        notes.observe(&event);
    }
    assert_eq!(
        notes.lines(&gate("canary", "approve", 600)).unwrap(),
        vec![
            "== soak after wave canary: 20s, 2 checks ok".to_string(),
            "== gate after wave canary: waiting up to 10m for `pony approve 20260310-200000-abcd canary`".to_string(),
        ]
    );
    // A gate without a soak or checks: only the wait.
    assert_eq!(
        notes.lines(&gate("world", "approve", 0)).unwrap(),
        vec!["== gate after wave world: waiting for approval".to_string()]
    );
    // Checks without a pause (run once before the question).
    assert_eq!(
        notes.lines(&gate("other", "approve", 0)).unwrap()[0],
        "== checks after wave other: 1 check ok"
    );
    assert_eq!(notes.lines(&gate("canary", "soak", 20)), None);
}

#[test]
fn palette_without_colour_is_plain() {
    let p = Palette::new(false);
    assert_eq!(p.red("x"), "x");
    assert!(Palette::new(true).red("x").contains("\u{1b}["));
}
