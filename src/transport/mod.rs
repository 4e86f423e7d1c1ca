//! Transports: how a host's commands reach it. One small trait, [`Connection`], with two
//! implementations: [`local`] (`sh` on the controller, in the host's own directory) and
//! [`ssh`] (one multiplexed OpenSSH master per host, commands as channels, SFTP writes).
//! [`connect`] opens either kind the one way every command does; [`shell`] is the
//! persistent remote `sh` and its output framing, which [`ssh`] runs its commands through
//! (the arrow points one way: `ssh` uses `shell`, `shell` knows nothing of `ssh`);
//! [`chain`] is the script that runs a host's chain of tasks in one round trip.

pub mod chain;
pub mod connect;
pub mod local;
pub mod shell;
pub mod ssh;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The whole error chain: the openssh crate puts ssh's own message in the source
/// (used by [`ssh`] and [`shell`] alike).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(cause_text.trim()) {
            text.push_str(": ");
            text.push_str(cause_text.trim());
        }
        source = cause.source();
    }
    text
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    /// `None` when the command was killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Why a transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not be reached (refused, unreachable, auth, host key, connect
    /// timeout). Retried with backoff before the task fails.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connecting failed for good: `attempts` attempts were made (retries included), the
    /// last one failing with `error`.
    #[error("cannot connect: {error}")]
    Unreachable { attempts: u32, error: String },
    /// The connection broke while a command ran.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The command ran longer than its step's `timeout` and was killed.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Whether trying again with a fresh connection may help.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_)
                | TransportError::Unreachable { .. }
                | TransportError::Disconnected(_)
        )
    }

    /// How many connection attempts were made, when this is the end of them.
    pub fn connect_attempts(&self) -> Option<u32> {
        match self {
            TransportError::Unreachable { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// A byte stream to a port on the host (for protocol probes).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// An open connection to one host. Commands reach a `sh` on its stdin, never as an
/// argument (see [`on_stdin`]). Dropping the last handle closes it (for ssh, the master
/// connection).
pub trait Connection: Send + Sync {
    /// Runs `command` in `sh`; with a timeout the command is killed when it expires.
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>>;

    /// Writes `content` to `path` on the host (callers write a temp name, then rename).
    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Connects to `127.0.0.1:port` as the host sees it: a port forward over the SSH
    /// connection (nothing to install on the host), or a plain connect for local hosts.
    /// A stream to `address:port` as the host sees it (its loopback, or one of its own
    /// addresses).
    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, TransportError>>;

    /// A simulated connection answers a protocol probe itself (nothing listens behind
    /// it); a real one has no answer and the probe speaks the protocol.
    fn simulated_probe(&self) -> Option<BoxFuture<'_, Result<String, String>>> {
        None
    }

    /// Whether nothing real stands behind it (a simulation): nothing is armed there.
    fn is_simulated(&self) -> bool {
        false
    }

    /// Runs `links` in order as one script in one round trip, stopping at the first
    /// failure, and sends each link's result on `frames` as its frame arrives (see
    /// [`chain`]); `cut` names the chain's cut file. An error means the connection broke
    /// before the next link's frame came. `None`: this connection runs no chains (the
    /// caller runs the tasks one by one).
    fn run_chain<'a>(
        &'a self,
        links: &'a [chain::ChainLink],
        cut: &'a str,
        frames: tokio::sync::mpsc::UnboundedSender<chain::ChainFrame>,
    ) -> Option<BoxFuture<'a, Result<(), TransportError>>> {
        let _ = (links, cut, frames);
        None
    }

    /// Kills what runs of the task `mark` on the host (its whole process group), and
    /// says whether it is gone.
    fn kill_marked<'a>(&'a self, mark: &'a TaskMark) -> BoxFuture<'a, KillOutcome> {
        let _ = mark;
        Box::pin(async { KillOutcome::NotMarked })
    }
}

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

