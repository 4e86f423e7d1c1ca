//! What a task's command is wrapped in on its host: its mark ([`TaskMark`]), the marker
//! file naming its process group, its own session and group (`setsid`), the kill of that
//! group by this or a later controller ([`kill_command`]), the remote `timeout`, and the
//! delivery of the command on a shell's stdin so that it never shows in `ps`.

use super::{CommandOutput, TransportError};
use std::time::Duration;

/// Which task a command belongs to, so that it can be killed as a whole later (by this
/// controller on a second Ctrl-C, or by the next one on resume). The scheduler scopes
/// each task's worker in [`MARK`]; commands run outside any scope (checks, health
/// probes, the kill itself) are not marked.
#[derive(Debug, Clone)]
pub struct TaskMark {
    /// The run id, made safe as one path component.
    pub run: String,
    /// The task within the run: `t<node>`, or `r<node>` for its rollback.
    pub task: String,
    /// This controller process (machine, pid, start): in the command's environment as
    /// `PONY_HANDS`, so that its own kill never takes a copy of the task that a later
    /// controller started in its place (a frozen controller woken after a takeover
    /// finds the marker naming the new copy; that one is not its to kill).
    pub hands: String,
}

/// This process's [`TaskMark::hands`].
fn these_hands() -> &'static str {
    static HANDS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HANDS.get_or_init(crate::process::unique_token)
}

tokio::task_local! {
    pub static MARK: TaskMark;
}

impl TaskMark {
    pub fn new(run: &str, task: String) -> Self {
        let run = run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string();
        TaskMark {
            run,
            task,
            hands: these_hands().to_string(),
        }
    }

    /// The mark of the worker this runs in, if any.
    pub fn current() -> Option<TaskMark> {
        MARK.try_with(|m| m.clone()).ok()
    }

    /// The value of `PONY_TASK` in the task's environment: how a marker's process group
    /// is told from an unrelated one that reused its number.
    pub fn token(&self) -> String {
        format!("{}/{}", self.run, self.task)
    }
}

/// How long the kill of one task's process group may take on its host (TERM, a grace
/// of 3 s, KILL), round trip included.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(15);

/// How a kill of a task's process group on its host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// Nothing of the task was running any more (it had ended, or had not started).
    Gone,
    /// Its process group was killed and is gone.
    Killed,
    /// The kill was sent, and its processes cannot be confirmed gone.
    Unconfirmed(String),
    /// The connection does not mark commands (simulated).
    NotMarked,
}

impl KillOutcome {
    /// For the journal and the log: what became of the task's commands on its host.
    pub fn describe(&self) -> String {
        match self {
            KillOutcome::Gone => "its command had ended on the host".into(),
            KillOutcome::Killed => "its command was killed on the host (confirmed)".into(),
            KillOutcome::Unconfirmed(why) => {
                format!("its command on the host could not be confirmed killed: {why}")
            }
            KillOutcome::NotMarked => "nothing to kill on the host".into(),
        }
    }
}

