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
use indexmap::IndexMap;
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

    /// The whole report.
    pub fn render(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let totals = self
            .suites
            .values()
            .map(Suite::counts)
            .fold(CaseCounts::default(), |a, b| a + b);
        out.push_str(&format!(
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">\n",
            attr(&format!("pony {} on {}", self.playbook, self.inventory)),
            totals.tests,
            totals.failures,
            totals.errors,
            totals.skipped,
            self.duration.as_secs_f64(),
            timestamp(self.started),
        ));
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        for (region, suite) in &self.suites {
            let counts = suite.counts();
            let time = match (suite.started, suite.ended) {
                (Some(a), Some(b)) => b.saturating_duration_since(a),
                _ => Duration::ZERO,
            };
            let started = suite
                .started
                .map(|s| self.started + s.saturating_duration_since(self.clock))
                .unwrap_or(self.started);
            out.push_str(&format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\" hostname=\"{}\">\n",
                attr(region),
                counts.tests,
                counts.failures,
                counts.errors,
                counts.skipped,
                time.as_secs_f64(),
                timestamp(started),
                attr(&hostname),
            ));
            out.push_str("    <properties>\n");
            for (name, value) in [
                ("run_id", &self.run_id),
                ("playbook", &self.playbook),
                ("inventory", &self.inventory),
            ] {
                out.push_str(&format!(
                    "      <property name=\"{name}\" value=\"{}\"/>\n",
                    attr(value)
                ));
            }
            out.push_str("    </properties>\n");
            for (host, case) in &suite.cases {
                self.render_case(&mut out, region, host, case);
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }

    fn render_case(&self, out: &mut String, region: &str, host: &str, case: &Case) {
        let time = match (case.started, case.ended) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        out.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">\n",
            attr(host),
            attr(&format!("{region}.{}", case.cluster)),
            time.as_secs_f64(),
        ));
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
            out.push_str(&format!(
                "      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                attr(&format!(
                    "step {} failed ({code}): {}; host {}",
                    first.step,
                    first.error,
                    outcome_word(outcome)
                )),
                attr(&code),
                text(&body),
            ));
        } else if outcome == HostOutcome::RollbackFailed {
            out.push_str(&format!(
                "      <error message=\"rollback failed\" type=\"rollback\">{}</error>\n",
                text(&case.rollback_errors.join("\n")),
            ));
        } else if outcome == HostOutcome::Cancelled {
            out.push_str(&format!(
                "      <skipped message=\"not run: the run stopped before this host finished ({} task(s) done)\"/>\n",
                case.tasks_ok
            ));
        } else if outcome == HostOutcome::RolledBack {
            out.push_str(
                "      <skipped message=\"rolled back after failures of other hosts: not on the new release\"/>\n",
            );
        }
        if let Some(run_dir) = &self.run_dir {
            out.push_str(&format!(
                "      <system-out>{}</system-out>\n",
                text(&format!("log: {run_dir}/logs/{host}.log"))
            ));
        }
        out.push_str("    </testcase>\n");
    }

    fn write(&self) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        std::fs::write(&temp, self.render())?;
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
            Event::TaskFinished { task, .. } | Event::TaskSkipped { task, .. } => {
                let case = self.case(&task.region, &task.host, &task.cluster);
                case.tasks_ok += 1;
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

/// A suite's test cases by JUnit verdict (the `<testsuite>` attributes).
#[derive(Debug, Default, Clone, Copy)]
struct CaseCounts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

impl std::ops::Add for CaseCounts {
    type Output = CaseCounts;
    fn add(self, o: CaseCounts) -> CaseCounts {
        CaseCounts {
            tests: self.tests + o.tests,
            failures: self.failures + o.failures,
            errors: self.errors + o.errors,
            skipped: self.skipped + o.skipped,
        }
    }
}

impl Suite {
    fn counts(&self) -> CaseCounts {
        let mut c = CaseCounts {
            tests: self.cases.len(),
            ..CaseCounts::default()
        };
        for case in self.cases.values() {
            match (case.failures.is_empty(), case.outcome) {
                (false, _) => c.failures += 1,
                (true, Some(HostOutcome::RollbackFailed)) => c.errors += 1,
                (true, Some(HostOutcome::RolledBack | HostOutcome::Cancelled) | None) => {
                    c.skipped += 1
                }
                _ => {}
            }
        }
        c
    }
}

/// ISO 8601 without a zone, as the JUnit schema wants (UTC).
fn timestamp(time: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.trim_end_matches('Z').to_string()
}

/// Text content: escaped, without the characters XML 1.0 forbids (e.g. ANSI escapes).
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// An attribute value: like [`text`], quotes escaped and line breaks kept as references.
fn attr(value: &str) -> String {
    text(value)
        .replace('"', "&quot;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_the_xml_valid() {
        assert_eq!(text("a<b & c>\u{1b}[31m"), "a&lt;b &amp; c&gt;[31m");
        assert_eq!(attr("say \"hi\"\nnow"), "say &quot;hi&quot;&#10;now");
    }
}
