//! `dead_man:` over the real sshd fleet: a controller killed with SIGKILL while its hosts
//! are drained leaves none drained (the watchdog on each host runs the drain's rollback,
//! with no pony process left), and a resume drains them again before it goes on; a live
//! controller keeps its switches from firing through a step longer than the bound, and
//! leaves none armed and no watchdog running once the hosts are done.

mod support;

use std::path::{Path, PathBuf};
use support::{code, exit_text, lab, only_run, wait_until, Lab};

/// `drain` marks the host drained (and counts itself), `work` holds until the test opens
/// the gate, `accept` puts the host back in service. The drain's rollback (what the
/// switch runs) counts itself too.
const DRAINED: &str = r#"
name: drained
strategy: { max_unavailable: 100% }
steps:
  - name: drain
    run: "touch {{ root }}/drained; echo drain >> {{ root }}/count-drain"
    rollback: "rm -f {{ root }}/drained; echo undrain >> {{ root }}/count-undrain"
    dead_man: BOUND
  - { name: work, needs: [drain], run: "touch {{ root }}/work-started; while [ ! -e GATE ]; do sleep 0.05; done" }
  - { name: accept, needs: [work], run: "rm -f {{ root }}/drained; echo accept >> {{ root }}/count-accept" }
"#;

fn playbook(lab: &Lab, bound: &str) -> PathBuf {
    lab.playbook(
        &DRAINED
            .replace("BOUND", bound)
            .replace("GATE", lab.path("gate").to_str().unwrap()),
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The run's switch folders on the hosts (all hosts of the lab share this machine's
/// `/tmp`; each host has its own `dm-h<host>`).
fn switch_folders(run: &str) -> Vec<PathBuf> {
    let run_folder = PathBuf::from(format!("/tmp/pony-{}/{run}", unsafe { libc::getuid() }));
    std::fs::read_dir(&run_folder)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("dm-h"))
                .collect()
        })
        .unwrap_or_default()
}

fn files_ending(folders: &[PathBuf], suffix: &str) -> Vec<PathBuf> {
    folders
        .iter()
        .flat_map(|f| std::fs::read_dir(f).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Watchdog processes of this run still alive (their arguments name its folder).
fn watchdogs(run: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("pony-dead-man") && c.contains(run)
            })
        })
        .collect()
}

fn journal(run_dir: &Path) -> Vec<serde_json::Value> {
    support::journal(run_dir)
}