/// Shell functions shared by the wrapper and the kill. A marker file holds `ID` or
/// `ID TOKEN`: ID is a process group's id, which is also its session's where pony made the
/// session (`setsid`); TOKEN, where given, is the `PONY_TASK` of that group's leader (a
/// chain's links share their chain's session, whose leader carries the chain's token).
/// `pony_marker FILE` reads it into `pony_p` and `pony_t`; `pony_alive ID` (a process of
/// the group or the session lives: zombies do not count, where `/proc` tells them apart);
/// `pony_signal SIG ID` (the group, and every group of the session: a step's `timeout`
/// puts its command in a group of its own); `pony_kill FILE TOKEN [HANDS]` (kills what
/// the marker FILE names if it is the task's, and with HANDS only if this controller
/// started it; TERM then KILL after a grace; prints `none`, `killed` or `alive`).
const KILL_FUNCTIONS: &str = r#"pony_marker() {
  pony_p= pony_t=
  { read -r pony_p pony_t < "$1"; } 2>/dev/null
  case "$pony_p" in ''|*[!0-9]*) pony_p=; return 1;; esac
}
pony_alive() {
  pony_g=$1
  [ -r /proc/self/stat ] || { kill -s 0 -- -"$pony_g" 2>/dev/null; return; }
  for pony_s in /proc/[0-9]*/stat; do
    read -r pony_l < "$pony_s" 2>/dev/null || continue
    set -- ${pony_l##*) }
    { [ "$3" = "$pony_g" ] || [ "$4" = "$pony_g" ]; } && [ "$1" != Z ] && [ "$1" != X ] && return 0
  done
  return 1
}
pony_signal() {
  kill -s "$1" -- -"$2" 2>/dev/null
  [ -r /proc/self/stat ] || return 0
  for pony_s in /proc/[0-9]*/stat; do
    read -r pony_l < "$pony_s" 2>/dev/null || continue
    set -- "$1" "$2" ${pony_l##*) }
    [ "$6" = "$2" ] && [ "$5" != "$2" ] && kill -s "$1" -- -"$5" 2>/dev/null
  done
  return 0
}
pony_kill() {
  pony_marker "$1" || { echo none; return 0; }
  pony_t=${pony_t:-$2}
  pony_alive "$pony_p" || { echo none; return 0; }
  if [ -r "/proc/$pony_p/environ" ] && ! tr '\0' '\n' < "/proc/$pony_p/environ" | grep -qxF "PONY_TASK=$pony_t"; then
    echo none; return 0
  fi
  if [ -n "$3" ] && [ -r "/proc/$pony_p/environ" ] && ! tr '\0' '\n' < "/proc/$pony_p/environ" | grep -qxF "PONY_HANDS=$3"; then
    echo none; return 0
  fi
  pony_signal TERM "$pony_p"
  pony_i=0
  while pony_alive "$pony_p" && [ $pony_i -lt 30 ]; do sleep 0.1; pony_i=$((pony_i+1)); done
  if pony_alive "$pony_p"; then pony_signal KILL "$pony_p"; sleep 0.2; fi
  if pony_alive "$pony_p"; then echo alive; else echo killed; fi
}
"#;

/// `pony_own_folder DIR`: makes DIR if missing and succeeds only if it is a folder of
/// this user's own, not a link (then mode 0700). A folder planted by another user would
/// let them name what pony kills or runs; callers run unmarked or refuse.
pub const OWN_FOLDER_FUNCTION: &str = "pony_own_folder() {\n\
  mkdir -p -m 700 \"$1\" 2>/dev/null\n\
  [ -d \"$1\" ] && [ ! -L \"$1\" ] && [ -O \"$1\" ] && chmod 700 \"$1\"\n\
}\n";

/// The user's id, `$pony_uid` where the host's shell set it up ([`SHELL_SETUP`]), else
/// asked for (a fork and an exec of `id`).
pub const UID: &str = "${pony_uid:-$(id -u)}";

/// What a host's persistent shell sets up once, so that a task's wrapper forks no
/// process of its own beyond its command's: the user's id, and the marker folder checked
/// to be the user's own (`$pony_own_ok` names it). The `id`, `mkdir` and `chmod` a task
/// paid for these before cost the host about as much again as the task's own shell.
/// Silent: what it wrote would be read as the next command's output.
pub fn shell_setup() -> String {
    format!(
        r#"{{
{OWN_FOLDER_FUNCTION}pony_uid=$(id -u); pony_own_ok=
pony_d="${{TMPDIR:-/tmp}}/pony-$pony_uid"
pony_own_folder "$pony_d" && pony_own_ok=$pony_d
}} </dev/null >/dev/null 2>&1
"#
    )
}

