//! A host's chain of tasks as one script: the commands of tasks that follow one another
//! on the host, sent to its shell at once, run there in order, stopped at the first
//! failure, each command's output and exit status framed so that the controller can
//! tell them apart as they arrive. One round trip for the chain instead of one per task.
//!
//! Each command is marked and timed exactly as a task run alone is
//! ([`super::marked_command`]): its own process group, marker file and `timeout`. Before
//! each command after the first the script looks for the chain's cut file; the
//! controller writes it ([`cut_command`]) when the run stops and the rest of the chain
//! must not start.

use super::{
    marked_command, on_stdin, CommandOutput, TaskMark, TransportError, Wrapper,
    OWN_FOLDER_FUNCTION, UID,
};
use std::time::Duration;

/// One command of a chain: the task's rendered command, its `timeout`, its mark.
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub command: String,
    pub timeout: Option<Duration>,
    pub mark: TaskMark,
}

/// A link's result, sent as its frame arrives: its index in the chain and its output.
/// A link with no frame did not start on the host.
pub type ChainFrame = (usize, Result<CommandOutput, TransportError>);

/// The status word of the frame that ends a chain (after its last link, its first
/// failure, or a cut).
pub const END: &str = "end";

/// The line that names the chain's cut file in the run's marker folder.
fn cut_file(run: &str, cut: &str) -> String {
    format!("\"${{TMPDIR:-/tmp}}/pony-{UID}/{run}/{cut}.cut\"")
}

/// The script the host's shell runs for `links`: after each link a frame (`marker` and
/// the exit status, on stdout and on stderr), then the end frame. `cut` names the
/// chain's cut file (safe as a file name).
pub fn script(links: &[ChainLink], marker: &str, cut: &str) -> String {
    let run = links.first().map(|l| l.mark.run.as_str()).unwrap_or("_");
    let mut body = format!("pony_cut={}\n", cut_file(run, cut));
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            body.push_str("if [ -e \"$pony_cut\" ]; then rm -f \"$pony_cut\"; exit 0; fi\n");
        }
        let marked = marked_command(&link.command, link.timeout, &link.mark, Wrapper::ChainLink);
        body.push_str(&format!(
            "(eval {}) </dev/null; pony_k=$?\n\
             printf '\\n{marker} %d\\n' \"$pony_k\"; printf '\\n{marker} %d\\n' \"$pony_k\" >&2\n\
             [ \"$pony_k\" -eq 0 ] || exit 0\n",
            crate::shell::quote(&marked)
        ));
    }
    // A watcher reads the shell's stdin, where the controller writes nothing while the
    // chain runs: end of file means the controller is gone (killed, or it gave up on
    // the channel), and then the chain is cut, so no next task starts for nobody. It
    // is stopped before the end frame, so the shell's next command is not its to read.
    let watcher = format!(
        "(while read -r pony_l <&3; do :; done; {}) & pony_w=$!\n",
        write_cut(run, cut)
    );
    // The links run in one session of their own, which the chain makes once (one
    // `setsid` and one `sh` for all its links, where each link paid for both before):
    // its leader's `PONY_TASK` is the chain's token, which each link's marker names
    // beside the session's id (see [`Wrapper::ChainLink`]). A session killed under a
    // link ends with a signal's status and no frame for that link: the frame is
    // written here, as the link's own wrapper would have.
    // What the host's shell learnt once ([`crate::transport::shell_setup`]) reaches the
    // session's new `sh` through its environment: without it every link would ask for
    // the user's id and check the marker folder again (an `id`, a `mkdir` and a `chmod`).
    let body = format!(
        "pony_uid=$PONY_UID; pony_own_ok=$PONY_OWN_OK\n\
         pony_chain=; [ -z \"$PONY_SESSION\" ] || pony_chain=\"$$ $PONY_TASK\"\n{body}"
    );
    let session = format!(
        "exec 3<&-\n\
         pony_setsid=; command -v setsid >/dev/null 2>&1 && pony_setsid='setsid -w'\n\
         PONY_TASK={token}; PONY_HANDS={hands}; PONY_SESSION=$pony_setsid\n\
         PONY_UID=$pony_uid; PONY_OWN_OK=$pony_own_ok\n\
         export PONY_TASK PONY_HANDS PONY_SESSION PONY_UID PONY_OWN_OK\n\
         {launch}pony_r=$?\n\
         if [ $pony_r -gt 128 ]; then printf '\\n{marker} %d\\n' \"$pony_r\"; printf '\\n{marker} %d\\n' \"$pony_r\" >&2; fi\n",
        token = crate::shell::quote(&chain_token(links, cut)),
        hands = crate::shell::quote(links.first().map(|l| l.mark.hands.as_str()).unwrap_or("")),
        launch = on_stdin("$pony_setsid", &body),
    );
    let chain = format!(
        "{watcher}{session}{}\
         kill \"$pony_w\" 2>/dev/null; wait \"$pony_w\" 2>/dev/null; exit 0\n",
        remove_emptied_markers(run, links)
    );
    format!(
        "(eval {}) 3<&0 </dev/null; printf '\\n{marker} {END}\\n'; printf '\\n{marker} {END}\\n' >&2\n",
        crate::shell::quote(&chain)
    )
}

