//! Verified rollbacks: a host counts as rolled back only when its rollback commands
//! succeeded and the playbook's `health:` checks pass afterwards; a rollback whose host
//! does not serve again is `rollback failed` (exit 3), named in the summary, the events,
//! the journal and `pony status`, never "rollback complete". Without a check the rollback
//! is "unverified", and the summary says so. Local hosts stand for the service: a host
//! "serves" while its `serving` file exists.

mod support;

use std::path::Path;
use support::{
    code, deploy_args, events, exit_text, journal, only_run, pony, text, write_plan, TINY_INVENTORY,
};

/// `switch` stops the old service and fails where `broken` exists; its rollback starts
/// the old service again, unless `no-restart` exists (a rollback that exits 0 over a
/// service that stays down: the trial's "rollback complete" over a dead MTA).
const STEPS: &str = r#"steps:
  - name: switch
    run: rm -f serving; touch new; test ! -e broken && touch serving
    rollback: rm -f new; if [ ! -e no-restart ]; then touch serving; fi
"#;

const HEALTH: &str = r#"health:
  wait: 1s
  every: 100ms
  checks:
    - { name: serving, run: "test -e serving" }
"#;

fn playbook(health: &str) -> String {
    format!("name: verified\nstrategy: {{ max_failures: 1 }}\n{health}{STEPS}")
}

/// Every host serves the old release before the run; `files` go into h1's folder.
fn prepare(state: &Path, files: &[&str]) {
    for host in ["h1", "h2", "h3", "h4"] {
        let dir = state.join("hosts").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("serving"), "").unwrap();
    }
    for file in files {
        std::fs::write(state.join("hosts/h1").join(file), "").unwrap();
    }
}

fn deploy(dir: &Path, health: &str, files: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let state = dir.join("state");
    prepare(&state, files);
    let (inventory, playbook) = write_plan(dir, TINY_INVENTORY, playbook(health));
    let mut args = deploy_args(&inventory, &playbook);
    args.extend(["--output", "json"]);
    (pony(&state, &args).output().unwrap(), state)
}

fn health_events(out: &std::process::Output) -> Vec<serde_json::Value> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "health_checked")
        .collect()
}

/// The health checks after rollbacks (the others come after each host's deploy).
fn after_rollback(out: &std::process::Output) -> Vec<serde_json::Value> {
    health_events(out)
        .into_iter()
        .filter(|e| e["after"] == "rollback")
        .collect()
}

#[test]
fn a_rollback_whose_host_does_not_serve_again_is_a_failed_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = deploy(dir.path(), HEALTH, &["broken", "no-restart"]);
    assert_eq!(code(&out), 3, "{}", exit_text(&out));
    assert!(
        !state.join("hosts/h1/serving").exists(),
        "h1 really is down"
    );
    let checks = after_rollback(&out);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0]["host"], "h1");
    assert_eq!(checks[0]["ok"], false);
    assert!(
        checks[0]["error"].as_str().unwrap().contains("serving"),
        "names the check: {}",
        checks[0]
    );
    let all = events(&out);
    let finished: Vec<_> = all
        .iter()
        .filter(|e| e["event"] == "host_finished" && e["host"] == "h1")
        .collect();
    assert_eq!(finished.last().unwrap()["outcome"], "rollback_failed");
    let ended = all
        .iter()
        .find(|e| e["event"] == "rollback_finished")
        .unwrap();
    assert_eq!(ended["ok"], false, "never complete: {ended}");
    let summary = all.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["rollback_failed"], 1, "{summary}");

    let (run_id, run) = only_run(&state);
    let record = journal(&run)
        .into_iter()
        .find(|r| r["type"] == "health_checked" && r["after"] == "rollback")
        .expect("journaled");
    assert_eq!(
        (record["host"].clone(), record["ok"].clone()),
        ("h1".into(), false.into())
    );
    let status = pony(&state, &["status", &run_id]).output().unwrap();
    let said = text(&status);
    assert!(
        said.contains("FAILED health@h1") && said.contains("serving"),
        "status names the host whose health did not come back:\n{said}"
    );

    // The human summary says it too, and never "rollback complete".
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    prepare(&state, &["broken", "no-restart"]);
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, playbook(HEALTH));
    let human = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    let said = text(&human);
    assert_eq!(code(&human), 3, "{said}");
    assert!(
        said.contains("ROLLBACK FAILED h1: its rollback ran, but its health did not come back"),
        "{said}"
    );
    assert!(
        !said.contains("rollback complete") && !said.contains("of host h1 complete"),
        "{said}"
    );
}

#[test]
fn a_rollback_whose_host_serves_again_is_rolled_back_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = deploy(dir.path(), HEALTH, &["broken"]);
    assert_eq!(code(&out), 1, "{}", exit_text(&out));
    assert!(state.join("hosts/h1/serving").exists());
    let checks = after_rollback(&out);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(
        (checks[0]["checked"].clone(), checks[0]["ok"].clone()),
        (true.into(), true.into())
    );
    let summary = events(&out)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .unwrap();
    assert_eq!(summary["rolled_back"], 1, "{summary}");
    assert_eq!(summary["rollback_failed"], 0, "{summary}");
}