/// The folder and file that name the task's process group on its host:
/// `${TMPDIR:-/tmp}/pony-<uid>/<run>/<task>.pid`, in a folder only its user can use
/// (when the folder is not that, the command runs unmarked: `pony_f` is empty). Only
/// builtins where the shell was set up ([`shell_setup`]) and the run's folder exists.
fn marker_lines(mark: &TaskMark) -> String {
    format!(
        "{OWN_FOLDER_FUNCTION}pony_d=\"${{TMPDIR:-/tmp}}/pony-{UID}\"; pony_f=\n\
         if [ \"$pony_own_ok\" = \"$pony_d\" ] || pony_own_folder \"$pony_d\"; then\n\
         \x20 {{ [ -d \"$pony_d/{run}\" ] || mkdir -p \"$pony_d/{run}\" 2>/dev/null; }} && pony_f=\"$pony_d/{run}/{task}.pid\"\n\
         fi\n\
         PONY_TASK={token}; export PONY_TASK\n\
         PONY_HANDS={hands}; export PONY_HANDS\n",
        run = mark.run,
        task = mark.task,
        token = crate::shell::quote(&mark.token()),
        hands = crate::shell::quote(&mark.hands),
    )
}

/// Where a marked command runs, which decides how it gets its own process group and
/// what becomes of its marker at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapper {
    /// A shell of its own that is already its group's leader (the local transport): no
    /// `setsid`; the marker is removed at the end.
    OwnGroup,
    /// A command sent alone to a host's shell: `setsid`; the marker is removed at the end.
    Alone,
    /// A link of a chain: no `setsid`, and no program but the step's `timeout`: the link
    /// runs in its chain's session, which the chain made once for all its links
    /// ([`super::chain::script`] sets `$pony_chain` to the marker's `ID TOKEN`). Killing
    /// the task kills the chain's session, which is what every kill of a running link
    /// wants: a stopping run, or a later controller taking the task over, wants none of
    /// the chain's next links either. The marker is emptied (builtins only), and the
    /// chain removes its emptied markers in one go at its end.
    ChainLink,
}

/// `command` run so that it can be killed as a whole: in its own session and process
/// group (`setsid`), with the group's id in the task's marker file for as long as it
/// runs. Before it starts, a copy of the same task that an earlier controller left
/// running there is killed (and the task's stderr says so). See [`Wrapper`] for where
/// it runs.
pub fn marked_command(
    command: &str,
    timeout: Option<Duration>,
    mark: &TaskMark,
    wrapper: Wrapper,
) -> String {
    let mut script = String::from(KILL_FUNCTIONS);
    script.push_str(&marker_lines(mark));
    script.push_str(
        "if [ -n \"$pony_f\" ] && [ -s \"$pony_f\" ]; then\n\
         \x20 pony_marker \"$pony_f\"; pony_was=$pony_p\n\
         \x20 case \"$(pony_kill \"$pony_f\" \"$PONY_TASK\")\" in\n\
         \x20   killed) echo \"pony: killed a copy of this task that an earlier controller left running (process group $pony_was)\" >&2;;\n\
         \x20   alive) echo \"pony: a copy of this task that an earlier controller left running (process group $pony_was) could not be killed; not starting\" >&2; exit 125;;\n\
         \x20 esac\n\
         fi\n",
    );
    match wrapper {
        Wrapper::OwnGroup => {
            script.push_str("pony_me=$$\n[ -n \"$pony_f\" ] && echo $$ > \"$pony_f\"\n");
            // The local transport's own timer kills the group when `timeout` expires.
            script.push_str(&script_line(command));
            script.push_str("\npony_s=$?\n");
        }
        Wrapper::ChainLink => {
            script.push_str("pony_me=$pony_chain\n[ -n \"$pony_f\" ] && [ -n \"$pony_me\" ] && echo \"$pony_me\" > \"$pony_f\"\n");
            match timeout {
                // A subshell: the command's `exit` ends the link, not the wrapper.
                None => script.push_str(&format!("({})", script_line(command))),
                Some(t) => script.push_str(&on_stdin(&timeout_launcher(t), command)),
            }
            script.push_str("\npony_s=$?\n");
        }
        Wrapper::Alone => {
            let launcher = match timeout {
                None => "$pony_setsid".to_string(),
                Some(t) => format!("$pony_setsid {}", timeout_launcher(t)),
            };
            script.push_str(
                "pony_setsid=; command -v setsid >/dev/null 2>&1 && pony_setsid='setsid -w'\n",
            );
            // In the background, so that its pid (its session's and group's id: `setsid`
            // runs it in place, a background job being no group leader) is known at once.
            let delimiter = here_document_delimiter(command);
            script.push_str(&format!(
                "{launcher} sh -s <<'{delimiter}' &\n{}\n{delimiter}\n",
                script_line(command)
            ));
            script.push_str("pony_c=$!; pony_me=$pony_c\n[ -n \"$pony_f\" ] && [ -n \"$pony_setsid\" ] && echo $pony_c > \"$pony_f\"\n");
            script.push_str("wait $pony_c\npony_s=$?\n");
        }
    }
    // The marker goes with the copy it names: a copy killed by a later controller must
    // not lose the marker of the copy that took its place. An empty marker names
    // nothing, as a missing one does; emptying it takes builtins only, where `rm` is a
    // process (a chain's links leave theirs empty for the chain to remove at once).
    script.push_str(
        "if [ -n \"$pony_f\" ]; then pony_x=; { read -r pony_x < \"$pony_f\"; } 2>/dev/null\n",
    );
    script.push_str(match wrapper {
        Wrapper::ChainLink => {
            "  [ \"$pony_x\" = \"$pony_me\" ] && { true > \"$pony_f\"; } 2>/dev/null\nfi\n"
        }
        _ => "  [ \"$pony_x\" = \"$pony_me\" ] && rm -f \"$pony_f\"\nfi\n",
    });
    script.push_str("exit $pony_s\n");
    script
}