/// The `PONY_TASK` of a chain's session: its run and its cut's name, which no task's
/// token can be (those are `RUN/t<node>` and `RUN/r<node>`).
fn chain_token(links: &[ChainLink], cut: &str) -> String {
    let run = links.first().map(|l| l.mark.run.as_str()).unwrap_or("_");
    format!("{run}/chain-{cut}")
}

/// Removes, in one `rm`, the links' markers they left empty (see [`Wrapper::ChainLink`]);
/// a marker that names a process (a later controller's copy of the task) stays.
fn remove_emptied_markers(run: &str, links: &[ChainLink]) -> String {
    let tasks: Vec<&str> = links.iter().map(|l| l.mark.task.as_str()).collect();
    format!(
        "set --; for pony_t in {}; do\n\
         \x20 pony_m=\"${{TMPDIR:-/tmp}}/pony-{UID}/{run}/$pony_t.pid\"\n\
         \x20 [ -f \"$pony_m\" ] && [ ! -s \"$pony_m\" ] && set -- \"$@\" \"$pony_m\"\n\
         done; [ $# -eq 0 ] || rm -f \"$@\"\n",
        tasks.join(" ")
    )
}

/// The command that cuts the chain `cut` of run `run` (a [`TaskMark::run`]): the links
/// not started yet do not start.
pub fn cut_command(run: &str, cut: &str) -> String {
    format!("{}\n", write_cut(run, cut))
}

/// Writes the chain's cut file, only into the user's own marker folder.
fn write_cut(run: &str, cut: &str) -> String {
    format!(
        "{OWN_FOLDER_FUNCTION}pony_d=\"${{TMPDIR:-/tmp}}/pony-{UID}\"\n\
         if pony_own_folder \"$pony_d\"; then mkdir -p \"$pony_d/{run}\" && : 2>/dev/null > {}; fi",
        cut_file(run, cut)
    )
}

