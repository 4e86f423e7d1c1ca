use super::*;

fn task() -> TaskRef {
    TaskRef {
        id: 0,
        step: "switch".into(),
        host: "mx-1".into(),
        region: "gz".into(),
        cluster: "a".into(),
        wave: "all".into(),
        label: "switch@mx-1".into(),
    }
}

fn record(secret: &str) -> TaskRecord {
    TaskRecord {
        captures: vec![("token".into(), format!("capture {secret}"))],
        output_tail: format!("output {secret}"),
        changed: true,
        reported_changed: None,
        error: Some(format!("error {secret}")),
        log: format!("log {secret}"),
    }
}

/// Every free text of an event, and what the journal keeps of its task, loses the
/// secret; names from the plan stay.
#[test]
fn redaction_reaches_every_text_a_secret_could_be_in() {
    let secret = "s3cret-value";
    let mut redactor = Redactor::default();
    redactor.add(secret.into());
    let texts = |event: Event| -> Vec<String> {
        match event.redacted(&redactor) {
            Event::TaskFailed {
                error,
                stderr_tail,
                record,
                ..
            } => [error, stderr_tail]
                .into_iter()
                .chain([record.output_tail, record.log])
                .chain(record.error)
                .chain(record.captures.into_iter().map(|(_, v)| v))
                .collect(),
            Event::TaskSkipped {
                reason,
                record: Some(record),
                ..
            } => [reason, record.output_tail, record.log].into(),
            Event::RollbackTask { error, log, .. } => error.into_iter().chain([log]).collect(),
            Event::VerifyCheck(crate::events::VerifyCheck { detail, .. }) => vec![detail],
            Event::Stopped { reason, .. } => vec![reason],
            other => panic!("{other:?}"),
        }
    };
    let events = [
        Event::TaskFailed {
            task: task(),
            exit_code: Some(1),
            error: format!("failed {secret}"),
            stderr_tail: format!("stderr {secret}"),
            duration_ms: 1,
            attempts: 1,
            record: record(secret),
        },
        Event::TaskSkipped {
            task: task(),
            reason: format!("guard {secret}"),
            record: Some(record(secret)),
        },
        Event::RollbackTask {
            task: task(),
            ok: false,
            exit_code: Some(1),
            error: Some(format!("failed {secret}")),
            duration_ms: 1,
            log: format!("log {secret}"),
        },
        Event::VerifyCheck(crate::events::VerifyCheck {
            wave: "all".into(),
            check: "smtp".into(),
            host: "mx-1".into(),
            ok: false,
            detail: format!("said {secret}"),
        }),
        Event::Stopped {
            reason: format!("halt {secret}"),
            region: None,
            rollback: false,
        },
    ];
    for event in events {
        for text in texts(event) {
            assert!(text.ends_with(" ***") && !text.contains(secret), "{text}");
        }
    }
}

/// A gate reason is written as the text it always was, and read back from it;
/// journals of older runs say `pause` for a soak.
#[test]
fn gate_reasons_keep_their_text() {
    for (reason, text) in [
        (GateReason::Soak, "soak"),
        (GateReason::Verify, "verify"),
        (GateReason::Approve, "approve"),
        (
            GateReason::Window("02:00-06:00 Asia/Shanghai".into()),
            "window 02:00-06:00 Asia/Shanghai",
        ),
    ] {
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<GateReason>(&json).unwrap(), reason);
    }
    assert_eq!(
        serde_json::from_str::<GateReason>("\"pause\"").unwrap(),
        GateReason::Soak
    );
    assert!(serde_json::from_str::<GateReason>("\"nap\"").is_err());
}

/// The facts the journal shares are one struct each now, the event's payload: their
/// `--output json` lines are what they were, the fields at the top level in order.
#[test]
fn shared_facts_keep_their_json_lines() {
    let line = |event: Event| {
        serde_json::to_string(&Envelope {
            schema: SCHEMA_VERSION,
            time: "t".into(),
            controller: None,
            event: &event,
        })
        .unwrap()
    };
    let head = r#"{"schema":1,"time":"t","event":"#;
    let cases = [
        (
            Event::VerifyCheck(VerifyCheck {
                wave: "w".into(),
                check: "c".into(),
                host: "h".into(),
                ok: true,
                detail: "d".into(),
            }),
            r#""verify_check","wave":"w","check":"c","host":"h","ok":true,"detail":"d"}"#,
        ),
        (
            Event::WaveSkipped(WaveSkipped {
                wave: "w".into(),
                user: "ann".into(),
            }),
            r#""wave_skipped","wave":"w","user":"ann"}"#,
        ),
        (
            Event::HealthChecked(HealthChecked {
                host: "h".into(),
                region: "r".into(),
                cluster: "c".into(),
                after: HealthAfter::Rollback,
                checked: true,
                ok: false,
                error: Some("e".into()),
                duration_ms: 3,
            }),
            r#""health_checked","host":"h","region":"r","cluster":"c","after":"rollback","checked":true,"ok":false,"error":"e","duration_ms":3}"#,
        ),
        (
            Event::Control(Control {
                command: "pause".into(),
                user: "ann".into(),
                host: "h".into(),
                pid: 7,
                accepted: true,
                message: "m".into(),
            }),
            r#""control","command":"pause","user":"ann","host":"h","pid":7,"accepted":true,"message":"m"}"#,
        ),
        (
            Event::ControllerLost(ControllerLost {
                lost_controller: "b".into(),
                machine: "m".into(),
                pid: 9,
                regions: vec!["r2".into()],
                policy: "wait".into(),
                resume: "pony resume".into(),
            }),
            r#""controller_lost","lost_controller":"b","machine":"m","pid":9,"regions":["r2"],"policy":"wait","resume":"pony resume"}"#,
        ),
    ];
    for (event, rest) in cases {
        assert_eq!(line(event), format!("{head}{rest}"));
    }
}
