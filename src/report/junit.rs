//! `--junit FILE`: a JUnit XML report written when the run ends, in the shape Jenkins,
//! GitLab, GitHub test reporters and most CI parsers read: `<testsuites>` with one
//! `<testsuite>` per region and one `<testcase>` per host (`classname` = `region.cluster`).
//!
//! - a host with a failed task gets a `<failure>` (message: step and exit code or error;
//!   text: the output tail, and whether its rollback completed);
//! - a host whose rollback failed without a failure of its own gets an `<error>`;
//! - a host that never ran (the run stopped first) or that was rolled back because of
//!   other hosts' failures is `<skipped>`: it is not on the new release, and not at fault;
//! - every case's `<system-out>` says where the host's full log is.
//!
//! The file is written to a temporary name and renamed, so a reader never sees half of it.

use super::{outcome_word, Reporter};
use crate::events::{Event, HostOutcome};
use chrono::{DateTime, FixedOffset, Utc};
use indexmap::IndexMap;
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite, XmlString,
};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

pub struct JunitReporter {
    path: PathBuf,
    run_id: String,
    playbook: String,
    inventory: String,
    started: SystemTime,
    clock: Instant,
    duration: Duration,
    run_dir: Option<String>,
    suites: IndexMap<String, Suite>,
}

#[derive(Default)]
struct Suite {
    started: Option<Instant>,
    ended: Option<Instant>,
    cases: IndexMap<String, Case>,
}

#[derive(Default)]
struct Case {
    cluster: String,
    started: Option<Instant>,
    ended: Option<Instant>,
    outcome: Option<HostOutcome>,
    failures: Vec<Failure>,
    /// What went wrong in the host's rollback, a line each: a command that failed, or
    /// one not attempted after it.
    rollback_errors: Vec<String>,
    tasks_ok: usize,
}

struct Failure {
    step: String,
    exit_code: Option<i32>,
    error: String,
    tail: String,
    attempts: u32,
}

impl JunitReporter {
    pub fn new(path: PathBuf) -> Self {
        JunitReporter {
            path,
            run_id: String::new(),
            playbook: String::new(),
            inventory: String::new(),
            started: SystemTime::now(),
            clock: Instant::now(),
            duration: Duration::ZERO,
            run_dir: None,
            suites: IndexMap::new(),
        }
    }

    fn case(&mut self, region: &str, host: &str, cluster: &str) -> &mut Case {
        let suite = self.suites.entry(region.to_string()).or_default();
        let case = suite.cases.entry(host.to_string()).or_default();
        if case.cluster.is_empty() {
            case.cluster = cluster.to_string();
        }
        case
    }

    /// The whole report, in quick-junit's types (nextest's writer serializes it).
    fn report(&self) -> Report {
        let mut report = Report::new(xml(&format!(
            "pony {} on {}",
            self.playbook, self.inventory
        )));
        report
            .set_timestamp(timestamp(self.started))
            .set_time(self.duration);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        for (region, suite) in &self.suites {
            let time = match (suite.started, suite.ended) {
                (Some(a), Some(b)) => b.saturating_duration_since(a),
                _ => Duration::ZERO,
            };
            let started = suite
                .started
                .map(|s| self.started + s.saturating_duration_since(self.clock))
                .unwrap_or(self.started);
            let mut test_suite = TestSuite::new(xml(region));
            test_suite
                .set_timestamp(timestamp(started))
                .set_time(time)
                .add_properties([
                    Property::new("run_id", xml(&self.run_id)),
                    Property::new("playbook", xml(&self.playbook)),
                    Property::new("inventory", xml(&self.inventory)),
                ]);
            test_suite.extra.insert("hostname".into(), xml(&hostname));
            test_suite.add_test_cases(
                suite
                    .cases
                    .iter()
                    .map(|(host, case)| self.test_case(region, host, case)),
            );
            report.add_test_suite(test_suite);
        }
        report
    }

    fn test_case(&self, region: &str, host: &str, case: &Case) -> TestCase {
        let time = match (case.started, case.ended) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let mut test_case = TestCase::new(xml(host), Self::status(case));
        test_case
            .set_classname(xml(&format!("{region}.{}", case.cluster)))
            .set_time(time);
        if let Some(run_dir) = &self.run_dir {
            test_case.set_system_out(xml(&format!("log: {run_dir}/logs/{host}.log")));
        }
        test_case
    }

    /// A host's verdict: `<failure>`, `<error>`, `<skipped>` or none (it succeeded).
    fn status(case: &Case) -> TestCaseStatus {
        let outcome = case.outcome.unwrap_or(HostOutcome::Cancelled);
        if let Some(first) = case.failures.first() {
            let code = first
                .exit_code
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "no exit code".into());
            let mut body = String::new();
            for f in &case.failures {
                body.push_str(&format!(
                    "step {} failed after {} attempt(s): {}{}\n",
                    f.step,
                    f.attempts,
                    f.exit_code
                        .map(|c| format!("exit {c}: "))
                        .unwrap_or_default(),
                    f.error
                ));
                if !f.tail.is_empty() {
                    body.push_str("--- output tail\n");
                    body.push_str(&f.tail);
                    body.push('\n');
                }
            }
            for e in &case.rollback_errors {
                body.push_str(e);
                body.push('\n');
            }
            body.push_str(&format!("host outcome: {}\n", outcome_word(outcome)));
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(xml(&format!(
                    "step {} failed ({code}): {}; host {}",
                    first.step,
                    first.error,
                    outcome_word(outcome)
                )))
                .set_type(xml(&code))
                .set_description(xml(&body));
            status
        } else if outcome == HostOutcome::RollbackFailed {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status
                .set_message("rollback failed")
                .set_type("rollback")
                .set_description(xml(&case.rollback_errors.join("\n")));
            status
        } else if outcome == HostOutcome::Cancelled {
            let mut status = TestCaseStatus::skipped();
            status.set_message(format!(
                "not run: the run stopped before this host finished ({} task(s) done)",
                case.tasks_ok
            ));
            status
        } else if outcome == HostOutcome::RolledBack {
            let mut status = TestCaseStatus::skipped();
            status.set_message("rolled back after failures of other hosts: not on the new release");
            status
        } else {
            TestCaseStatus::success()
        }
    }

    fn write(&self) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        let xml = self
            .report()
            .to_string()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::write(&temp, xml)?;
        std::fs::rename(&temp, &self.path)
    }
}

