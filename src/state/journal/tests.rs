//! The journal's promises: what is written reads back, a torn last line is cut or
//! skipped, a record glued behind a fragment is recovered, outcomes keep their spelling.

use super::writer::cut_torn_tail;
use super::*;
use std::io::Write;

fn started(node: usize) -> Record {
    Record::TaskStarted {
        node,
        label: format!("a@h{node}"),
        time: "t".into(),
    }
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[tokio::test]
async fn writes_and_reads_back_tolerating_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let journal = Journal::create(&path).unwrap();
    journal.write(&started(3)).await;
    journal.append(&Record::GatePassed {
        node: 1,
        wave: "w".into(),
    });
    journal.close().await;
    append_raw(&path, b"{\"type\":\"task_fin");
    let records = read(&path).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0], started(3));
}

#[tokio::test]
async fn reopening_cuts_a_torn_last_line_so_every_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let journal = Journal::create(&path).unwrap();
    journal.write(&started(1)).await;
    journal.close().await;
    append_raw(&path, b"{\"type\":\"task_finished\",\"node\":1,\"lab");

    let journal = Journal::create(&path).unwrap();
    journal.write(&started(2)).await;
    journal.close().await;
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        serde_json::from_str::<Record>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert_eq!(read(&path).unwrap(), vec![started(1), started(2)]);

    // A journal that is one torn fragment, and one that ends well, are left whole
    // but for the fragment.
    std::fs::write(&path, b"{\"type\":\"ta").unwrap();
    let journal = Journal::create(&path).unwrap();
    journal.close().await;
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    let whole = format!("{}\n", serde_json::to_string(&started(4)).unwrap());
    std::fs::write(&path, &whole).unwrap();
    let journal = Journal::create(&path).unwrap();
    journal.close().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
}

#[test]
fn cutting_finds_the_last_newline_more_than_a_block_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let head = "{}\n".repeat(10);
    let torn = "x".repeat(200 * 1024);
    std::fs::write(&path, format!("{head}{torn}")).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    assert_eq!(cut_torn_tail(&mut file).unwrap(), torn.len() as u64);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), head);
}

#[test]
fn the_run_outcome_is_written_and_read_in_its_serde_spelling() {
    let record = Record::run_finished(RunOutcome::FailedRolledBack, 1, "t".into());
    let line = serde_json::to_string(&record).unwrap();
    assert_eq!(
        line,
        r#"{"type":"run_finished","outcome":"failed_rolled_back","exit_code":1,"time":"t"}"#
    );
    let back: Record = serde_json::from_str(&line).unwrap();
    assert_eq!(back.outcome(), Some(RunOutcome::FailedRolledBack));

    // Journals written before spelt it as the Rust variant.
    let old = r#"{"type":"run_finished","outcome":"NeedsAttention","exit_code":3,"time":"t"}"#;
    let back: Record = serde_json::from_str(old).unwrap();
    assert_eq!(back.outcome(), Some(RunOutcome::NeedsAttention));

    let unknown = r#"{"type":"run_finished","outcome":"Exploded","exit_code":3,"time":"t"}"#;
    assert!(serde_json::from_str::<Record>(unknown).is_err());
}

#[test]
fn a_record_glued_behind_a_torn_fragment_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let glued = format!(
        "{}\n{{\"type\":\"task_finished\",\"node\":3,\"lab{}\n{}\n",
        serde_json::to_string(&started(1)).unwrap(),
        serde_json::to_string(&started(2)).unwrap(),
        serde_json::to_string(&started(3)).unwrap(),
    );
    std::fs::write(&path, glued).unwrap();
    assert_eq!(
        read(&path).unwrap(),
        vec![started(1), started(2), started(3)]
    );

    std::fs::write(&path, "{\"type\":\"nonsense\"}\n{}\n").unwrap();
    match read(&path) {
        Err(JournalError::BadLine { line: 1, .. }) => {}
        other => panic!("expected line 1 to be bad, got {other:?}"),
    }
    assert_eq!(read_lenient(&path).unwrap().bad_lines.len(), 1);
}

