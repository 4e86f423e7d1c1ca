//! Handlers (`listen:`) and `changed_when:` on real sshd hosts: a handler runs on a
//! host only when a step it listens to changed something there (a template whose file
//! differed, a `run` whose `changed_when` says so), once, after them; elsewhere it ends
//! skipped with its reason in the journal, and what `needs` it still runs. A resume
//! after the controller was killed between a notifier and its handler still runs the
//! handler where the notifier's change is journaled. `plan`, `--dry-run` and `--check`
//! say what a handler listens to. (Bad `listen`/`changed_when` are cases of tests/bad.)

mod support;

use serde_json::Value;
use std::path::Path;
use support::{code, journal, lab_with, only_run, text, wait_until, Lab};

const TEMPLATE: &str = "listen = 25\nbanner = {{ banner }}\n";

/// The file `config` renders (the same on every host).
fn rendered(banner: &str) -> String {
    format!("listen = 25\nbanner = {banner}\n")
}

/// Lines of a marker file on a host (none when it is missing).
fn lines(lab: &Lab, host: &str, file: &str) -> Vec<String> {
    std::fs::read_to_string(lab.root(host).join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The last `task_finished` record of `label` in the run's journal.
fn finished(run_dir: &Path, label: &str) -> Value {
    journal(run_dir)
        .into_iter()
        .rev()
        .find(|r| r["type"] == "task_finished" && r["label"] == label)
        .unwrap_or_else(|| panic!("no task_finished for {label}"))
}

const PLAYBOOK: &str = r#"name: handlers
vars: { banner: pony }
steps:
  - name: config
    template: { src: app.conf.j2, dest: "{{ root }}/app.conf" }
  - name: read config
    needs: [config]
    run: cat {{ root }}/app.conf
    changed_when: false
  - name: migrate
    needs: [config]
    run: if [ -e {{ root }}/migrated ]; then echo already migrated; else touch {{ root }}/migrated; echo migrated now; fi
    changed_when: { stdout_contains: "migrated now" }
  - name: reload
    listen: [config]
    run: echo reload >> {{ root }}/reloads
  - name: health after reload
    needs: [reload]
    run: echo checked >> {{ root }}/checked
  - name: on read
    listen: [read config]
    run: touch {{ root }}/read-handled
  - name: after migration
    listen: [migrate]
    run: echo handled >> {{ root }}/migration-handled
"#;

#[test]
fn a_handler_runs_only_where_what_it_listens_to_changed_and_is_journaled_skipped_elsewhere() {
    let lab = lab_with(1, 1, 3);
    let hosts = lab.host_names();
    let (changed, in_place, migrated) = (&hosts[0], &hosts[1], &hosts[2]);
    std::fs::write(lab.path("app.conf.j2"), TEMPLATE).unwrap();
    // The file is already in place on one host; another was migrated before.
    std::fs::write(lab.root(in_place).join("app.conf"), rendered("pony")).unwrap();
    std::fs::write(lab.root(migrated).join("migrated"), "").unwrap();
    let playbook = lab.playbook(PLAYBOOK);

    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in &hosts {
        assert_eq!(
            std::fs::read_to_string(lab.root(host).join("app.conf")).unwrap(),
            rendered("pony")
        );
        // A skipped handler is done: what needs it runs, once.
        assert_eq!(lines(&lab, host, "checked"), ["checked"], "{host}");
        // `changed_when: false`: its handler never runs.
        assert!(!lab.root(host).join("read-handled").exists(), "{host}");
    }
    // The template changed the file on two hosts: the handler ran there, once each.
    assert_eq!(lines(&lab, changed, "reloads"), ["reload"]);
    assert_eq!(lines(&lab, migrated, "reloads"), ["reload"]);
    assert!(lines(&lab, in_place, "reloads").is_empty());
    // `stdout_contains`: the migration changed something where it was not done yet.
    assert_eq!(lines(&lab, changed, "migration-handled"), ["handled"]);
    assert_eq!(lines(&lab, in_place, "migration-handled"), ["handled"]);
    assert!(lines(&lab, migrated, "migration-handled").is_empty());

    let (_, run_dir) = only_run(&lab.state);
    let skipped = |label: &str, listened: &str| {
        let record = finished(&run_dir, label);
        assert_eq!(record["state"], "skipped", "{label}: {record}");
        assert_eq!(record["changed"], false, "{label}: {record}");
        let reason = format!("no change notified it (listened: {listened})");
        assert!(
            record["output_tail"].as_str().unwrap().contains(&reason),
            "{label}: {record}"
        );
    };
    skipped(&format!("reload@{in_place}"), "config");
    skipped(&format!("after migration@{migrated}"), "migrate");
    for host in &hosts {
        skipped(&format!("on read@{host}"), "read config");
        // The rule feeds handlers and reports; the command still ran (and a rollback
        // would still undo it).
        let read = finished(&run_dir, &format!("read config@{host}"));
        assert_eq!(read["state"], "succeeded");
        assert_eq!(read["reported_changed"], false, "{read}");
    }
    for host in [changed, migrated] {
        let reload = finished(&run_dir, &format!("reload@{host}"));
        assert_eq!(reload["state"], "succeeded", "{reload}");
    }
    let config = finished(&run_dir, &format!("config@{in_place}"));
    assert_eq!(config["reported_changed"], false, "{config}");

    // The summary counts the handler that did not run as skipped, not as changed.
    let status = lab
        .pony(&["status", run_dir.file_name().unwrap().to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&status);
    let total: Vec<&str> = said
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("{said}"))
        .split_whitespace()
        .collect();
    // 21 tasks; skipped: 5 handlers nothing notified (`reload` on one host, `after
    // migration` on one, `on read` on three) and the template already in place.
    assert_eq!(total[1..4], ["21", "15", "6"], "{said}");

    // A second run changes nothing, so no handler runs anywhere.
    let again = lab.deploy(&playbook, &[]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    for host in &hosts {
        assert_eq!(lines(&lab, host, "checked"), ["checked", "checked"]);
    }
    assert_eq!(lines(&lab, changed, "reloads"), ["reload"]);
    assert_eq!(lines(&lab, migrated, "reloads"), ["reload"]);
    assert!(lines(&lab, in_place, "reloads").is_empty());
    assert_eq!(lines(&lab, changed, "migration-handled"), ["handled"]);
}

#[test]
fn plan_dry_run_and_check_say_what_a_handler_listens_to_and_whether_it_would_run() {
    let lab = lab_with(1, 1, 2);
    let hosts = lab.host_names();
    std::fs::write(lab.path("app.conf.j2"), TEMPLATE).unwrap();
    std::fs::write(lab.root(&hosts[1]).join("app.conf"), rendered("pony")).unwrap();
    let playbook = lab.playbook(PLAYBOOK);
    let (pb, inv) = (playbook.to_str().unwrap(), lab.inventory.to_str().unwrap());

    let plan = lab.pony(&["plan", "-i", inv, pb]).output().unwrap();
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    let said = text(&plan);
    assert!(
        said.contains("handler: runs on a host only if `config` changed something there"),
        "{said}"
    );
    assert!(said.contains("changed_when: false"), "{said}");
    assert!(
        said.contains("changed_when: stdout contains \"migrated now\""),
        "{said}"
    );

    let graph = lab
        .pony(&["graph", "-i", inv, pb, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&graph), 0, "{}", text(&graph));
    let graph: Value = serde_json::from_slice(&graph.stdout).unwrap();
    let reload = graph["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "reload")
        .unwrap()
        .clone();
    assert_eq!(reload["listen"], serde_json::json!(["config"]));

    let dry = lab
        .deploy_command(&playbook, &["--dry-run"])
        .output()
        .unwrap();
    assert_eq!(code(&dry), 0, "{}", text(&dry));
    let said = text(&dry);
    assert!(
        said.contains(&format!(
            "reload@{}  [handler: runs on a host only if `config` changed something there]",
            hosts[0]
        )),
        "{said}"
    );

    let check = lab
        .deploy_command(&playbook, &["--check"])
        .output()
        .unwrap();
    assert_eq!(code(&check), 0, "{}", text(&check));
    let said = text(&check);
    let host_block = |host: &str| -> String {
        let start = said
            .find(&format!("\n{host}\n"))
            .expect("host in the report");
        said[start + 1..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = host_block(&hosts[0]);
    assert!(first.contains("would run: notified by `config`"), "{first}");
    let second = host_block(&hosts[1]);
    assert!(
        second.contains("skipped: no change would notify it (listened: config)"),
        "{second}"
    );
    assert!(
        second.contains("would run if notified: `migrate` would run; its output decides"),
        "{second}"
    );
    // Nothing was changed by the check.
    assert!(!lab.root(&hosts[0]).join("app.conf").exists());
    assert!(!lab.root(&hosts[0]).join("reloads").exists());
}

/// The controller dies after the notifier changed the file and before the handler ran;
/// the resume runs the handler where the change is journaled, and only there.
#[test]
fn a_resume_after_a_kill_between_notifier_and_handler_still_runs_the_handler() {
    let lab = lab_with(1, 1, 2);
    let hosts = lab.host_names();
    std::fs::write(lab.path("app.conf.j2"), TEMPLATE).unwrap();
    std::fs::write(lab.root(&hosts[1]).join("app.conf"), rendered("pony")).unwrap();
    let gate = lab.path("gate-open");
    let playbook = lab.playbook(&format!(
        r#"name: handlers-resume
vars: {{ banner: pony }}
steps:
  - name: config
    template: {{ src: app.conf.j2, dest: "{{{{ root }}}}/app.conf" }}
  - name: hold
    needs: [config]
    run: touch {{{{ root }}}}/hold-started; while [ ! -e {gate} ]; do sleep 0.05; done
  - name: reload
    listen: [config]
    needs: [hold]
    run: echo reload >> {{{{ root }}}}/reloads
"#,
        gate = gate.display()
    ));
    let mut child = lab.spawn_deploy(&playbook, &[]);
    for host in &hosts {
        wait_until(&format!("`hold` to start on {host}"), || {
            lab.root(host).join("hold-started").exists()
        });
    }
    let (run, run_dir) = only_run(&lab.state);
    // The notifier's result is journaled before `hold` started after it.
    let config = finished(&run_dir, &format!("config@{}", hosts[0]));
    assert_eq!(config["reported_changed"], true, "{config}");
    child.kill().unwrap();
    child.wait().unwrap();
    for host in &hosts {
        assert!(lines(&lab, host, "reloads").is_empty(), "{host}");
    }
    std::fs::write(&gate, "").unwrap();

    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_eq!(lines(&lab, &hosts[0], "reloads"), ["reload"]);
    assert!(lines(&lab, &hosts[1], "reloads").is_empty());
    let skipped = finished(&run_dir, &format!("reload@{}", hosts[1]));
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    let ran = finished(&run_dir, &format!("reload@{}", hosts[0]));
    assert_eq!(ran["state"], "succeeded", "{ran}");
}

/// The mail lab (`pony lab up --mail`): one region, two MTAs and two stores, each with
/// its own Postfix; stopped when dropped.
struct MailLab {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
    lab: pony::lab::mail::MailLab,
}

impl MailLab {
    fn start() -> MailLab {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let args = [
            "lab",
            "up",
            "--regions",
            "1",
            "--clusters",
            "2",
            "--hosts",
            "2",
            "--mail",
        ];
        let up = support::pony(&state, &args).output().unwrap();
        assert!(up.status.success(), "lab up --mail: {}", text(&up));
        let lab = pony::lab::mail::MailLab::load(&state.join("lab")).unwrap();
        let lab = MailLab { dir, state, lab };
        lab.set_postfix_config();
        lab
    }

    /// Each host's Postfix config directory as an inventory host var (the role's
    /// `postfix_config`, whose default is /etc/postfix).
    fn set_postfix_config(&self) {
        use serde_yaml::Value;
        let path = self.state.join("lab/inventory.yaml");
        let mut doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for region in doc["regions"].as_mapping_mut().unwrap().values_mut() {
            for cluster in region["clusters"].as_mapping_mut().unwrap().values_mut() {
                for (name, host) in cluster["hosts"].as_mapping_mut().unwrap().iter_mut() {
                    let config = self.lab.host(name.as_str().unwrap()).postfix_config();
                    host["vars"]["postfix_config"] = Value::from(config.display().to_string());
                }
            }
        }
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }

    fn mtas(&self) -> Vec<String> {
        let mut mtas: Vec<String> = self
            .lab
            .hosts
            .iter()
            .filter(|h| h.is_mta())
            .map(|h| h.name.clone())
            .collect();
        mtas.sort();
        mtas
    }

    fn deploy(&self, playbook: &Path, extra: &[&str]) -> std::process::Output {
        let inventory = self.state.join("lab/inventory.yaml");
        let mut args = vec![
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ];
        args.extend_from_slice(extra);
        support::pony(&self.state, &args).output().unwrap()
    }

    /// A main.cf parameter as Postfix reads it on the host.
    fn postconf(&self, host: &str, param: &str) -> String {
        let out = std::process::Command::new("postconf")
            .arg("-c")
            .arg(self.lab.host(host).postfix_config())
            .args(["-h", param])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Postfix reloads its log shows on the host.
    fn reloads(&self, host: &str) -> usize {
        let log = self.lab.host(host).home.join("log/postfix.log");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("reload --"))
            .count()
    }
}

impl Drop for MailLab {
    fn drop(&mut self) {
        let _ = support::pony(&self.state, &["lab", "down"]).output();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped example role (examples/roles/postfix-setting, Ansible's role with its
/// handler rewritten as an include) on real Postfix: first on one MTA (a canary), then
/// on both: the second run reloads Postfix only on the MTA whose config changed, and
/// Postfix reads the new value on both.
#[test]
fn the_postfix_role_as_an_include_reloads_postfix_only_where_its_config_changed() {
    let lab = MailLab::start();
    let mtas = lab.mtas();
    assert_eq!(mtas.len(), 2, "{mtas:?}");
    let (canary, other) = (&mtas[0], &mtas[1]);
    let dir = lab.dir.path();
    copy_dir(
        &support::crate_root().join("examples/roles/postfix-setting"),
        &dir.join("roles/postfix-setting"),
    );
    let playbook = dir.join("postfix.yaml");
    std::fs::write(
        &playbook,
        "name: postfix-setting\nstrategy: { max_failures: 100%, on_failure: halt }\nsteps:\n  - include: roles/postfix-setting/steps.yaml\n    name: postfix\n    hosts: mta\n    vars: { message_size_limit: 52428800 }\n",
    )
    .unwrap();
    let before = lab.postconf(other, "message_size_limit");
    assert_ne!(before, "52428800");

    // `--check --diff` first: it shows the template's diff and the steps that would run,
    // and changes nothing: main.cf and header_checks byte for byte as they were, no reload.
    let config_files = |host: &str| {
        let config = lab.lab.host(host).postfix_config();
        ["main.cf", "header_checks"].map(|f| std::fs::read(config.join(f)).ok())
    };
    let untouched = [config_files(canary), config_files(other)];
    let quiet = [lab.reloads(canary), lab.reloads(other)];
    let checked = lab.deploy(&playbook, &["--check", "--diff"]);
    assert_eq!(code(&checked), 0, "{}", text(&checked));
    let report = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(
        report.contains("+/^Subject:.*viagra/ REJECT spam subject"),
        "{report}"
    );
    assert!(report.contains("would run"), "{report}");
    for (host, files) in [canary, other].into_iter().zip(&untouched) {
        assert_eq!(
            &config_files(host),
            files,
            "{host}: main.cf or header_checks changed"
        );
    }
    assert_eq!([lab.reloads(canary), lab.reloads(other)], quiet);

    let first = lab.deploy(&playbook, &["--limit", canary]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    assert_eq!(lab.postconf(canary, "message_size_limit"), "52428800");
    assert_eq!(lab.postconf(other, "message_size_limit"), before);
    // Postfix logs through its log daemon: wait for the line rather than for a time.
    wait_until("the canary's Postfix to log its reload", || {
        lab.reloads(canary) >= 1
    });
    let reloads = [lab.reloads(canary), lab.reloads(other)];

    let second = lab.deploy(&playbook, &[]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    for host in [canary, other] {
        assert_eq!(
            lab.postconf(host, "message_size_limit"),
            "52428800",
            "{host}"
        );
        let header_checks = lab.postconf(host, "header_checks");
        assert!(header_checks.ends_with("/header_checks"), "{header_checks}");
    }
    // Reloaded where the config changed (the other MTA), not on the canary: its
    // handler ran no command (the journal below), and its log has no new reload.
    wait_until("the other MTA's Postfix to log its reload", || {
        lab.reloads(other) > reloads[1]
    });
    assert_eq!(lab.reloads(other), reloads[1] + 1);
    assert_eq!(
        lab.reloads(canary),
        reloads[0],
        "the canary was reloaded again"
    );
    let said = text(&second);
    let run = said
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .unwrap_or_else(|| panic!("no run id in: {said}"));
    let run_dir = lab.state.join("runs").join(run);
    let skipped = finished(&run_dir, &format!("postfix/reload@{canary}"));
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert!(
        skipped["output_tail"]
            .as_str()
            .unwrap()
            .contains("no change notified it (listened: postfix/header checks, postfix/main.cf)"),
        "{skipped}"
    );
    let ran = finished(&run_dir, &format!("postfix/reload@{other}"));
    assert_eq!(ran["state"], "succeeded", "{ran}");
}
