//! Plain lines for CI logs and simple terminals: one line per host outcome, failures with
//! their output tail, gates and waves, a progress line at most every 10 s, and the summary.

use super::Reporter;
use crate::events::{Event, HostOutcome, RunOutcome};
use std::io::Write;
use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct PlainReporter {
    out: Box<dyn Write + Send>,
    total_hosts: usize,
    done_hosts: usize,
    last_progress: Instant,
    quiet: bool,
}

impl PlainReporter {
    pub fn new(out: Box<dyn Write + Send>, quiet: bool) -> Self {
        PlainReporter {
            out,
            total_hosts: 0,
            done_hosts: 0,
            last_progress: Instant::now(),
            quiet,
        }
    }

    fn line(&mut self, text: String) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

pub fn outcome_word(outcome: HostOutcome) -> &'static str {
    match outcome {
        HostOutcome::Ok => "ok",
        HostOutcome::Failed => "FAILED",
        HostOutcome::RolledBack => "rolled back",
        HostOutcome::RollbackFailed => "ROLLBACK FAILED",
        HostOutcome::Cancelled => "not run",
    }
}

pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Reporter for PlainReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                run_id,
                playbook,
                inventory,
                hosts,
                tasks,
                ..
            } => {
                self.total_hosts = *hosts;
                self.line(format!(
                    "run {run_id}: {playbook} on {inventory}, {hosts} hosts, {tasks} tasks"
                ));
            }
            Event::WaveStarted { wave, hosts } if !self.quiet => {
                self.line(format!("== wave {wave} ({hosts} hosts)"))
            }
            Event::GateWaiting {
                wave,
                reason,
                seconds,
            } => match reason.as_str() {
                "pause" => self.line(format!(
                    "== gate after wave {wave}: pausing {}",
                    humantime::format_duration(Duration::from_secs(*seconds))
                )),
                _ => self.line(format!("== gate after wave {wave}: waiting for {reason}")),
            },
            Event::TaskFailed {
                task,
                exit_code,
                error,
                stderr_tail,
                attempts,
                ..
            } => {
                let code = exit_code.map(|c| format!("exit {c}, ")).unwrap_or_default();
                let mut text = format!(
                    "FAILED {} [{}] step {}: {code}{error} (after {attempts} attempt(s))",
                    task.host, task.region, task.step
                );
                if !stderr_tail.is_empty() {
                    text.push('\n');
                    text.push_str(&indent(stderr_tail));
                }
                self.line(text);
            }
            Event::HostFinished {
                host,
                region,
                cluster,
                outcome,
            } => {
                self.done_hosts += 1;
                if !self.quiet || *outcome != HostOutcome::Ok {
                    self.line(format!(
                        "{:<15} {host} ({region}/{cluster})",
                        outcome_word(*outcome)
                    ));
                }
                if self.last_progress.elapsed() >= PROGRESS_EVERY {
                    self.last_progress = Instant::now();
                    let (done, total) = (self.done_hosts, self.total_hosts);
                    self.line(format!("progress: {done}/{total} hosts done"));
                }
            }
            Event::BudgetExceeded {
                cluster,
                region,
                failed_hosts,
                max_failures,
                action,
            } => {
                self.line(format!("!! cluster {cluster} ({region}): {failed_hosts} failed hosts > max_failures {max_failures}: {action}"));
            }
            Event::RollbackStarted { scope, hosts } => {
                self.line(format!("== rollback of {scope} ({hosts} hosts)"))
            }
            Event::RollbackTask {
                task,
                ok: false,
                exit_code,
                error,
            } => {
                let code = exit_code.map(|c| format!("exit {c}: ")).unwrap_or_default();
                self.line(format!(
                    "!! ROLLBACK FAILED {} step {}: {code}{}",
                    task.host,
                    task.step,
                    error.as_deref().unwrap_or("")
                ));
            }
            Event::Stopped { reason } => self.line(format!("== {reason}")),
            Event::Summary {
                run_id,
                outcome,
                exit_code,
                hosts,
                ok,
                failed,
                rolled_back,
                cancelled,
                duration_ms,
                regions,
                run_dir,
                ..
            } => {
                self.line(String::new());
                self.line(format!(
                    "{:<16} {:>6} {:>6} {:>7} {:>12} {:>8} {:>10}",
                    "REGION", "HOSTS", "OK", "FAILED", "ROLLED BACK", "NOT RUN", "DURATION"
                ));
                for r in regions {
                    self.line(format!(
                        "{:<16} {:>6} {:>6} {:>7} {:>12} {:>8} {:>10}",
                        r.region,
                        r.hosts,
                        r.ok,
                        r.failed,
                        r.rolled_back,
                        r.cancelled,
                        humantime::format_duration(Duration::from_secs(r.duration_ms / 1000))
                            .to_string()
                    ));
                }
                let verdict = match outcome {
                    RunOutcome::Succeeded => "succeeded",
                    RunOutcome::FailedRolledBack => "failed; rollback complete",
                    RunOutcome::NeedsAttention => {
                        "FAILED; a person must look (halted or rollback incomplete)"
                    }
                    RunOutcome::AwaitingApproval => "paused awaiting approval",
                    RunOutcome::Interrupted => "interrupted",
                };
                self.line(format!(
                    "run {run_id} {verdict} in {}: {hosts} hosts, {ok} ok, {failed} failed, {rolled_back} rolled back, {cancelled} not run (exit {exit_code})",
                    humantime::format_duration(Duration::from_millis(*duration_ms / 100 * 100))
                ));
                self.line(format!("journal and logs: {run_dir}"));
            }
            _ => {}
        }
    }
}
