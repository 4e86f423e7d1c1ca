//! Dead man's switches (`dead_man:` on a step): a watchdog on the host itself that runs
//! the step's rollback once its bound passes without word from the controller, so that a
//! controller that dies (kill -9, a lost machine) does not leave hosts out of service
//! until a person wakes up. This module owns the switch's life on the host — arm when a
//! task of the step starts, re-arm while the host is in flight, disarm when its tasks end
//! — and the shell that does it there.
//!
//! On the host, a switch is a few files in the run's folder (the same folder, with the
//! same ownership checks, as the tasks' process-group markers):
//! `${TMPDIR:-/tmp}/pony-<uid>/<run>/dm-h<host>/t<node>.{armed,sh,log,fired}`. The
//! watchdog is a detached `sh` loop (its own session, no terminal, no pipes to the SSH
//! channel: it survives the session and the controller). It fires when `armed` was not
//! touched for the bound, by the host's own clock (no skew between controller and host):
//! it claims the switch by renaming `armed` (a disarm that removed it first wins), runs
//! the rollback into `log`, and writes `fired` as `<epoch seconds> <exit status>`.
//!
//! Re-arming touches the host's `armed` files every third of the bound. A stopped run
//! (Ctrl-C, a lost lease) leaves its in-flight hosts armed on purpose: no controller
//! watches them any more. A later arm of the same task (a resume) reports a switch that
//! fired, and a resume deploys such hosts again from their first task
//! ([`in_flight_hosts`]).

use crate::inventory::HostId;
use crate::shell::quote as shell_quote;
use crate::transport::{BoxFuture, Connection, TransportError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long one arm, re-arm or disarm command may take on its host.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a disarm may take in all, connecting included: the run's end waits for its
/// disarms, and a host that went unreachable must not hold it (its switch may then fire,
/// which the warning says).
const DISARM_BOUND: Duration = Duration::from_secs(60);

/// One task's switch, as the task runner arms it.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The rendered rollback the watchdog runs (with `become` already applied).
    pub rollback: String,
    pub bound: Duration,
    /// Where its files are: the run (made safe as a path component), the host, the task.
    pub run: String,
    pub host: HostId,
    pub node: usize,
}

impl Switch {
    /// The command that arms the switch on its host. It prints `armed` on success, and
    /// on stderr a firing of an earlier controller's switch for the same task.
    pub fn arm_command(&self) -> String {
        let bound = self.bound.as_secs().max(1);
        format!(
            "{folder}\
             p=\"$D/t{node}\"\n\
             if [ -e \"$p.fired\" ]; then\n\
             \x20 read -r pony_at pony_rc < \"$p.fired\"\n\
             \x20 echo \"pony: this step's dead man's switch fired at $(date -u -d \"@$pony_at\" '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null || echo \"$pony_at\") (rollback exit $pony_rc) while no controller watched; see $p.log.$pony_at\" >&2\n\
             \x20 mv \"$p.log\" \"$p.log.$pony_at\" 2>/dev/null; mv \"$p.fired\" \"$p.fired.$pony_at\"\n\
             fi\n\
             printf '%s\\n' {rollback} > \"$p.sh\" || exit 1\n\
             echo {bound} > \"$p.armed\" || exit 1\n\
             pony_setsid=; command -v setsid >/dev/null 2>&1 && pony_setsid=setsid\n\
             $pony_setsid sh -c {watchdog} pony-dead-man \"$p\" {bound} </dev/null >/dev/null 2>&1 &\n\
             echo armed\n",
            folder = folder_lines(&self.run, self.host),
            node = self.node,
            rollback = shell_quote(&self.rollback),
            watchdog = shell_quote(WATCHDOG),
        )
    }
}

/// The watchdog: `$1` is the switch's path prefix, `$2` its bound in seconds.
const WATCHDOG: &str = r#"p=$1; b=$2
while [ -e "$p.armed" ]; do
  now=$(date +%s)
  last=$(date -r "$p.armed" +%s 2>/dev/null) || exit 0
  if [ $((now - last)) -ge "$b" ]; then
    mv "$p.armed" "$p.firing" 2>/dev/null || exit 0
    sh "$p.sh" > "$p.log" 2>&1
    rc=$?
    echo "$now $rc" > "$p.fired"
    rm -f "$p.firing"
    exit 0
  fi
  sleep 1
done
"#;