/// A link's output as a task's: `timeout` exits 124 (or 137 after -k) when it had to
/// kill the command, which is the task timing out.
pub fn link_result(
    link: &ChainLink,
    output: CommandOutput,
) -> Result<CommandOutput, TransportError> {
    match link.timeout {
        Some(limit) if matches!(output.exit_code, Some(124) | Some(137)) => {
            Err(TransportError::Timeout(limit))
        }
        _ => Ok(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(command: &str, task: &str) -> ChainLink {
        ChainLink {
            command: command.into(),
            timeout: Some(Duration::from_secs(30)),
            mark: TaskMark::new("run-1", task.into()),
        }
    }

    /// Starts `script` in `sh` with TMPDIR in `tmp`, and its stdin, which the caller
    /// keeps open as the controller keeps a host's shell's stdin while a chain runs.
    fn spawn_with_stdin_open(
        script: String,
        tmp: &std::path::Path,
    ) -> (std::process::Child, std::process::ChildStdin) {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("TMPDIR", tmp)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().expect("piped");
        (child, stdin)
    }

    /// Frames in order, the chain stops at the first failure, and a cut file stops it
    /// before the next link.
    #[test]
    fn a_chain_frames_each_link_and_stops_at_the_first_failure_or_a_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let sh = |script: String| {
            let (child, _open) = spawn_with_stdin_open(script, tmp.path());
            child.wait_with_output().unwrap()
        };
        let m = "__pony_9_9__";
        let links = [
            link("echo one", "t1"),
            link("echo two >&2; exit 3", "t2"),
            link("echo three", "t3"),
        ];
        let out = sh(script(&links, m, "c1-x"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout, format!("one\n\n{m} 0\n\n{m} 3\n\n{m} end\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, format!("\n{m} 0\ntwo\n\n{m} 3\n\n{m} end\n"));
        // Cut before the second link: the first one's frame, then the end.
        let out = sh(format!(
            "{}{}",
            cut_command("run-1", "c2-x"),
            script(&[link("echo one", "t1"), link("echo two", "t2")], m, "c2-x")
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("one\n\n{m} 0\n\n{m} end\n")
        );
        let uid = crate::sys::uid();
        assert!(!tmp
            .path()
            .join(format!("pony-{uid}/run-1/c2-x.cut"))
            .exists());
        // Each link emptied its marker, and the chain's end removed them.
        let markers: Vec<_> = std::fs::read_dir(tmp.path().join(format!("pony-{uid}/run-1")))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(markers.is_empty(), "{markers:?}");
        // The shell's stdin at its end (the controller is gone): no next link starts.
        let gone = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(
                &[
                    // Waits for the watcher's cut, not for a time.
                    link(
                        "until [ -e \"$TMPDIR/pony-$(id -u)/run-1/c3-x.cut\" ]; do sleep 0.01; done; echo one",
                        "t1",
                    ),
                    link("echo two", "t2"),
                ],
                m,
                "c3-x",
            ))
            .env("TMPDIR", tmp.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&gone.stdout),
            format!("one\n\n{m} 0\n\n{m} end\n")
        );
        assert_eq!(
            String::from_utf8_lossy(&gone.stderr),
            format!("\n{m} 0\n\n{m} end\n")
        );
    }

    /// With the host's shell set up, a chain of links without a `timeout` execs one
    /// `setsid` and one `sh` in all (its session), not one of each per link, and one
    /// `rm` of its markers at its end: counted by wrappers on a PATH that holds nothing
    /// else. Each link's marker names the chain's session.
    #[test]
    fn a_chain_execs_one_setsid_and_one_sh_for_all_its_links() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let count = tmp.path().join("execs");
        for program in ["setsid", "sh", "rm"] {
            let found = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {program}"))
                .output()
                .unwrap();
            let real = String::from_utf8(found.stdout).unwrap();
            let wrapper = bin.join(program);
            std::fs::write(
                &wrapper,
                format!(
                    "#!{}\necho {program} >> '{}'\nexec {} \"$@\"\n",
                    std::path::Path::new("/bin/sh").display(),
                    count.display(),
                    real.trim()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        let links: Vec<ChainLink> = ["t1", "t2", "t3", "t4", "t5"]
            .iter()
            .map(|task| ChainLink {
                // The link's marker, read by a builtin: it names the chain's session.
                command: "echo \"$PONY_TASK\"; read -r m < \"$pony_f\" && echo \"${m#* }\"".into(),
                timeout: None,
                mark: TaskMark::new("run-2", task.to_string()),
            })
            .collect();
        let m = "__pony_8_8__";
        // The run's first task on the host makes the run's folder (`mkdir`), before the
        // PATH narrows.
        let script = format!(
            "{}mkdir -p \"$TMPDIR/pony-$(id -u)/run-2\"\nPATH={}; export PATH\n{}",
            crate::transport::shell_setup(),
            bin.display(),
            script(&links, m, "c1-y")
        );
        let (child, _open) = spawn_with_stdin_open(script, tmp.path());
        let out = child.wait_with_output().unwrap();
        let frames: String = links
            .iter()
            .map(|l| format!("run-2/{}\nrun-2/chain-c1-y\n\n{m} 0\n", l.mark.task))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{frames}\n{m} end\n"),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Only frames on stderr: no "not found" of a program off the PATH (`id`, `mkdir`,
        // `chmod`, which each link ran before it had the shell's setup).
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{}\n{m} end\n", format!("\n{m} 0\n").repeat(links.len()))
        );
        let execs = std::fs::read_to_string(&count).unwrap();
        assert_eq!(
            execs, "setsid\nsh\nrm\n",
            "one session for the chain, one `rm` of its markers"
        );
        let uid = crate::sys::uid();
        let left: Vec<_> = std::fs::read_dir(tmp.path().join(format!("pony-{uid}/run-2")))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "markers left: {left:?}");
    }

    /// A kill of a running link (as a stopping run sends it: [`crate::transport::kill_command`])
    /// kills the chain's session, its `timeout`'s group included: the link gets its
    /// frame with the signal's status, no next link starts, and the marker is gone.
    #[test]
    fn a_kill_of_a_running_link_ends_its_chain_with_a_frame_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = crate::sys::uid();
        let started = tmp.path().join("started");
        let links = vec![
            link("echo one", "t1"),
            link(
                &format!("sleep 60 & echo $! > '{}'; wait", started.display()),
                "t2",
            ),
            link("echo three", "t3"),
        ];
        let m = "__pony_7_7__";
        let (chain, _open) = spawn_with_stdin_open(
            format!(
                "mkdir -p \"$TMPDIR/pony-$(id -u)/run-1\"\n{}",
                script(&links, m, "c4-x")
            ),
            tmp.path(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let sleeper = loop {
            if let Ok(pid) = std::fs::read_to_string(&started) {
                if !pid.trim().is_empty() {
                    break pid.trim().to_string();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the link never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let marker = tmp.path().join(format!("pony-{uid}/run-1/t2.pid"));
        let named = std::fs::read_to_string(&marker).unwrap();
        assert!(named.contains(" run-1/chain-c4-x"), "{named:?}");
        let kill = std::process::Command::new("sh")
            .arg("-c")
            .arg(crate::transport::kill_command(&links[1].mark))
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&kill.stdout).trim(), "killed");
        let out = chain.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("one\n\n{m} 0\n\n{m} 143\n\n{m} end\n")
        );
        assert!(!marker.exists(), "the kill removed the marker");
        assert!(
            !std::path::Path::new(&format!("/proc/{sleeper}")).exists()
                || std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "the link's child (in its `timeout`'s group) was killed"
        );
    }
}
