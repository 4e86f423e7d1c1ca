//! Two copies of one run's journal side by side: the state database's and the local
//! `journal.jsonl` of a machine whose controller wrote some records the database never
//! got (it was out of reach, or the lease was lost before the outbox was sent).
//!
//! A record's identity is the record itself: every record a controller writes carries
//! what makes it one fact (a task's start its time to the millisecond, a task's end its
//! exit code, duration and output tail, a resume its pid and time), so the same fact in
//! both copies is the same record, and two facts are never equal. The copies share a
//! prefix (what the database had when this machine last read it, and what this
//! controller sent); past it, each may hold records the other lacks: the database
//! another machine's controller's, the local copy its outbox.

use super::Record;
use std::collections::HashMap;

/// What one copy holds that the other does not, by position in each.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Positions of the local records the database lacks, in local order.
    pub local_only: Vec<usize>,
    /// Positions of the database's records the local copy lacks, in its order.
    pub db_only: Vec<usize>,
}

/// Compares the local copy with the database's: the common prefix first, then what is
/// left of each, record by record (a record the other holds as many times is shared).
pub fn diff(local: &[Record], db: &[Record]) -> Diff {
    let prefix = local.iter().zip(db).take_while(|(l, d)| l == d).count();
    let key = |r: &Record| serde_json::to_string(r).expect("records serialize");
    let mut in_db: HashMap<String, usize> = HashMap::new();
    for record in &db[prefix..] {
        *in_db.entry(key(record)).or_default() += 1;
    }
    let mut in_local: HashMap<String, usize> = HashMap::new();
    let mut local_only = Vec::new();
    for (i, record) in local.iter().enumerate().skip(prefix) {
        let k = key(record);
        match in_db.get_mut(&k) {
            Some(n) if *n > 0 => {
                *n -= 1;
                *in_local.entry(k).or_default() += 1;
            }
            _ => local_only.push(i),
        }
    }
    let mut db_only = Vec::new();
    for (i, record) in db.iter().enumerate().skip(prefix) {
        match in_local.get_mut(&key(record)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => db_only.push(i),
        }
    }
    Diff {
        local_only,
        db_only,
    }
}

/// The database's records followed by the local records it lacks: the journal a resume
/// on this machine goes on from. A task succeeded in either copy is succeeded in it.
pub fn merged(local: &[Record], db: &[Record]) -> (Vec<Record>, usize) {
    let diff = diff(local, db);
    let mut all = db.to_vec();
    all.extend(diff.local_only.iter().map(|&i| local[i].clone()));
    (all, diff.local_only.len())
}

/// Who last started or resumed the run, as the database's journal records it, when it
/// has no `run_finished` after that: a controller that did not end normally (it died,
/// lost its lease, or could not reach the database), whose local journal may hold more.
/// Its position in `db`, and the record.
pub fn unfinished_controller(db: &[Record]) -> Option<(usize, &Record)> {
    let (at, record) = db
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| matches!(r, Record::RunStarted { .. } | Record::RunResumed { .. }))?;
    let finished = db[at..]
        .iter()
        .any(|r| matches!(r, Record::RunFinished { .. }));
    (!finished).then_some((at, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TaskRecord;
    use crate::state::replay::TaskState;

    fn started(node: usize, time: &str) -> Record {
        Record::TaskStarted {
            node,
            label: format!("t{node}"),
            time: time.into(),
        }
    }

    fn succeeded(node: usize, duration_ms: u64) -> Record {
        Record::TaskFinished {
            node,
            label: format!("t{node}"),
            state: TaskState::Succeeded,
            exit_code: Some(0),
            duration_ms,
            record: TaskRecord {
                changed: true,
                ..TaskRecord::default()
            },
        }
    }

    fn resumed(host: &str, pid: u32) -> Record {
        Record::RunResumed {
            command: crate::state::journal::RunKind::Resume,
            time: "t".into(),
            pid,
            user: "ann".into(),
            host: host.into(),
        }
    }

    #[test]
    fn the_outbox_of_this_machine_is_what_the_database_lacks() {
        let shared = vec![started(0, "a"), succeeded(0, 5)];
        let mut local = shared.clone();
        local.extend([started(1, "b"), succeeded(1, 7)]);
        let diff = diff(&local, &shared);
        assert_eq!(diff.local_only, vec![2, 3]);
        assert!(diff.db_only.is_empty());
        let (all, added) = merged(&local, &shared);
        assert_eq!((all, added), (local.clone(), 2));
        // Nothing lacking: the merge is the database's journal.
        assert_eq!(merged(&shared, &local).0, local);
    }

    #[test]
    fn another_controllers_records_and_this_ones_are_both_kept_once() {
        let prefix = vec![started(0, "a"), succeeded(0, 5)];
        // This machine: task 1 started and succeeded, never sent.
        let mut local = prefix.clone();
        local.extend([started(1, "b"), succeeded(1, 7)]);
        // Another machine resumed and ran task 2 (and started task 1 again, sent).
        let mut db = prefix.clone();
        db.extend([resumed("ctl-2", 9), started(2, "c"), started(1, "d")]);
        let diff = diff(&local, &db);
        assert_eq!(diff.local_only, vec![2, 3]);
        assert_eq!(diff.db_only, vec![2, 3, 4]);
        let (all, added) = merged(&local, &db);
        assert_eq!(added, 2);
        assert_eq!(all.len(), 7);
        assert_eq!(all[5..], local[2..]);
        // The same facts out of order still count once.
        let mut reordered = prefix.clone();
        reordered.extend([succeeded(1, 7), started(1, "b")]);
        assert!(super::diff(&reordered, &local).local_only.is_empty());
    }

    #[test]
    fn a_controller_without_its_runs_end_is_named() {
        let mut db = vec![resumed("ctl-1", 4), succeeded(0, 1)];
        assert_eq!(unfinished_controller(&db).map(|(at, _)| at), Some(0));
        db.push(Record::RunFinished {
            outcome: crate::events::RunOutcome::Succeeded,
            exit_code: 0,
            time: "t".into(),
        });
        assert_eq!(unfinished_controller(&db), None);
        db.push(resumed("ctl-2", 5));
        assert_eq!(unfinished_controller(&db).map(|(at, _)| at), Some(3));
    }
}