/// Sets `D` to the host's switch folder (made if missing, only when the run's folder is
/// this user's own and not a link: a planted folder would let another user choose what
/// the watchdog runs); exits 1 otherwise.
fn folder_lines(run: &str, host: HostId) -> String {
    format!(
        "{}pony_d=\"${{TMPDIR:-/tmp}}/pony-$(id -u)\"\n\
         pony_own_folder \"$pony_d\" || {{ echo \"pony: $pony_d is not a folder of this user's own\" >&2; exit 1; }}\n\
         D=\"$pony_d/{run}/dm-h{host}\"\n\
         mkdir -p \"$D\" || exit 1\n",
        crate::transport::OWN_FOLDER_FUNCTION
    )
}

/// Touches the host's armed switches; prints `fired NAME AT RC` for any that fired.
fn rearm_command(run: &str, host: HostId) -> String {
    format!(
        "{}touch -c \"$D\"/*.armed 2>/dev/null\n{REPORT_FIRED}",
        folder_lines(run, host)
    )
}

/// Removes the host's switches (a watchdog whose `armed` is gone ends within a second);
/// prints what fired meanwhile.
fn disarm_command(run: &str, host: HostId) -> String {
    format!(
        "{}rm -f \"$D\"/*.armed\n{REPORT_FIRED}",
        folder_lines(run, host)
    )
}

const REPORT_FIRED: &str = r#"for f in "$D"/*.fired "$D"/*.firing; do
  [ -e "$f" ] || continue
  echo "fired ${f##*/} $(cat "$f" 2>/dev/null)"
done
"#;

/// Reads the host's switches for the run and changes nothing (`pony status --hosts`):
/// prints `armed NAME`, `firing NAME`, `fired NAME AT RC` for a firing no resume has
/// reported yet, and `reported NAME AT RC` for one a resume reported (and renamed).
/// Prints nothing when the run never armed a switch there.
pub fn inspect_command(run_id: &str, host: HostId) -> String {
    let run = crate::transport::TaskMark::new(run_id, String::new()).run;
    format!(
        "D=\"${{TMPDIR:-/tmp}}/pony-$(id -u)/{run}/dm-h{host}\"\n\
         [ -d \"$D\" ] || exit 0\n{INSPECT}"
    )
}

const INSPECT: &str = r#"for f in "$D"/*.armed "$D"/*.firing; do
  [ -e "$f" ] && echo "${f##*.} ${f##*/}"
done
for f in "$D"/*.fired; do
  [ -e "$f" ] && echo "fired ${f##*/} $(cat "$f" 2>/dev/null)"
done
for f in "$D"/*.fired.*; do
  [ -e "$f" ] && echo "reported ${f##*/} $(cat "$f" 2>/dev/null)"
done
exit 0
"#;

