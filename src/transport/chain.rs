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
    marked_command, CommandOutput, TaskMark, TransportError, Wrapper, OWN_FOLDER_FUNCTION, UID,
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
    let chain = format!(
        "{watcher}(eval {}) </dev/null 3<&-; pony_r=$?\n{}\
         kill \"$pony_w\" 2>/dev/null; wait \"$pony_w\" 2>/dev/null; exit $pony_r\n",
        crate::shell::quote(&body),
        remove_emptied_markers(run, links)
    );
    format!(
        "(eval {}) 3<&0 </dev/null; printf '\\n{marker} {END}\\n'; printf '\\n{marker} {END}\\n' >&2\n",
        crate::shell::quote(&chain)
    )
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

    /// Frames in order, the chain stops at the first failure, and a cut file stops it
    /// before the next link.
    #[test]
    fn a_chain_frames_each_link_and_stops_at_the_first_failure_or_a_cut() {
        let tmp = tempfile::tempdir().unwrap();
        // With the shell's stdin open, as the controller keeps it while a chain runs.
        let sh = |script: String| {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR", tmp.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let _open = child.stdin.take();
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
}