impl Reporter for JunitReporter {
    fn event(&mut self, event: &Event) {
        let now = Instant::now();
        match event {
            Event::RunStarted {
                run_id,
                playbook,
                inventory,
                regions,
                ..
            } => {
                self.run_id = run_id.clone();
                self.playbook = playbook.clone();
                self.inventory = inventory.clone();
                self.started = SystemTime::now();
                self.clock = now;
                for (region, _) in regions {
                    self.suites.entry(region.clone()).or_default();
                }
            }
            Event::TaskStarted { task } => {
                let suite = self.suites.entry(task.region.clone()).or_default();
                suite.started.get_or_insert(now);
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.started.get_or_insert(now);
            }
            // A task skipped by its guard on the host is done; one never run (a
            // dependency failed or the run stopped) is not.
            Event::TaskFinished { task, .. }
            | Event::TaskSkipped {
                task,
                record: Some(_),
                ..
            } => {
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.tasks_ok += 1;
            }
            Event::TaskSkipped { task, .. } => {
                self.case(&task.region, &task.host, &task.cluster);
            }
            Event::TaskFailed {
                task,
                exit_code,
                error,
                stderr_tail,
                attempts,
                ..
            } => {
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.failures.push(Failure {
                    step: task.step.clone(),
                    exit_code: *exit_code,
                    error: error.clone(),
                    tail: stderr_tail.clone(),
                    attempts: *attempts,
                });
            }
            Event::RollbackTask {
                task,
                ok: false,
                exit_code,
                error,
                ..
            } => {
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.rollback_errors.push(format!(
                    "rollback failed: step {}: {}{}",
                    task.step,
                    exit_code.map(|c| format!("exit {c}: ")).unwrap_or_default(),
                    error.as_deref().unwrap_or("")
                ));
            }
            Event::RollbackNotAttempted {
                task, blocked_by, ..
            } => {
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.rollback_errors.push(format!(
                    "rollback not attempted: step {}: rollback of {} failed",
                    task.step,
                    super::label_step(blocked_by)
                ));
            }
            Event::HostFinished {
                host,
                region,
                cluster,
                outcome,
            } => {
                self.suites.entry(region.clone()).or_default().ended = Some(now);
                let case = self.case(region, host, cluster);
                case.outcome = Some(*outcome);
                case.ended = Some(now);
            }
            Event::Summary {
                duration_ms,
                run_dir,
                ..
            } => {
                self.duration = Duration::from_millis(*duration_ms);
                self.run_dir = Some(run_dir.clone());
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Err(e) = self.write() {
            tracing::error!("cannot write the JUnit report {}: {e}", self.path.display());
            eprintln!(
                "error: cannot write the JUnit report {}: {e}",
                self.path.display()
            );
        }
    }
}

/// A time as the JUnit attributes give it (RFC 3339, UTC, milliseconds: nextest's form).
fn timestamp(time: SystemTime) -> DateTime<FixedOffset> {
    DateTime::<Utc>::from(time).fixed_offset()
}

/// A value for the report. quick-junit drops ANSI escapes and every control character but
/// the line feed; what a host's output means is kept: a tab becomes the spaces to the next
/// 8-column stop (as a terminal shows it; dropped, it would glue columns together) and a
/// carriage return a line feed (as an XML reader would read it). U+FFFE and U+FFFF, which
/// XML 1.0 forbids too, go here, so the file always parses.
fn xml(value: &str) -> XmlString {
    let mut out = String::with_capacity(value.len());
    let mut column = 0;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => {
                out.push('\n');
                column = 0;
            }
            '\u{fffe}' | '\u{ffff}' => {}
            c => {
                out.push(c);
                // Control characters (dropped) take no column.
                column += usize::from(!c.is_control());
            }
        }
    }
    XmlString::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case whose failure text has what XML cannot carry as is: markup characters, an
    /// ANSI colour, U+FFFE and a control character. The file parses and says the rest.
    #[test]
    fn escaping_keeps_the_xml_valid() {
        let mut reporter = JunitReporter::new(PathBuf::from("unused.xml"));
        let case = reporter.case("r1", "h1", "c1");
        case.outcome = Some(HostOutcome::RolledBack);
        case.failures.push(Failure {
            step: "say \"hi\"".into(),
            exit_code: Some(7),
            error: "a<b & c>\u{1b}[31m".into(),
            tail: "bad\u{fffe}\u{7}byte\ttab\r\n50%\r100%".into(),
            attempts: 1,
        });
        let xml = reporter.report().to_string().unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(
            failure.attribute("message"),
            Some("step say \"hi\" failed (exit 7): a<b & c>; host rolled back")
        );
        assert_eq!(failure.attribute("type"), Some("exit 7"));
        let body = failure.text().unwrap();
        assert!(body.contains("exit 7: a<b & c>\n"), "{body}");
        assert!(body.contains("badbyte tab\n50%\n100%\n"), "{body}");
        assert_eq!(doc.root_element().attribute("failures"), Some("1"));
    }
}