/// What the switches need of the run's hosts: the host pool gives it (the switches know
/// nothing of how its connections are opened and shared, and the pool only tells them
/// when a host ended).
pub trait SwitchHosts: Send + Sync + 'static {
    /// The switches armed on hosts of this run.
    fn dead_men(&self) -> &DeadMen;
    /// The host's shared connection, opening it if needed.
    fn connection(
        &self,
        host: HostId,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>>;
    /// A connection of its own (the shared one may have been closed already).
    fn fresh_connection(
        &self,
        host: HostId,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>>;
    fn host_name(&self, host: HostId) -> &str;
}

/// The switches armed on each host, re-armed by [`DeadMen::keep`] and disarmed when
/// the pool closes the host.
#[derive(Default)]
pub struct DeadMen {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    armed: HashMap<HostId, Armed>,
    /// Hosts whose tasks ended, with their connection if it was open.
    to_disarm: Vec<(HostId, Option<Arc<dyn Connection>>)>,
    /// Disarms sent and not yet answered.
    disarming: usize,
    finishing: bool,
}

struct Armed {
    run: String,
    /// The shortest bound of the host's switches: re-armed every third of it.
    bound: Duration,
    last: Instant,
}

impl DeadMen {
    /// A switch was armed on `host` (its `armed` file written just now).
    pub fn armed(&self, switch: &Switch) {
        let mut inner = self.inner.lock().expect("not poisoned");
        let entry = inner.armed.entry(switch.host).or_insert(Armed {
            run: switch.run.clone(),
            bound: switch.bound,
            last: Instant::now(),
        });
        entry.bound = entry.bound.min(switch.bound);
        drop(inner);
        self.changed.notify_one();
    }

    /// The host's tasks ended (done, failed, rolled back, unreachable): its switches are
    /// removed through `connection` (or a fresh one).
    pub fn host_ended(&self, host: HostId, connection: Option<Arc<dyn Connection>>) {
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.armed.contains_key(&host) {
            inner.to_disarm.push((host, connection));
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Re-arms armed hosts and disarms ended ones until [`DeadMen::finish`]. Runs as its
    /// own task: a re-arm must not wait for the scheduler, nor for the step that drains.
    pub fn keep(pool: Arc<impl SwitchHosts>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let dead_men = pool.dead_men();
            let mut work = tokio::task::JoinSet::new();
            loop {
                let (due, disarms, next, done) = dead_men.next_work();
                for (host, run) in due {
                    let pool = pool.clone();
                    work.spawn(async move { rearm(pool.as_ref(), host, &run).await });
                }
                for (host, run, connection) in disarms {
                    let pool = pool.clone();
                    work.spawn(async move {
                        let disarming = disarm(pool.as_ref(), host, &run, connection);
                        if tokio::time::timeout(DISARM_BOUND, disarming).await.is_err() {
                            tracing::warn!(
                                "{}: disarming its dead man's switch took over {}s; it may still fire",
                                pool.host_name(host),
                                DISARM_BOUND.as_secs()
                            );
                        }
                        pool.dead_men().disarmed();
                    });
                }
                if done {
                    break;
                }
                let wake = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = wake => {}
                    _ = dead_men.changed.notified() => {}
                    Some(_) = work.join_next(), if !work.is_empty() => {}
                }
            }
            while work.join_next().await.is_some() {}
        })
    }

    /// Ends [`DeadMen::keep`] once the disarms asked for are done; switches still armed
    /// stay armed (their hosts' tasks did not end: no controller watches them now).
    pub async fn finish(&self, keeper: tokio::task::JoinHandle<()>) {
        self.inner.lock().expect("not poisoned").finishing = true;
        self.changed.notify_one();
        let _ = keeper.await;
    }

    fn disarmed(&self) {
        self.inner.lock().expect("not poisoned").disarming -= 1;
        self.changed.notify_one();
    }

    /// What is due now: re-arms, disarms, when to look again, and whether to stop.
    #[allow(clippy::type_complexity)]
    fn next_work(
        &self,
    ) -> (
        Vec<(HostId, String)>,
        Vec<(HostId, String, Option<Arc<dyn Connection>>)>,
        Option<Instant>,
        bool,
    ) {
        let mut inner = self.inner.lock().expect("not poisoned");
        let now = Instant::now();
        let mut disarms = Vec::new();
        for (host, connection) in std::mem::take(&mut inner.to_disarm) {
            if let Some(armed) = inner.armed.remove(&host) {
                disarms.push((host, armed.run, connection));
            }
        }
        inner.disarming += disarms.len();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let finishing = inner.finishing;
        for (&host, armed) in inner.armed.iter_mut() {
            let every = armed.bound / 3;
            if armed.last + every <= now {
                armed.last = now;
                due.push((host, armed.run.clone()));
            }
            let at = armed.last + every;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if finishing {
            due.clear();
        }
        let done = finishing && inner.disarming == 0 && disarms.is_empty();
        (due, disarms, next, done)
    }
}

async fn rearm(pool: &impl SwitchHosts, host: HostId, run: &str) {
    let command = rearm_command(run, host);
    let outcome = match pool.connection(host).await {
        Ok(connection) => connection.run(&command, Some(COMMAND_TIMEOUT)).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(out) if out.success() => report_fired(pool, host, &out.stdout),
        Ok(out) => tracing::warn!(
            "{}: re-arming its dead man's switch failed (exit {:?}): {}",
            pool.host_name(host),
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!(
            "{}: re-arming its dead man's switch failed: {e}",
            pool.host_name(host)
        ),
    }
}

async fn disarm(
    pool: &impl SwitchHosts,
    host: HostId,
    run: &str,
    connection: Option<Arc<dyn Connection>>,
) {
    let command = disarm_command(run, host);
    let connection = match connection {
        Some(connection) => Ok(connection),
        None => pool.fresh_connection(host).await,
    };
    let outcome = match connection {
        Ok(connection) => connection.run(&command, Some(COMMAND_TIMEOUT)).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(out) if out.success() => report_fired(pool, host, &out.stdout),
        Ok(out) => tracing::warn!(
            "{}: disarming its dead man's switch failed (exit {:?}); it may still fire",
            pool.host_name(host),
            out.exit_code
        ),
        Err(e) => tracing::warn!(
            "{}: disarming its dead man's switch failed ({e}); it may still fire",
            pool.host_name(host)
        ),
    }
}

/// A switch that fired while this controller lived (it could not re-arm in time: a
/// network partition, a stalled host) ran its rollback under the run: say so loudly.
fn report_fired(pool: &impl SwitchHosts, host: HostId, stdout: &[u8]) {
    for line in String::from_utf8_lossy(stdout).lines() {
        if let Some(what) = line.strip_prefix("fired ") {
            tracing::warn!(
                "{}: a dead man's switch fired although this controller was running ({what}): its step's rollback ran on the host",
                pool.host_name(host)
            );
        }
    }
}

/// Hosts a resume deploys again from their first task: a task of a `dead_man` step
/// started on them (so a switch was armed) and the host did not finish. Its switch may
/// have fired since and put the host back in service under a half-done release; its
/// steps are written to run again, so the safe course is all of them, the drain first.
pub fn in_flight_hosts(
    plan: &crate::plan::Plan,
    started: impl Fn(usize) -> bool,
    done: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut armed = vec![false; plan.inventory.hosts.len()];
    let mut unfinished = vec![false; plan.inventory.hosts.len()];
    for (node, task) in plan.tasks() {
        if task.per != crate::playbook::Per::Host {
            continue;
        }
        if plan.playbook.steps[task.step].dead_man.is_some() && started(node.index()) {
            armed[task.host] = true;
        }
        if !done(node.index()) {
            unfinished[task.host] = true;
        }
    }
    armed
        .iter()
        .zip(&unfinished)
        .map(|(a, u)| *a && *u)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, tmp: &std::path::Path) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("TMPDIR", tmp)
            .output()
            .expect("sh runs")
    }

    fn switch(rollback: &str) -> Switch {
        Switch {
            rollback: rollback.into(),
            bound: Duration::from_secs(1),
            run: "run_1".into(),
            host: 3,
            node: 7,
        }
    }

    fn wait_for(path: &std::path::Path) {
        for _ in 0..600 {
            if path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never appeared", path.display());
    }

    #[test]
    fn an_unattended_switch_runs_its_rollback_once_and_says_when() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("rolled-back");
        let s = switch(&format!("echo once >> '{}'", marker.display()));
        let out = sh(&s.arm_command(), tmp.path());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "armed");
        let folder = tmp
            .path()
            .join(format!("pony-{}/run_1/dm-h3", crate::sys::uid()));
        wait_for(&folder.join("t7.fired"));
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "once\n");
        let fired = std::fs::read_to_string(folder.join("t7.fired")).unwrap();
        assert!(fired.trim().ends_with(" 0"), "{fired}");
        // Arming the task again (a resume) reports the firing and keeps its log.
        let again = sh(&s.arm_command(), tmp.path());
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(stderr.contains("dead man's switch fired at"), "{stderr}");
        assert!(!folder.join("t7.fired").exists());
        let out = sh(&disarm_command("run_1", 3), tmp.path());
        assert!(out.status.success());
    }

    #[test]
    fn a_disarmed_switch_never_fires() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("rolled-back");
        let s = Switch {
            bound: Duration::from_secs(600),
            ..switch(&format!("echo fired >> '{}'", marker.display()))
        };
        assert!(sh(&s.arm_command(), tmp.path()).status.success());
        let folder = tmp
            .path()
            .join(format!("pony-{}/run_1/dm-h3", crate::sys::uid()));
        assert!(folder.join("t7.armed").exists());
        let out = sh(&rearm_command("run_1", 3), tmp.path());
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
        let out = sh(&disarm_command("run_1", 3), tmp.path());
        assert!(out.status.success(), "{out:?}");
        assert!(!folder.join("t7.armed").exists());
        assert!(!marker.exists());
    }

    #[test]
    fn a_planted_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(
            &elsewhere,
            tmp.path().join(format!("pony-{}", crate::sys::uid())),
        )
        .unwrap();
        let out = sh(&switch("true").arm_command(), tmp.path());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder of this user's own"));
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    }
}