#[test]
fn without_health_checks_a_rollback_is_unverified_and_the_summary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    prepare(&state, &["broken", "no-restart"]);
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, playbook(""));
    let out = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(code(&out), 1, "{said}");
    assert!(
        said.contains("unverified: 1 host(s) rolled back with no `health:` check to say they serve again (h1)"),
        "{said}"
    );
}

#[test]
fn a_health_check_that_names_no_host_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let health = "health:\n  checks:\n    - { name: smtp, hosts: mtaa, run: \"true\" }\n";
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, playbook(health));
    let out = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", exit_text(&out));
    assert!(
        text(&out).contains("health check `smtp` hosts `mtaa`"),
        "{}",
        text(&out)
    );
    assert!(!state.join("hosts/h1/new").exists(), "nothing ran");
}

/// `render` has no rollback and writes into the folder `stage` creates; `stage`'s
/// rollback removes that folder (the shipped mail playbook's `render-*` and `stage`).
const RELEASE: &str = r#"name: release
strategy: { max_failures: 1 }
steps:
  - { name: stage, run: mkdir -p rel, rollback: rm -rf rel }
  - { name: render, needs: [stage], run: "echo cfg > rel/cfg; echo x >> renders" }
  - { name: switch, needs: [render], run: "test -e rel/cfg && test ! -e broken", rollback: "true" }
"#;

#[test]
fn a_resume_deploys_a_rolled_back_host_again_from_its_first_task() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    prepare(&state, &["broken"]);
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, RELEASE);
    let first = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(
        code(&first),
        1,
        "h1 failed and was rolled back: {}",
        exit_text(&first)
    );
    assert!(
        !state.join("hosts/h1/rel").exists(),
        "stage's rollback removed the folder"
    );
    let (run_id, _) = only_run(&state);

    std::fs::remove_file(state.join("hosts/h1/broken")).unwrap();
    let resumed = pony(&state, &["resume", &run_id]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    assert_eq!(
        std::fs::read_to_string(state.join("hosts/h1/rel/cfg")).unwrap(),
        "cfg\n"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("hosts/h1/renders")).unwrap(),
        "x\nx\n",
        "render ran again on the rolled-back host"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("hosts/h2/renders")).unwrap(),
        "x\n",
        "a host that was not rolled back is not deployed again"
    );
}

/// Two waves (r1, then r2); `switch` puts the new release in service, which serves unless
/// `broken-new` exists. Health passes while the old or the new release serves.
const AFTER_DEPLOY: &str = r#"name: checked
strategy:
  max_failures: 1
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [r2] }
health:
  wait: 1s
  every: 100ms
  checks:
    - { name: serving, run: "test -e serving || test -e new-serving" }
steps:
  - name: switch
    run: rm -f serving; touch new; if [ ! -e broken-new ]; then touch new-serving; fi
    rollback: rm -f new new-serving; touch serving
"#;

#[test]
fn a_host_whose_health_does_not_pass_after_its_deploy_fails_and_the_wave_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    prepare(&state, &["broken-new"]);
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, AFTER_DEPLOY);
    let mut args = deploy_args(&inventory, &playbook);
    args.extend(["--output", "json"]);
    let out = pony(&state, &args).output().unwrap();
    assert_eq!(
        code(&out),
        1,
        "h1 failed its health and was rolled back: {}",
        exit_text(&out)
    );
    let h1 = state.join("hosts/h1");
    assert!(
        h1.join("serving").exists() && !h1.join("new").exists(),
        "h1 is back on the old release"
    );
    for host in ["h2", "h3", "h4"] {
        assert!(
            state.join("hosts").join(host).join("new-serving").exists(),
            "{host}"
        );
    }
    let all = events(&out);
    let checks: Vec<(String, String, bool)> = health_events(&out)
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["after"].as_str().unwrap().to_string(),
                e["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        checks.contains(&("h1".into(), "deploy".into(), false)),
        "{checks:?}"
    );
    assert!(
        checks.contains(&("h1".into(), "rollback".into(), true)),
        "{checks:?}"
    );
    for host in ["h2", "h3", "h4"] {
        assert!(
            checks.contains(&(host.into(), "deploy".into(), true)),
            "{checks:?}"
        );
    }
    let outcome = |host: &str| {
        all.iter()
            .rev()
            .find(|e| e["event"] == "host_finished" && e["host"] == host)
            .map(|e| e["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("h1").as_deref(), Some("rolled_back"));
    assert_eq!(outcome("h2").as_deref(), Some("ok"));
    // Wave `second` starts only once the first wave's hosts were judged healthy or not.
    let position =
        |wanted: &dyn Fn(&serde_json::Value) -> bool| all.iter().position(wanted).unwrap();
    let first_r2_task = position(&|e| e["event"] == "task_started" && e["task"]["region"] == "r2");
    for host in ["h1", "h2"] {
        let judged = position(&|e| {
            e["event"] == "health_checked" && e["host"] == host && e["after"] == "deploy"
        });
        assert!(
            judged < first_r2_task,
            "{host}'s health came before wave second"
        );
    }
    // The summary names the host and the failed check.
    let human = {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        prepare(&state, &["broken-new"]);
        let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, AFTER_DEPLOY);
        pony(&state, &deploy_args(&inventory, &playbook))
            .output()
            .unwrap()
    };
    let said = text(&human);
    assert!(
        said.contains("FAILED h1: its steps all ran, but its health does not pass: serving"),
        "{said}"
    );
    assert!(said.contains("h1") && said.contains("health"), "{said}");
}