#[test]
fn a_controller_killed_while_its_hosts_are_drained_leaves_none_drained() {
    let lab = lab();
    let playbook = playbook(&lab, "2s");
    let hosts = lab.host_names();
    let mut child = lab.spawn_deploy(&playbook, &[]);
    wait_until("every host drained and working", || {
        hosts
            .iter()
            .all(|h| lab.root(h).join("work-started").exists())
    });
    for host in &hosts {
        assert!(lab.root(host).join("drained").exists(), "{host}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // No pony process is left; the switches on the hosts put every host back.
    wait_until("every host back in service", || {
        hosts.iter().all(|h| {
            !lab.root(h).join("drained").exists() && lines(&lab.root(h).join("count-undrain")) > 0
        })
    });
    let (run, run_dir) = only_run(&lab.state);
    for host in &hosts {
        let root = lab.root(host);
        assert_eq!(lines(&root.join("count-undrain")), 1, "{host}: fired once");
        assert_eq!(lines(&root.join("count-accept")), 0, "{host}");
    }
    let folders = switch_folders(&run);
    assert_eq!(folders.len(), hosts.len(), "{folders:?}");
    let fired = files_ending(&folders, ".fired");
    assert_eq!(fired.len(), hosts.len(), "{fired:?}");
    for file in &fired {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.trim().ends_with(" 0"), "{}: {text}", file.display());
    }
    wait_until("the watchdogs ended", || watchdogs(&run).is_empty());

    // `pony status` names the hosts left under a switch; with --hosts it reads them.
    let status = lab.pony(&["status", &run]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!(
            "dead man's switches: {} hosts were in flight",
            hosts.len()
        )) && text.contains(&format!("status {run} --hosts")),
        "{text}"
    );
    let checked = switches_read(&lab, &run);
    assert_eq!(checked.len(), hosts.len(), "{checked:#?}");
    for host in &hosts {
        let seen = &checked[host.as_str()];
        assert_eq!(seen.len(), 1, "{host}: {seen:#?}");
        assert_eq!(seen[0]["task"], format!("drain@{host}"), "{seen:#?}");
        assert_eq!(seen[0]["state"], "fired", "{seen:#?}");
        assert_eq!(seen[0]["rollback_exit"], 0, "{seen:#?}");
        assert!(
            seen[0]["fired_at"]
                .as_str()
                .is_some_and(|at| at.ends_with('Z')),
            "{seen:#?}"
        );
    }
    let human = lab.pony(&["status", &run, "--hosts"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert_eq!(
        human.matches(", rollback exit 0; a resume deploys").count(),
        hosts.len(),
        "{human}"
    );

    // The resume drains every host again before anything else, and says the switch fired.
    std::fs::write(lab.path("gate"), "").unwrap();
    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    for host in &hosts {
        let root = lab.root(host);
        assert_eq!(lines(&root.join("count-drain")), 2, "{host}: drained again");
        assert_eq!(lines(&root.join("count-accept")), 1, "{host}");
        assert_eq!(lines(&root.join("count-undrain")), 1, "{host}");
        assert!(!root.join("drained").exists(), "{host}");
    }
    let reported: Vec<String> = journal(&run_dir)
        .iter()
        .filter(|r| r["type"] == "task_finished")
        .filter(|r| {
            r["label"]
                .as_str()
                .unwrap_or_default()
                .starts_with("drain@")
        })
        .filter(|r| r.to_string().contains("dead man's switch fired at"))
        .map(|r| r["label"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(reported.len(), hosts.len(), "{reported:?}");
    assert!(files_ending(&folders, ".armed").is_empty());
    wait_until("no watchdog left", || watchdogs(&run).is_empty());
    // The run is done: no host is left under a switch, so status names none.
    let status = lab
        .pony(&["status", &run, "--output", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status.get("switches").is_none(), "{status:#}");
}

/// What `pony status RUN --hosts --output json` read on each host: its switches.
fn switches_read(
    lab: &Lab,
    run: &str,
) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    let out = lab
        .pony(&["status", run, "--hosts", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["switches"]["checked"]
        .as_array()
        .unwrap_or_else(|| panic!("no switches read: {status:#}"))
        .iter()
        .map(|h| {
            assert!(h["error"].is_null(), "{h}");
            (
                h["host"].as_str().unwrap().to_string(),
                h["switches"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

#[test]
fn status_reads_the_switches_a_killed_controller_left_armed_and_a_resume_disarms_them() {
    let lab = support::lab_with(1, 1, 2);
    let playbook = playbook(&lab, "10m");
    let hosts = lab.host_names();
    let mut child = lab.spawn_deploy(&playbook, &[]);
    wait_until("every host drained and working", || {
        hosts
            .iter()
            .all(|h| lab.root(h).join("work-started").exists())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (run, _) = only_run(&lab.state);
    let checked = switches_read(&lab, &run);
    assert_eq!(checked.len(), hosts.len(), "{checked:#?}");
    for host in &hosts {
        let seen = &checked[host.as_str()];
        assert_eq!(seen.len(), 1, "{host}: {seen:#?}");
        assert_eq!(seen[0]["state"], "armed", "{seen:#?}");
        assert!(seen[0]["fired_at"].is_null(), "{seen:#?}");
        // Reading changed nothing: the host is still drained, the switch still armed.
        assert!(lab.root(host).join("drained").exists(), "{host}");
    }
    assert_eq!(
        files_ending(&switch_folders(&run), ".armed").len(),
        hosts.len()
    );

    std::fs::write(lab.path("gate"), "").unwrap();
    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    assert!(files_ending(&switch_folders(&run), ".armed").is_empty());
    wait_until("no watchdog left", || watchdogs(&run).is_empty());
    for host in &hosts {
        assert_eq!(
            lines(&lab.root(host).join("count-undrain")),
            0,
            "{host}: never fired"
        );
    }
}

#[test]
fn a_live_controller_keeps_its_switches_from_firing_and_disarms_them_at_the_end() {
    let lab = support::lab_with(1, 1, 2);
    let bound = 6;
    let playbook = playbook(&lab, &format!("{bound}s"));
    let hosts = lab.host_names();
    let child = lab.spawn_deploy(&playbook, &[]);
    wait_until("every host drained and working", || {
        hosts
            .iter()
            .all(|h| lab.root(h).join("work-started").exists())
    });
    // Hold the step until the switches have been re-armed past their bound: each
    // `armed` file's time, as the hosts' clock reads it, moves on beyond it.
    let run = {
        let (run, _) = only_run(&lab.state);
        run
    };
    let armed = || files_ending(&switch_folders(&run), ".armed");
    let mtime = |p: &PathBuf| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
            .unwrap_or(0)
    };
    let first: Vec<u64> = armed().iter().map(mtime).collect();
    assert_eq!(first.len(), hosts.len(), "{:?}", armed());
    wait_until("the switches re-armed past their bound", || {
        let now: Vec<u64> = armed().iter().map(mtime).collect();
        now.len() == first.len() && now.iter().zip(&first).all(|(n, f)| *n > f + bound + 2)
    });
    for host in &hosts {
        assert_eq!(lines(&lab.root(host).join("count-undrain")), 0, "{host}");
        assert!(lab.root(host).join("drained").exists(), "{host}");
    }
    std::fs::write(lab.path("gate"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    for host in &hosts {
        let root = lab.root(host);
        assert_eq!(lines(&root.join("count-undrain")), 0, "{host}: never fired");
        assert_eq!(lines(&root.join("count-accept")), 1, "{host}");
        assert!(!root.join("drained").exists(), "{host}");
    }
    let folders = switch_folders(&run);
    assert_eq!(folders.len(), hosts.len());
    assert!(armed().is_empty(), "disarmed at the end: {:?}", armed());
    assert!(files_ending(&folders, ".fired").is_empty());
    wait_until("no watchdog left", || watchdogs(&run).is_empty());
}

#[test]
fn dead_man_without_a_rollback_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = support::write_plan(
        dir.path(),
        support::TINY_INVENTORY,
        "name: p\nsteps:\n  - { name: drain, run: \"touch drained\", dead_man: 10m }\n  - { name: fast, run: \"true\", rollback: \"true\", dead_man: 1s }\n",
    );
    let state = dir.path().join("state");
    let args = support::deploy_args(&inventory, &playbook);
    let out = support::pony(&state, &args).output().unwrap();
    assert_eq!(code(&out), 2, "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`dead_man` without `rollback`"), "{stderr}");
    assert!(stderr.contains("at least 2s"), "{stderr}");
    assert!(stderr.contains("playbook.yaml"), "{stderr}");
    assert!(!state.join("runs").exists());
}