/// The command that kills the task's process group (see [`marked_command`]) and prints
/// what became of it: `none`, `killed` or `alive` on its last line.
pub fn kill_command(mark: &TaskMark) -> String {
    // The marker is removed once its group is gone; a marker naming a live group that is
    // not this controller's (a later controller's copy of the task) is left to it.
    format!(
        "{KILL_FUNCTIONS}{}[ -n \"$pony_f\" ] || {{ echo none; exit 0; }}\n\
         pony_r=$(pony_kill \"$pony_f\" \"$PONY_TASK\" \"$PONY_HANDS\")\n\
         case \"$pony_r\" in\n\
         \x20 killed) rm -f \"$pony_f\";;\n\
         \x20 none) if pony_marker \"$pony_f\"; then pony_alive \"$pony_p\" || rm -f \"$pony_f\"; else rm -f \"$pony_f\"; fi;;\n\
         esac\n\
         echo \"$pony_r\"\n",
        marker_lines(mark)
    )
}

/// Reads what [`kill_command`] printed.
pub fn kill_outcome(output: Result<CommandOutput, TransportError>) -> KillOutcome {
    match output {
        Err(e) => KillOutcome::Unconfirmed(e.to_string()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text.lines().last().map(str::trim) {
                Some("none") => KillOutcome::Gone,
                Some("killed") => KillOutcome::Killed,
                Some("alive") => {
                    KillOutcome::Unconfirmed("its processes were still alive after SIGKILL".into())
                }
                _ => KillOutcome::Unconfirmed(format!(
                    "the kill said {:?} (exit {:?}): {}",
                    text.trim(),
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
    }
}

/// The remote command that kills `command` when `timeout` expires, even if the
/// controller loses the connection. The command reaches the `sh` under `timeout` on its
/// stdin ([`on_stdin`]), so it never shows in the host's process list.
pub fn with_remote_timeout(command: &str, timeout: Option<Duration>) -> String {
    match timeout {
        None => command.to_string(),
        Some(t) => on_stdin(&timeout_launcher(t), command),
    }
}

/// `timeout` with the step's limit, and a KILL 2 s after its TERM.
fn timeout_launcher(limit: Duration) -> String {
    format!("timeout -k 2 {}", limit.as_secs_f64().max(0.001))
}

/// A command line that runs `launcher sh -s` (e.g. `sudo -n sh -s`) and feeds `command`
/// to that `sh` in a here-document: the command text travels on the new shell's stdin,
/// never in any process's arguments (which every user of the host can read in
/// `/proc/*/cmdline`, and which sudo logs). Inside, the command is one `eval` line with
/// stdin from `/dev/null`, so the shell has parsed all of it before it runs and the
/// command cannot read the rest of its own script. The delimiter is derived from the
/// command, so that no line of the command can end the here-document early.
pub fn on_stdin(launcher: &str, command: &str) -> String {
    let delimiter = here_document_delimiter(command);
    format!(
        "{launcher} sh -s <<'{delimiter}'\n{}\n{delimiter}\n",
        script_line(command)
    )
}

/// What a shell reading commands from stdin is given to run `command` once, with its
/// stdin from `/dev/null`.
pub fn script_line(command: &str) -> String {
    format!("eval {} </dev/null", crate::shell::quote(command))
}

fn here_document_delimiter(command: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(command.as_bytes());
    format!("PONY_{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn a_command_on_stdin_keeps_its_quotes_exit_status_and_no_stdin() {
        let command = "printf '%s|' \"$0\" 'it'\\''s' \"$(cat)\"; echo; exit 7";
        let out = sh(&on_stdin("env", command));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sh|it's||\n");
        assert_eq!(out.status.code(), Some(7));
        // Nested, as `become` under a timeout is, and with a line like a delimiter.
        let inner = on_stdin("env", "echo PONY_0000000000000000; echo done");
        let out = sh(&with_remote_timeout(&inner, Some(Duration::from_secs(30))));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "PONY_0000000000000000\ndone\n"
        );
        assert!(out.status.success());
    }

    #[test]
    fn a_marked_command_keeps_its_status_and_timeout_and_leaves_no_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let mark = TaskMark::new("run/../x y", "t3".into());
        assert_eq!(mark.run, "run_.._x_y");
        let run = |script: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR", tmp.path())
                .output()
                .unwrap()
        };
        let out = run(marked_command(
            "echo \"$PONY_TASK\"; exit 7",
            None,
            &mark,
            Wrapper::Alone,
        ));
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "run_.._x_y/t3\n");
        let out = run(marked_command(
            "sleep 5",
            Some(Duration::from_millis(50)),
            &mark,
            Wrapper::Alone,
        ));
        assert_eq!(out.status.code(), Some(124));
        let uid = crate::sys::uid();
        let folder = tmp.path().join(format!("pony-{uid}/run_.._x_y"));
        assert!(folder.is_dir());
        assert_eq!(
            std::fs::read_dir(&folder).unwrap().count(),
            0,
            "no marker left"
        );
        // Nothing runs: the kill finds nothing.
        let out = run(kill_command(&mark));
        assert_eq!(
            kill_outcome(Ok(CommandOutput {
                exit_code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })),
            KillOutcome::Gone
        );
    }

    /// A controller's kill takes only the copy of the task it started itself: a copy
    /// that a later controller started in its place (same run, same task, the marker
    /// now naming it) is left running with its marker, as a woken frozen controller
    /// must leave the run that took over.
    #[test]
    fn a_kill_leaves_a_copy_of_the_task_that_another_controller_started() {
        let tmp = tempfile::tempdir().unwrap();
        let run = |script: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR", tmp.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let outcome = |child: std::process::Child| {
            let out = child.wait_with_output().unwrap();
            kill_outcome(Ok(CommandOutput {
                exit_code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            }))
        };
        let mut old = TaskMark::new("r1", "t0".into());
        old.hands = "old-controller".into();
        let mut new = old.clone();
        new.hands = "new-controller".into();
        let uid = crate::sys::uid();
        let marker = tmp.path().join(format!("pony-{uid}/r1/t0.pid"));
        // The new controller's copy runs (until killed), its group in the marker.
        let mut copy = run(marked_command("sleep 30", None, &new, Wrapper::Alone));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(&marker).map_or(true, |m| m.trim().is_empty()) {
            assert!(std::time::Instant::now() < deadline, "no marker written");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(outcome(run(kill_command(&old))), KillOutcome::Gone);
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the old hands killed it"
        );
        assert!(marker.exists(), "the old hands removed its marker");
        assert_eq!(outcome(run(kill_command(&new))), KillOutcome::Killed);
        copy.wait().unwrap();
        assert!(!marker.exists());
    }

    #[test]
    fn a_timed_out_command_is_killed_with_timeouts_status() {
        let out = sh(&with_remote_timeout(
            "sleep 5",
            Some(Duration::from_millis(50)),
        ));
        assert_eq!(out.status.code(), Some(124));
    }
}