/// Shell functions shared by the wrapper and the kill: `pony_alive PGID` (a process of
/// the group lives: zombies do not count, where `/proc` tells them apart) and
/// `pony_kill FILE TOKEN [HANDS]` (kills the group named in the marker FILE if it is the
/// task's, and with HANDS only if this controller started it; TERM then KILL after a
/// grace; prints `none`, `killed` or `alive`).
const KILL_FUNCTIONS: &str = r#"pony_alive() {
  pony_g=$1
  kill -s 0 -- -"$pony_g" 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  for pony_s in /proc/[0-9]*/stat; do
    read -r pony_l < "$pony_s" 2>/dev/null || continue
    set -- ${pony_l##*) }
    [ "$3" = "$pony_g" ] && [ "$1" != Z ] && [ "$1" != X ] && return 0
  done
  return 1
}
pony_kill() {
  pony_p=$(cat "$1" 2>/dev/null)
  case "$pony_p" in ''|*[!0-9]*) echo none; return 0;; esac
  pony_alive "$pony_p" || { echo none; return 0; }
  if [ -r "/proc/$pony_p/environ" ] && ! tr '\0' '\n' < "/proc/$pony_p/environ" | grep -qxF "PONY_TASK=$2"; then
    echo none; return 0
  fi
  if [ -n "$3" ] && [ -r "/proc/$pony_p/environ" ] && ! tr '\0' '\n' < "/proc/$pony_p/environ" | grep -qxF "PONY_HANDS=$3"; then
    echo none; return 0
  fi
  kill -s TERM -- -"$pony_p" 2>/dev/null
  pony_i=0
  while pony_alive "$pony_p" && [ $pony_i -lt 30 ]; do sleep 0.1; pony_i=$((pony_i+1)); done
  if pony_alive "$pony_p"; then kill -s KILL -- -"$pony_p" 2>/dev/null; sleep 0.2; fi
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
    /// A link of a chain: `setsid`; the marker is emptied (builtins only), and the
    /// chain removes its emptied markers in one go at its end ([`chain::script`]).
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
         \x20 pony_was=$(cat \"$pony_f\" 2>/dev/null)\n\
         \x20 case \"$(pony_kill \"$pony_f\" \"$PONY_TASK\")\" in\n\
         \x20   killed) echo \"pony: killed a copy of this task that an earlier controller left running (process group $pony_was)\" >&2;;\n\
         \x20   alive) echo \"pony: a copy of this task that an earlier controller left running (process group $pony_was) could not be killed; not starting\" >&2; exit 125;;\n\
         \x20 esac\n\
         fi\n",
    );
    if wrapper == Wrapper::OwnGroup {
        script.push_str("pony_me=$$\n[ -n \"$pony_f\" ] && echo $$ > \"$pony_f\"\n");
        // The local transport's own timer kills the group when `timeout` expires.
        let _ = timeout;
        script.push_str(&script_line(command));
        script.push_str("\npony_s=$?\n");
    } else {
        let launcher = match timeout {
            None => "$pony_setsid".to_string(),
            Some(t) => format!("$pony_setsid timeout -k 2 {}", t.as_secs_f64().max(0.001)),
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
         \x20 none) pony_p=$(cat \"$pony_f\" 2>/dev/null)\n\
         \x20   case \"$pony_p\" in ''|*[!0-9]*) rm -f \"$pony_f\";; *) pony_alive \"$pony_p\" || rm -f \"$pony_f\";; esac;;\n\
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
        Some(t) => on_stdin(
            &format!("timeout -k 2 {}", t.as_secs_f64().max(0.001)),
            command,
        ),
    }
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

    /// Once a host's shell is set up, a task's wrapper runs no program but `setsid` and
    /// the `sh` that runs its command: with only those two on the PATH, a chain link runs
    /// as it should, and its marker is left empty (the chain removes it).
    #[test]
    fn after_the_shell_setup_a_chain_link_runs_no_program_but_setsid_and_sh() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for program in ["setsid", "sh"] {
            let found = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {program}"))
                .output()
                .unwrap();
            let path = String::from_utf8(found.stdout).unwrap();
            std::os::unix::fs::symlink(path.trim(), bin.join(program)).unwrap();
        }
        let link = |task: &str| {
            let mark = TaskMark::new("run-2", task.into());
            let marked = marked_command("echo \"$PONY_TASK\"", None, &mark, Wrapper::ChainLink);
            format!("(eval {})\n", crate::shell::quote(&marked))
        };
        // The run's first task on the host makes the run's marker folder (`mkdir`).
        let script = format!(
            "{}{}PATH={}; export PATH\n{}",
            shell_setup(),
            link("t3"),
            bin.display(),
            link("t4")
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "no program but setsid and sh"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "run-2/t3\nrun-2/t4\n");
        assert_eq!(out.status.code(), Some(0));
        let uid = crate::sys::uid();
        let marker = tmp.path().join(format!("pony-{uid}/run-2/t4.pid"));
        assert_eq!(std::fs::read_to_string(marker).unwrap(), "", "emptied");
    }

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
