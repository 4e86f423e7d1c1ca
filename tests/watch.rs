//! `pony watch`: a controller killed with hosts in flight is told about by the watcher —
//! through the run's own `notify:` and `--notify` — once per dead controller; a live run,
//! a finished one and one stopped by a person (Ctrl-C) are not.

mod support;

use std::path::Path;
use std::process::Stdio;
use support::{
    code, deploy_args, exit_text, only_run, pony, wait_until, write_plan, TINY_INVENTORY,
};

/// `hold` waits for the gate on every host; the run's own notifier appends each event it
/// gets to `told-by-playbook`.
fn plan(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let gate = dir.join("gate");
    let told = dir.join("told-by-playbook");
    write_plan(
        dir,
        TINY_INVENTORY,
        format!(
            "name: held\nnotify: [\"cat >> {told}; echo >> {told}\"]\nsteps:\n  - {{ name: hold, run: \"touch started; while [ ! -e {gate} ]; do sleep 0.05; done\" }}\n",
            told = told.display(),
            gate = gate.display(),
        ),
    )
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "controller_gone")
        .collect()
}

#[test]
fn a_killed_controller_with_hosts_in_flight_is_told_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = plan(dir.path());
    let state = dir.path().join("state");
    let mut deploy = pony(&state, &deploy_args(&inventory, &playbook))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hosts = ["h1", "h2", "h3", "h4"];
    wait_until("every host in flight", || {
        hosts
            .iter()
            .all(|h| state.join(format!("hosts/{h}/started")).exists())
    });
    let told = dir.path().join("told-by-watch");
    let notify = format!("cat >> {}; echo >> {}", told.display(), told.display());
    let watch = || {
        pony(&state, &["watch", "--notify", &notify])
            .output()
            .unwrap()
    };

    // While the controller lives, nothing is said.
    let out = watch();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    assert!(events(&told).is_empty(), "{}", exit_text(&out));

    deploy.kill().unwrap();
    deploy.wait().unwrap();
    let (run, _) = only_run(&state);
    let out = watch();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("run {run}: its controller"))
            && said.contains("4 host(s) in flight (h1, h2, h3, h4)")
            && said.contains(&format!("pony resume {run}")),
        "{said}"
    );
    for file in [&told, &dir.path().join("told-by-playbook")] {
        let gone = events(file);
        assert_eq!(gone.len(), 1, "{}: {gone:?}", file.display());
        assert_eq!(gone[0]["run_id"], run.as_str());
        assert_eq!(gone[0]["hosts_in_flight"], serde_json::json!(hosts));
        assert!(gone[0]["resume"].as_str().unwrap().contains(&run));
    }

    // Once per dead controller: a second pass tells nobody again.
    let out = watch();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    assert_eq!(events(&told).len(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("is gone"));

    // A resumed run that finishes is not news either.
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let resumed = pony(&state, &["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    watch();
    assert_eq!(events(&told).len(), 1);
}

#[test]
fn a_run_a_person_stopped_is_not_a_dead_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = plan(dir.path());
    let state = dir.path().join("state");
    let mut args = deploy_args(&inventory, &playbook);
    args.extend(["--output", "json"]);
    let mut deploy = pony(&state, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a host in flight", || {
        state.join("hosts/h1/started").exists()
    });
    unsafe { libc::kill(deploy.id() as i32, libc::SIGINT) };
    // The stop is under way before the hosts' step may end.
    let mut stdout = std::io::BufReader::new(deploy.stdout.take().unwrap());
    support::read_events_until(&mut stdout, |e| e["event"] == "stopped");
    std::fs::write(dir.path().join("gate"), "").unwrap();
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let out = deploy.wait_with_output().unwrap();
    assert_eq!(code(&out), 130);
    let told = dir.path().join("told-by-watch");
    let notify = format!("cat >> {}", told.display());
    let out = pony(&state, &["watch", "--notify", &notify])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    assert!(events(&told).is_empty());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{}",
        exit_text(&out)
    );
}
