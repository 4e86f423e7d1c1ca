//! Dynamic inventories: an executable `-i` file is a command (a CMDB query, a cloud
//! script), run as Ansible runs an inventory script: `FILE --list`, its stdout the fleet.
//! The output is a pony inventory (YAML, or JSON: the same keys), or Ansible's `--list`
//! JSON, mapped as `pony inventory import` maps it with every host's region from its
//! `pony_region` variable (and cluster from `pony_cluster`). The command runs once, when
//! the run starts: the fleet it printed is what the run's snapshot keeps, so a resume or
//! rollback works on the fleet as it was then, whatever the command prints later.

use crate::diag::{Diagnostic, Diagnostics};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the command may take before it is killed and the load fails.
const BOUND: Duration = Duration::from_secs(120);

/// Whether `path` is a command to run rather than a file to read: executable by someone.
pub fn is_command(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs the command and returns the pony inventory YAML its output stands for.
pub fn fleet_text(path: &Path) -> Result<String, Diagnostics> {
    let fail =
        |problem: String, hint: &str| Diagnostics::from(Diagnostic::new(path, problem).hint(hint));
    let stdout = run(path).map_err(|problem| {
        fail(
            problem,
            "an executable inventory is run as `FILE --list` and must print the fleet; make it a plain file (chmod -x) to read it instead",
        )
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(&stdout).map_err(|e| {
        fail(
            format!("`{} --list` printed no inventory: {e}", path.display()),
            "print a pony inventory (YAML or JSON) or Ansible's `--list` JSON",
        )
    })?;
    if value.get("regions").is_some() {
        return Ok(stdout);
    }
    let groups = super::import::ansible::parse(&stdout, super::import::ansible::Format::Json)
        .map_err(|(_, problem)| {
            fail(
                format!("`{} --list` printed neither a pony inventory (no `regions`) nor Ansible's `--list` JSON: {problem}", path.display()),
                "print a pony inventory (YAML or JSON) or Ansible's `--list` JSON",
            )
        })?;
    let name = path
        .file_stem()
        .map(|s| {
            s.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "-",
            )
        })
        .unwrap_or_else(|| "dynamic".into());
    let mapping = super::import::GroupMapping {
        region_groups: None,
        cluster_groups: None,
    };
    super::import::import(&groups, &name, &mapping)
        .map(|imported| imported.yaml)
        .map_err(|problems| {
            let mut errors = Diagnostics::default();
            for problem in problems {
                errors.push(Diagnostic::new(path, problem).hint(
                    "a dynamic inventory's Ansible JSON gives each host `pony_region` (and `pony_cluster`) in its vars; or pipe it through `pony inventory import --region-groups …` in the script",
                ));
            }
            errors
        })
}

/// `path --list`'s stdout; its stderr and status when it fails.
fn run(path: &Path) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg("--list")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the inventory command: {e}"))?;
    // Both pipes are drained while it runs, so a chatty command cannot block on them.
    let mut stdout_pipe = child.stdout.take().expect("piped");
    let mut stderr_pipe = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout_pipe.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the inventory command did not finish within {}; it was killed",
                crate::duration::short(BOUND)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = err.join().unwrap_or_default();
    let stdout = out
        .join()
        .map_err(|_| "reading its output failed".to_string())?
        .map_err(|e| format!("its output is not UTF-8 text: {e}"))?;
    if !status.success() {
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "the inventory command `{} --list` failed ({status}): {}",
            path.display(),
            tail.join(" / ")
        ));
    }
    Ok(stdout)
}