#[tokio::test]
async fn a_record_the_disk_refused_is_never_acknowledged_nor_any_after_it() {
    // /dev/full refuses every write with ENOSPC, as a full disk does.
    let journal = Journal::create(Path::new("/dev/full")).unwrap();
    for node in [1, 2] {
        let (ack, durable) = tokio::sync::oneshot::channel();
        journal.append_then(&started(node), Some(ack));
        assert!(
            durable.await.is_err(),
            "record {node} was acknowledged as durable"
        );
    }
    journal.close().await;
}

/// Gate reasons and run kinds are enums now, written as the text they always were:
/// lines of older journals (a soak spelt `pause`) read, and read back the same.
#[test]
fn gate_reasons_and_run_kinds_keep_their_journal_text() {
    let lines = [
        r#"{"type":"gate_waiting","wave":"canary","reason":"approve","time":"t"}"#,
        r#"{"type":"gate_waiting","wave":"canary","reason":"soak","time":"t","until":"u"}"#,
        r#"{"type":"gate_waiting","wave":"canary","reason":"verify","time":"t"}"#,
        r#"{"type":"run_resumed","command":"resume","time":"t","pid":1,"user":"ann","host":"h"}"#,
        r#"{"type":"run_resumed","command":"rollback","time":"t","pid":1,"user":"ann","host":"h"}"#,
        r#"{"type":"run_resumed","command":"join","time":"t","pid":1,"user":"ann","host":"h"}"#,
    ];
    for line in lines {
        let record = parse_line(line).unwrap();
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
    }
    let old = r#"{"type":"gate_waiting","wave":"canary","reason":"pause","time":"t"}"#;
    assert!(matches!(
        parse_line(old).unwrap(),
        Record::GateWaiting {
            reason: GateReason::Soak,
            ..
        }
    ));
}

/// A journal written by the pony of before records and events shared their structs
/// (tests/old_journal/): every line reads, and a record written today is the same line
/// (field for field, in the same order), but for the region and cluster a
/// `health_checked` gains. Lines of kinds that run did not write, as that pony wrote
/// them, too; `controller_lost` gains the `resume` command.
#[test]
fn lines_of_older_journals_read_and_write_back_the_same() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/old_journal/runs/20261207-181639-7e2e/journal.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let others = [
        r#"{"type":"control","command":"approve canary","user":"ann","host":"ctl","pid":7,"accepted":true,"message":"approved","time":"t"}"#,
        r#"{"type":"controller_lost","lost_controller":"b","machine":"m","pid":9,"regions":["r2"],"policy":"wait","time":"t"}"#,
        r#"{"type":"window_waiting","wave":"w","window":"02:00-06:00 UTC","zone":"UTC","opens":"o","time":"t"}"#,
        r#"{"type":"rollback_not_attempted","node":1,"label":"a@h","blocked_by":"b@h","reason":"r"}"#,
        r#"{"type":"task_finished","node":4,"label":"a@h","state":"succeeded","exit_code":0,"duration_ms":1,"captures":[["k","v"]],"output_tail":"","error":null}"#,
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines().chain(others) {
        let record = parse_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let written = serde_json::to_string(&record).unwrap();
        let kind = line.split('"').nth(3).unwrap();
        kinds.insert(kind);
        let expected = match kind {
            "health_checked" => {
                line.replacen(r#","after""#, r#","region":"","cluster":"","after""#, 1)
            }
            "controller_lost" => line.replacen(r#","time""#, r#","resume":"","time""#, 1),
            // Journals of before `changed` was written: a task that ended had changed
            // its host.
            _ if !line.contains("\"changed\"") && kind == "task_finished" => {
                line.replacen('}', r#","changed":true}"#, 1)
            }
            _ => line.to_string(),
        };
        assert_eq!(written, expected);
    }
    assert_eq!(kinds.len(), 18, "every kind of record: {kinds:?}");
}
