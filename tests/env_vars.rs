//! Every `PONY_*` variable README lists, each set on a command and compared with the same
//! command without it, in a fresh folder each time (`connection: local` hosts,
//! [`TINY_INVENTORY`]): what the variable does shows in a file, an event, the journal, the
//! output or the exit code. Those of the shared state (`PONY_STATE`, `PONY_LEASE`,
//! `PONY_REGIONS`, `PONY_CONTROLLER`) against a real PostgreSQL started for the test.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use support::db::{db, server};
use support::{code, json_lines, text, wait_until, write_plan, Reaped, TINY_INVENTORY};

/// One step on every host.
const PLAIN: &str = "name: plain\nsteps:\n  - { name: work, run: \"true\" }\n";

/// A folder with [`TINY_INVENTORY`] and a playbook (`inventory.yaml`, `playbook.yaml`),
/// where pony runs with its default state folder (`.pony`).
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    /// `playbook` may name the folder as `{dir}`.
    fn new(playbook: &str) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let playbook = playbook.replace("{dir}", &dir.path().display().to_string());
        write_plan(dir.path(), TINY_INVENTORY, playbook);
        Scene { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// pony with `args`, run in the folder, `var` set if given ([`support::pony_bare`]:
    /// none of the test's own `PONY_*`).
    fn pony(&self, var: Option<(&str, &str)>, args: &[&str]) -> Command {
        let mut command = support::pony_bare();
        command.current_dir(self.dir.path()).args(args);
        if let Some((name, value)) = var {
            command.env(name, value);
        }
        command
    }

    /// The journal of the folder's only run, in `state` (relative to the folder).
    fn journal(&self, state: &str) -> Vec<serde_json::Value> {
        let (_, run) = support::only_run(&self.path(state));
        support::journal(&run)
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A variable, its value, the playbook and arguments of the command, and what must hold
/// of a run with the variable set (`true`) and of the same run without it (`false`).
struct Case {
    var: &'static str,
    value: &'static str,
    playbook: &'static str,
    args: &'static [&'static str],
    check: fn(&Scene, &Output, bool),
}

const DEPLOY: &[&str] = &["deploy", "-i", "inventory.yaml", "playbook.yaml", "--yes"];

fn hosts_started(scene: &Scene) -> Vec<String> {
    support::started_hosts(&scene.journal(".pony"))
        .into_iter()
        .collect()
}

/// Barrier: each host waits until every host of the inventory is in the step (a bounded
/// wait: it gives up after 100 looks), so the step succeeds only if the four run at once.
const BARRIER: &str = r#"
name: barrier
strategy: { max_failures: 0, on_failure: halt }
steps:
  - name: together
    run: "mkdir -p {dir}/in; touch {dir}/in/{{ host.name }}; i=0; while [ $(ls {dir}/in | wc -l) -lt 4 ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done"
"#;

const GATED: &str = r#"
name: gated
strategy:
  waves:
    - { name: canary, regions: ["*"], hosts: h1, approve: true }
    - { name: rest, regions: ["*"] }
steps:
  - { name: work, run: "true" }
"#;

const FAILING: &str =
    "name: failing\nsteps:\n  - { name: work, run: \"test {{ host.name }} != h2\" }\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            var: "PONY_STATE_DIR",
            value: "elsewhere",
            playbook: PLAIN,
            args: DEPLOY,
            check: |scene, out, with| {
                assert_eq!(code(out), 0, "{}", text(out));
                let (used, unused) = if with {
                    ("elsewhere", ".pony")
                } else {
                    (".pony", "elsewhere")
                };
                support::only_run(&scene.path(used));
                assert!(scene.path(used).join("hosts/h4").is_dir());
                assert!(!scene.path(unused).exists());
            },
        },
        Case {
            var: "PONY_INVENTORY",
            value: "inventory.yaml",
            playbook: PLAIN,
            args: &["deploy", "playbook.yaml", "--yes"],
            check: |scene, out, with| {
                if with {
                    assert_eq!(code(out), 0, "{}", text(out));
                    assert_eq!(hosts_started(scene), ["h1", "h2", "h3", "h4"]);
                } else {
                    assert_eq!(code(out), 2, "{}", text(out));
                    assert!(
                        stderr(out).contains("inventories/local.yaml"),
                        "{}",
                        text(out)
                    );
                    assert!(!scene.path(".pony/runs").exists());
                }
            },
        },
        Case {
            var: "PONY_LIMIT",
            value: "h3",
            playbook: PLAIN,
            args: DEPLOY,
            check: |scene, out, with| {
                assert_eq!(code(out), 0, "{}", text(out));
                let all: &[&str] = if with {
                    &["h3"]
                } else {
                    &["h1", "h2", "h3", "h4"]
                };
                assert_eq!(hosts_started(scene), all);
            },
        },
        Case {
            var: "PONY_YES",
            // What CI files write; `true`, `yes` and `on` work as well.
            value: "1",
            playbook: PLAIN,
            args: &["deploy", "-i", "inventory.yaml", "playbook.yaml"],
            check: |scene, out, with| {
                if with {
                    assert_eq!(code(out), 0, "{}", text(out));
                    assert_eq!(hosts_started(scene).len(), 4);
                } else {
                    assert_eq!(code(out), 2, "{}", text(out));
                    assert!(
                        stderr(out).contains("refusing to deploy without confirmation"),
                        "{}",
                        text(out)
                    );
                    assert!(!scene.path(".pony/runs").exists());
                }
            },
        },
        Case {
            var: "PONY_OUTPUT",
            value: "json",
            playbook: PLAIN,
            args: DEPLOY,
            check: |_, out, with| {
                assert_eq!(code(out), 0, "{}", text(out));
                let parsed: Vec<Option<serde_json::Value>> = stdout(out)
                    .lines()
                    .map(|l| serde_json::from_str(l).ok())
                    .collect();
                assert!(!parsed.is_empty(), "{}", text(out));
                if with {
                    let events = json_lines(&stdout(out));
                    assert_eq!(events.first().unwrap()["event"], "run_started");
                    assert_eq!(events.last().unwrap()["event"], "summary");
                } else {
                    assert!(parsed.iter().all(Option::is_none), "{}", text(out));
                }
            },
        },
        Case {
            var: "PONY_COLOR",
            value: "always",
            playbook: FAILING,
            args: DEPLOY,
            check: |_, out, with| {
                assert_eq!(code(out), 1, "{}", text(out));
                // NO_COLOR=1 is set (support::pony_bare): only `always` colours.
                assert_eq!(
                    stdout(out).contains("\x1b["),
                    with,
                    "escape sequences: {}",
                    text(out)
                );
            },
        },
        Case {
            var: "PONY_JUNIT",
            value: "report.xml",
            playbook: FAILING,
            args: DEPLOY,
            check: |scene, out, with| {
                assert_eq!(code(out), 1, "{}", text(out));
                let report = std::fs::read_to_string(scene.path("report.xml"));
                if with {
                    let report = report.unwrap();
                    assert_eq!(report.matches("<testcase").count(), 4, "{report}");
                    assert_eq!(report.matches("<failure").count(), 1, "{report}");
                } else {
                    assert!(report.is_err());
                }
            },
        },
        Case {
            var: "PONY_CONNECTIONS",
            value: "1",
            playbook: BARRIER,
            args: DEPLOY,
            check: |scene, out, with| {
                // One host at a time never meets the barrier; four at once do.
                let ended: Vec<(String, String)> = scene
                    .journal(".pony")
                    .iter()
                    .filter(|r| r["type"] == "task_finished")
                    .map(|r| {
                        (
                            r["label"].as_str().unwrap().to_string(),
                            r["state"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                if with {
                    assert_eq!(code(out), 3, "{}", text(out));
                    assert_eq!(
                        ended,
                        [("together@h1".to_string(), "failed".to_string())],
                        "{}",
                        text(out)
                    );
                } else {
                    assert_eq!(code(out), 0, "{}", text(out));
                    assert_eq!(ended.len(), 4, "{ended:?}");
                    assert!(ended.iter().all(|(_, s)| s == "succeeded"), "{ended:?}");
                }
            },
        },
        Case {
            var: "PONY_ROLLBACK_PACE",
            value: "all",
            playbook: PLAIN,
            args: &[
                "deploy",
                "-i",
                "inventory.yaml",
                "playbook.yaml",
                "--dry-run",
            ],
            check: |_, out, with| {
                assert_eq!(code(out), 0, "{}", text(out));
                let says = if with {
                    "# rollback: pace all: every host of a rollback at once"
                } else {
                    "# rollback: pace window:"
                };
                assert!(stdout(out).contains(says), "{}", text(out));
            },
        },
        Case {
            var: "PONY_APPROVAL_WAIT",
            value: "1s",
            playbook: GATED,
            args: &[
                "deploy",
                "-i",
                "inventory.yaml",
                "playbook.yaml",
                "--yes",
                "--output",
                "json",
            ],
            check: |scene, out, with| {
                assert_eq!(code(out), 10, "{}", text(out));
                // The gate's event announces the bound it waits for.
                let records = scene.journal(".pony");
                assert_eq!(
                    records
                        .iter()
                        .filter(|r| r["type"] == "gate_waiting")
                        .count(),
                    1
                );
                let events = support::events(out);
                let announced: Vec<&serde_json::Value> = events
                    .iter()
                    .filter(|e| e["event"] == "gate_waiting")
                    .map(|e| &e["seconds"])
                    .collect();
                assert_eq!(
                    announced,
                    [&serde_json::json!(if with { 1 } else { 0 })],
                    "{}",
                    text(out)
                );
            },
        },
        Case {
            var: "PONY_PROGRESS_EVERY",
            value: "0s",
            playbook: PLAIN,
            args: DEPLOY,
            check: |_, out, with| {
                assert_eq!(code(out), 0, "{}", text(out));
                let lines = stdout(out)
                    .lines()
                    .filter(|l| l.starts_with("progress: "))
                    .count();
                // 0s: one at every task and host outcome; the default 10s: one per 10 s
                // of run (none in a run of a few seconds; fewer than 8 before 80 s).
                if with {
                    assert!(lines >= 8, "{lines}: {}", text(out));
                    assert!(
                        stdout(out).contains("progress: 4/4 hosts done, 0 failed"),
                        "{}",
                        text(out)
                    );
                } else {
                    assert!(lines < 8, "{lines}: {}", text(out));
                }
            },
        },
    ]
}

#[test]
fn each_pony_variable_changes_what_the_command_does() {
    for case in cases() {
        for with in [true, false] {
            let scene = Scene::new(case.playbook);
            let var = with.then_some((case.var, case.value));
            let out = scene.pony(var, case.args).output().unwrap();
            eprintln!("{} {}", case.var, if with { "set" } else { "unset" });
            (case.check)(&scene, &out, with);
        }
    }
}

/// `PONY_NOTIFY_TIMEOUT`: a notifier that waits for the test is killed after the
/// variable's bound (`notify.log` says so and the run ends); without it, the default 10 s
/// leaves it time to see the test's go-ahead and end well. No clock decides which.
#[test]
fn pony_notify_timeout_bounds_a_notifier() {
    for with in [true, false] {
        let scene = Scene::new(PLAIN);
        let go = scene.path("go");
        let started = scene.path("started");
        let notifier = format!(
            "cat > /dev/null; touch {}; while [ ! -e {} ]; do sleep 0.02; done",
            started.display(),
            go.display()
        );
        let mut args = DEPLOY.to_vec();
        args.extend(["--notify", &notifier]);
        let var = with.then_some(("PONY_NOTIFY_TIMEOUT", "300ms"));
        let mut run = Reaped::new(
            scene
                .pony(var, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        if !with {
            wait_until("the notifier to start", || started.exists());
            std::fs::write(&go, "").unwrap();
        }
        run.still_running("the run");
        let out = run.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        let (_, folder) = support::only_run(&scene.path(".pony"));
        let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
        let killed = log.lines().filter(|l| l.contains("killed")).count();
        if with {
            assert!(
                log.contains("killed (pid ") && log.contains("after 300ms"),
                "{log}"
            );
            assert!(!go.exists());
        } else {
            assert_eq!(killed, 0, "{log}");
            assert!(log.contains(" ok"), "{log}");
        }
    }
}

/// The shared state's variables, against one PostgreSQL: `PONY_STATE` puts the run in the
/// database, `PONY_LEASE` sets how far its lease reaches, `PONY_REGIONS` splits the run so
/// this controller works on those regions only, `PONY_CONTROLLER` names it.
#[test]
fn the_shared_state_variables_change_what_the_run_does() {
    let pg = server();
    let url = pg.url();
    let runs = || -> i64 {
        db(&url)
            .query_one("SELECT count(*) FROM runs", &[])
            .unwrap()
            .get(0)
    };

    // PONY_STATE: the run is in the database; without it, only in the state folder.
    for with in [true, false] {
        let scene = Scene::new(PLAIN);
        let before = if with { 0 } else { runs() };
        let out = scene
            .pony(with.then_some(("PONY_STATE", &url)), DEPLOY)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        let (id, _) = support::only_run(&scene.path(".pony"));
        let stored: i64 = db(&url)
            .query_one("SELECT count(*) FROM runs WHERE run_id = $1", &[&id])
            .unwrap()
            .get(0);
        assert_eq!(stored, i64::from(with), "run {id}");
        if !with {
            assert_eq!(runs(), before);
        }
    }

    // PONY_LEASE: the held lease expires a lease after its last renewal, by the
    // database's clock: an hour with PONY_LEASE=1h, at most the default 30 s without.
    const HELD: &str = "name: held\nsteps:\n  - { name: hold, run: \"touch {dir}/holding; while [ ! -e {dir}/go ]; do sleep 0.02; done\" }\n";
    for with in [true, false] {
        let scene = Scene::new(HELD);
        let mut run = Reaped::new(
            scene
                .pony(None, DEPLOY)
                .env("PONY_STATE", &url)
                .envs(with.then_some(("PONY_LEASE", "1h")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        wait_until("the run to hold its lease", || {
            run.still_running("the held run");
            scene.path("holding").exists()
        });
        let reach: f64 = db(&url)
            .query_one(
                "SELECT extract(epoch FROM expires - now())::float8 FROM leases",
                &[],
            )
            .unwrap()
            .get(0);
        if with {
            assert!(reach > 30.0 * 60.0, "the lease reaches {reach} s");
        } else {
            assert!(reach <= 30.0, "the lease reaches {reach} s");
        }
        std::fs::write(scene.path("go"), "").unwrap();
        let out = run.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
    }

    // PONY_REGIONS (and PONY_CONTROLLER): this controller works on r1 only (it waits for
    // the rest of the run, which `pony join RUN --regions r2` does), and the journal's
    // task records are its own, under the name given; without PONY_REGIONS a run is not
    // split (no controller, every host), without PONY_CONTROLLER the name is MACHINE:PID.
    let journaled = |run: &str| -> Vec<(String, Option<String>)> {
        db(&url)
            .query(
                "SELECT record->>'label', controller FROM journal
                  WHERE run_id = $1 AND record->>'type' = 'task_started' ORDER BY seq",
                &[&run],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    for (regions, controller) in [
        (Some("r1"), Some("ctl-env")),
        (Some("r1"), None),
        (None, Some("ctl-env")),
        (None, None),
    ] {
        let case = format!("PONY_REGIONS={regions:?} PONY_CONTROLLER={controller:?}");
        let scene = Scene::new(PLAIN);
        let mut first = Reaped::new(
            scene
                .pony(None, DEPLOY)
                .env("PONY_STATE", &url)
                .envs(regions.map(|r| ("PONY_REGIONS", r)))
                .envs(controller.map(|c| ("PONY_CONTROLLER", c)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        if regions.is_some() {
            let mut id = String::new();
            wait_until("r1's tasks to be journaled", || {
                first.still_running(&case);
                let Ok(runs) = std::fs::read_dir(scene.path(".pony/runs")) else {
                    return false;
                };
                let Some(run) = runs.flatten().next() else {
                    return false;
                };
                id = run.file_name().to_string_lossy().to_string();
                journaled(&id).len() == 2
            });
            let join = support::pony(
                &scene.path("joiner"),
                &["join", &id, "--regions", "r2", "--controller", "ctl-join"],
            )
            .env("PONY_STATE", &url)
            .output()
            .unwrap();
            assert_eq!(code(&join), 0, "{case}: join: {}", text(&join));
        }
        let out = first.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{case}: {}", text(&out));
        let (id, _) = support::only_run(&scene.path(".pony"));
        let tasks = journaled(&id);
        let by = |who: Option<&str>| -> Vec<&str> {
            tasks
                .iter()
                .filter(|(_, c)| c.as_deref() == who)
                .map(|(l, _)| l.as_str())
                .collect()
        };
        match (regions, controller) {
            (Some(_), Some(name)) => {
                assert_eq!(by(Some(name)), ["work@h1", "work@h2"], "{case}: {tasks:?}");
                assert_eq!(by(Some("ctl-join")), ["work@h3", "work@h4"], "{case}");
            }
            (Some(_), None) => {
                assert_eq!(by(Some("ctl-join")), ["work@h3", "work@h4"], "{case}");
                let (named, labels): (Vec<_>, Vec<_>) = tasks
                    .iter()
                    .filter(|(_, c)| c.as_deref() != Some("ctl-join"))
                    .map(|(l, c)| (c.clone().unwrap_or_default(), l.as_str()))
                    .unzip();
                assert_eq!(labels, ["work@h1", "work@h2"], "{case}: {tasks:?}");
                let pid = first_pid_name(&named);
                assert!(pid.contains(':') && pid != "ctl-env", "{case}: {tasks:?}");
            }
            (None, _) => {
                assert_eq!(by(None).len(), 4, "{case}: {tasks:?}");
            }
        }
    }
}

/// The one controller name `names` all hold.
fn first_pid_name(names: &[String]) -> &str {
    assert!(names.windows(2).all(|w| w[0] == w[1]), "{names:?}");
    &names[0]
}
