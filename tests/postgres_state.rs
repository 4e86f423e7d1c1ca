//! `--state postgres://…` against a real PostgreSQL server started for each test
//! (`pony::lab::postgres`: initdb + pg_ctl in a temp folder on a loopback port, stopped
//! when the test ends, also when it fails): two controllers with separate state folders
//! share the lease, a SIGKILLed holder's lease expires and its run is resumed from the
//! other controller without re-running a task the journal shows succeeded; `status` and
//! `history` read from the database say what they say from the local folder; the schema
//! is created and migrated by `pony db migrate` (roles and privileges: postgres_roles.rs).

mod support;

use support::code;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use support::db::{db, expire_leases, pony_db, query_count, server};
use support::{deploy_args, lab, pony, text, wait_until, write_plan, Lab, Reaped, TINY_INVENTORY};

/// Labels the database's journal shows succeeded.
fn succeeded_in_db(url: &str, run: &str) -> Vec<String> {
    db(url)
        .query(
            "SELECT record->>'label' FROM journal WHERE run_id = $1
               AND record->>'type' = 'task_finished' AND record->>'state' = 'succeeded'
             ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Writes [`TINY_INVENTORY`] and `playbook` into `dir`; their paths.
fn local_plan(dir: &Path, playbook: impl AsRef<[u8]>) -> (PathBuf, PathBuf) {
    write_plan(dir, TINY_INVENTORY, playbook)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Every step appends its name to a per-host counter file; `slow` holds until the test
/// opens the gate, so the controller can be killed with tasks done and tasks running.
fn counted(lab: &Lab) -> String {
    let gate = lab.path("gate-open");
    format!(
        r#"
name: counted
strategy: {{ max_unavailable: 50% }}
steps:
  - {{ name: one, run: "echo one >> {{{{ root }}}}/count-one" }}
  - {{ name: slow, needs: [one], run: "echo slow >> {{{{ root }}}}/count-slow; touch {{{{ root }}}}/slow-started; while [ ! -e {gate} ]; do sleep 0.02; done" }}
  - {{ name: three, needs: [slow], run: "echo three >> {{{{ root }}}}/count-three" }}
"#,
        gate = gate.display()
    )
}

#[test]
fn a_second_controller_is_refused_then_resumes_the_run_of_a_killed_one_from_another_state_folder() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let playbook = lab.playbook(&counted(&lab));
    let (state_a, state_b) = (lab.path("state-a"), lab.path("state-b"));
    let deploy_args = deploy_args(&lab.inventory, &playbook);

    let mut first = pony_db(&state_a, &url, &deploy_args)
        .env("USER", "ann")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a `slow` task to start", || {
        lab.host_names()
            .iter()
            .any(|h| lab.root(h).join("slow-started").exists())
    });
    let run: String = db(&url)
        .query_one("SELECT run_id FROM runs", &[])
        .unwrap()
        .get(0);

    // Another machine (another state folder), same database: refused, naming the holder.
    let blocked = pony_db(&state_b, &url, &deploy_args).output().unwrap();
    assert_eq!(code(&blocked), 4, "{}", text(&blocked));
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    let holder = format!(
        "locked by run {run} (pid {} on {}, user ann, since ",
        first.id(),
        pony::process::hostname()
    );
    assert!(stderr.contains(&holder), "{stderr}");
    assert!(
        !state_b.join("runs").exists(),
        "a refused deploy creates no run"
    );

    first.kill().unwrap(); // SIGKILL: no release, no last renewal
    first.wait().unwrap();
    // Nothing renews the lease any more: it expires at most one lease after now.
    let bounded: bool = db(&url)
        .query_one(
            "SELECT expires <= now() + $1::text::interval FROM leases WHERE inventory = 'lab'",
            &[&support::db::LEASE],
        )
        .unwrap()
        .get(0);
    assert!(
        bounded,
        "the lease runs beyond one lease after its holder died"
    );
    std::fs::write(lab.path("gate-open"), "").unwrap();

    // Until it expires, the run still counts as held; then a new deploy is told how to go
    // on. Its expiry is brought forward in SQL (what the database's clock does a lease
    // later), so that no verdict waits on the clock.
    let held = pony_db(&state_b, &url, &deploy_args).output().unwrap();
    assert_eq!(code(&held), 4, "{}", text(&held));
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        stderr.contains(&format!("locked by run {run}")) && !stderr.contains("expired"),
        "{stderr}"
    );
    assert_eq!(expire_leases(&url, "leases", "inventory = 'lab'"), 1);
    let refused = pony_db(&state_b, &url, &deploy_args).output().unwrap();
    assert_eq!(code(&refused), 4, "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("has an expired lease"), "{stderr}");
    assert!(
        stderr.contains(&format!("pony resume {run}")) && stderr.contains("pony unlock lab"),
        "{stderr}"
    );
    let status = pony_db(&state_b, &url, &["status", &run]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("stopped (resumable)"),
        "{}",
        text(&status)
    );

    let done_before = succeeded_in_db(&url, &run);
    assert!(!done_before.is_empty(), "the journal shows tasks done");
    let resumed = pony_db(&state_b, &url, &["resume", &run])
        .env("USER", "bob")
        .output()
        .unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));

    for host in lab.host_names() {
        for step in ["one", "slow", "three"] {
            assert!(
                lines(&lab.root(&host).join(format!("count-{step}"))) >= 1,
                "{step} never ran on {host}"
            );
        }
    }
    for label in &done_before {
        let (step, host) = label.split_once('@').unwrap();
        assert_eq!(
            lines(&lab.root(host).join(format!("count-{step}"))),
            1,
            "{label} succeeded before the kill and ran again"
        );
    }
    // The database's journal has both controllers' records, ending in success; the
    // lease is released.
    let mut client = db(&url);
    let kinds: Vec<String> = client
        .query(
            "SELECT record->>'type' FROM journal WHERE run_id = $1 ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert!(kinds.iter().any(|k| k == "run_resumed"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    let resumed_by: String = client
        .query_one(
            "SELECT record->>'user' FROM journal WHERE run_id = $1 AND record->>'type' = 'run_resumed'",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert_eq!(resumed_by, "bob");
    let leases: i64 = client
        .query_one("SELECT count(*) FROM leases", &[])
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "the finished run released its lease");
    let history = pony_db(&state_a, &url, &["history"]).output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains(&run) && history.contains("succeeded (exit 0)"),
        "{history}"
    );
}

/// The host named by the `bad` var fails `check`: its region rolls back and the second
/// wave never starts, so status has failures, rollbacks and a stopped wave to show.
const LOCAL_PLAYBOOK: &str = "\
name: tiny-check
vars: { bad: none }
strategy:
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [\"*\"] }
  max_unavailable: 1
  max_failures: 0
  on_failure: rollback-region
steps:
  - name: prepare
    run: echo prepare >> ran
    rollback: echo undo-prepare >> ran
  - name: check
    needs: [prepare]
    run: test {{ host.name }} != {{ bad }}
    rollback: echo undo check
";

#[test]
fn status_and_history_read_from_the_database_show_what_the_local_folder_shows() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = local_plan(dir.path(), LOCAL_PLAYBOOK);
    let state = dir.path().join("state");
    let deploy = |extra: &[&str]| {
        let mut args = deploy_args(&inventory, &playbook);
        args.extend_from_slice(extra);
        pony_db(&state, &url, &args).output().unwrap()
    };
    let ok = deploy(&[]);
    assert_eq!(code(&ok), 0, "{}", text(&ok));
    let failed = deploy(&["--var", "bad=h2"]);
    assert_eq!(code(&failed), 1, "{}", text(&failed));

    let runs: Vec<String> = db(&url)
        .query("SELECT run_id FROM runs ORDER BY created", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs.len(), 2);
    let elsewhere = dir.path().join("elsewhere");
    for run in &runs {
        let local = pony(&state, &["status", run]).output().unwrap();
        let from_db = pony_db(&state, &url, &["status", run]).output().unwrap();
        let from_other_machine = pony_db(&elsewhere, &url, &["status", run])
            .output()
            .unwrap();
        assert_eq!(code(&local), 0, "{}", text(&local));
        // The same words, but for the options the suggested commands carry: the local
        // run was chosen with --state-dir on the command line, the database with
        // PONY_STATE (which the next command gets again, so hints leave it out).
        let local_text = String::from_utf8_lossy(&local.stdout)
            .replace(&format!(" --state-dir {}", state.display()), "");
        assert!(
            String::from_utf8_lossy(&local.stdout).contains("--state-dir")
                || !local_text.contains("pony "),
            "local hints carry the state folder"
        );
        assert_eq!(
            String::from_utf8_lossy(&from_db.stdout),
            local_text,
            "status {run} from the database"
        );
        assert_eq!(
            String::from_utf8_lossy(&from_other_machine.stdout),
            local_text,
            "status {run} from another state folder"
        );
    }
    let failed_status = pony(&state, &["status", &runs[1]]).output().unwrap();
    let failed_status = String::from_utf8_lossy(&failed_status.stdout);
    assert!(
        failed_status.contains("h2 (step check, exit 1, rolled back)")
            && failed_status.contains("stopped at wave first"),
        "{failed_status}"
    );

    let local = pony(&state, &["history"]).output().unwrap();
    let from_other_machine = pony_db(&elsewhere, &url, &["history"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&from_other_machine.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    assert!(String::from_utf8_lossy(&local.stdout).contains(&runs[0]));
    // JSON says the same but for where the run's folder is on each machine.
    let json = |output: Output| -> Vec<serde_json::Value> {
        support::json_lines(&String::from_utf8_lossy(&output.stdout))
            .into_iter()
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("path");
                v
            })
            .collect()
    };
    assert_eq!(
        json(
            pony_db(&elsewhere, &url, &["--output", "json", "history"])
                .output()
                .unwrap()
        ),
        json(
            pony(&state, &["--output", "json", "history"])
                .output()
                .unwrap()
        )
    );

    // A rollback from another machine works from the database's journal, and is
    // journaled there: the first machine then finds nothing left to undo.
    let rollback = pony_db(&elsewhere, &url, &["rollback", &runs[0], "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&rollback), 0, "{}", text(&rollback));
    for host in ["h1", "h2", "h3", "h4"] {
        let ran = std::fs::read_to_string(elsewhere.join("hosts").join(host).join("ran"))
            .unwrap_or_default();
        assert_eq!(ran, "undo-prepare\n", "{host}");
    }
    let undone = query_count(
        &url,
        "SELECT count(*) FROM journal WHERE run_id = $1
           AND record->>'type' = 'rollback_finished' AND (record->>'ok')::boolean",
        &[&runs[0]],
    );
    assert_eq!(undone, 8, "prepare and check on four hosts");
    let again = pony_db(&state, &url, &["rollback", &runs[0], "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to roll back"),
        "{}",
        text(&again)
    );
    let status = pony_db(&state, &url, &["status", &runs[0]])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("state: rolled back"),
        "{}",
        text(&status)
    );
}

/// A controller whose lease is broken (`pony unlock` from elsewhere) kills its running
/// commands and starts no other task, and the database refuses its records from then on.
#[test]
fn a_controller_that_lost_its_lease_starts_nothing_more_and_writes_nothing_more() {
    use std::io::BufRead;
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate-open");
    let (inventory, playbook) = local_plan(
        dir.path(),
        format!(
            "name: fenced\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: slow, run: \"touch started; while [ ! -e {} ]; do sleep 0.02; done\" }}\n  - {{ name: after, needs: [slow], run: \"touch after\" }}\n",
            gate.display()
        ),
    );
    let state = dir.path().join("state");
    let mut controller = pony_db(&state, &url, &deploy_args(&inventory, &playbook))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hosts = ["h1", "h2", "h3", "h4"];
    wait_until("every `slow` task to start", || {
        hosts
            .iter()
            .all(|h| state.join("hosts").join(h).join("started").exists())
    });
    // A live lease is refused (exit 4, naming its holder) unless `--force`.
    let refused = pony_db(&dir.path().join("elsewhere"), &url, &["unlock", "tiny"])
        .output()
        .unwrap();
    assert_eq!(code(&refused), 4, "{}", text(&refused));
    assert!(
        text(&refused).contains("held by a live run"),
        "{}",
        text(&refused)
    );
    assert!(text(&refused).contains("--force"), "{}", text(&refused));
    let unlocked = pony_db(
        &dir.path().join("elsewhere"),
        &url,
        &["unlock", "tiny", "--force"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&unlocked), 0, "{}", text(&unlocked));
    assert!(
        text(&unlocked).contains("broke the live lock"),
        "{}",
        text(&unlocked)
    );
    let records_at_unlock = query_count(&url, "SELECT count(*) FROM journal", &[]);
    let mut stderr = std::io::BufReader::new(controller.stderr.take().unwrap()).lines();
    let mut said = String::new();
    while !said.contains("lost the inventory's lease") {
        match stderr.next() {
            Some(line) => said.push_str(&(line.unwrap() + "\n")),
            None => panic!("the controller ended without noticing:\n{said}"),
        }
    }
    std::fs::write(&gate, "").unwrap();
    let rest: Vec<String> = stderr.map(|l| l.unwrap()).collect();
    let status = controller.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{said}{}", rest.join("\n"));
    for host in hosts {
        assert!(
            !state.join("hosts").join(host).join("after").exists(),
            "`after` started on {host} without the lease"
        );
    }
    let records_now = query_count(&url, "SELECT count(*) FROM journal", &[]);
    assert_eq!(
        records_now, records_at_unlock,
        "records were written to the database after the lease was broken"
    );
}

#[test]
fn pony_db_migrate_creates_the_schema_once_and_a_newer_one_is_refused() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    for command in [&["db", "migrate"][..], &["db", "migrate"], &["history"]] {
        let output = pony_db(dir.path(), &url, command).output().unwrap();
        assert_eq!(code(&output), 0, "{}", text(&output));
    }
    let mut client = db(&url);
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    // Another installation in the same database: its own schema.
    let other = format!("{url}?schema=mail_eu");
    let migrate = pony_db(dir.path(), &other, &["db", "migrate"])
        .output()
        .unwrap();
    assert_eq!(code(&migrate), 0, "{}", text(&migrate));
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'mail_eu'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 9,
        "runs, journal, leases, region_leases, control, control_answers, blobs, fences, schema_migrations"
    );

    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')",
            &[],
        )
        .unwrap();
    let refused = pony_db(dir.path(), &url, &["history"]).output().unwrap();
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("schema version 99, newer than"),
        "{}",
        text(&refused)
    );

    let bad = pony_db(dir.path(), "mysql://x", &["history"])
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2, "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a postgres:// URL"),
        "{}",
        text(&bad)
    );
}

/// A run paused at an `approve:` gate in CI keeps its lease with no expiry: another
/// machine's deploy is refused as paused, and a resume with `--approve` from another
/// state folder takes the lease over and finishes, running nothing twice.
#[test]
fn a_run_paused_for_approval_keeps_its_lease_and_is_approved_from_another_machine() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("counts");
    std::fs::create_dir(&counts).unwrap();
    let (inventory, playbook) = local_plan(
        dir.path(),
        format!(
            "name: approved\nstrategy:\n  waves:\n    - {{ name: first, regions: [r1], approve: true }}\n    - {{ name: rest, regions: [\"*\"] }}\nsteps:\n  - {{ name: one, run: \"echo one >> {}/{{{{ host.name }}}}\" }}\n",
            counts.display()
        ),
    );
    let args = deploy_args(&inventory, &playbook);
    let paused = pony_db(&dir.path().join("a"), &url, &args)
        .output()
        .unwrap();
    assert_eq!(code(&paused), 10, "{}", text(&paused));
    let (expires, awaiting, run): (Option<String>, bool, String) = {
        let row = db(&url)
            .query_one(
                "SELECT expires::text, awaiting_approval, run_id FROM leases WHERE inventory = 'tiny'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((expires, awaiting), (None, true), "kept with no expiry");
    let blocked = pony_db(&dir.path().join("b"), &url, &args)
        .output()
        .unwrap();
    assert_eq!(code(&blocked), 4, "{}", text(&blocked));
    assert!(
        String::from_utf8_lossy(&blocked.stderr).contains("paused awaiting approval"),
        "{}",
        text(&blocked)
    );
    let resumed = pony_db(
        &dir.path().join("b"),
        &url,
        &["resume", &run, "--approve", "first"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    for host in ["h1", "h2", "h3", "h4"] {
        assert_eq!(
            lines(&counts.join(host)),
            1,
            "{host} ran `one` once over both controllers"
        );
    }
}

/// The database going away mid-run (stopped, then started again within the lease) loses
/// nothing: the batches it missed are sent with the next one, and the database's journal
/// ends up holding every record of the controller's local journal, in order.
#[test]
fn records_the_database_missed_while_it_was_down_reach_it_when_it_is_back() {
    let mut pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (gate1, gate2) = (dir.path().join("gate-1"), dir.path().join("gate-2"));
    let (inventory, playbook) = local_plan(
        dir.path(),
        format!(
            "name: outage\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: slow, run: \"touch started; while [ ! -e {} ]; do sleep 0.02; done\" }}\n  - {{ name: after, needs: [slow], run: \"touch after; while [ ! -e {} ]; do sleep 0.02; done\" }}\n",
            gate1.display(),
            gate2.display()
        ),
    );
    let state = dir.path().join("state");
    let mut controller = pony_db(&state, &url, &deploy_args(&inventory, &playbook))
        // Long enough that the outage below never costs the lease.
        .env("PONY_LEASE", "120s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hosts = ["h1", "h2", "h3", "h4"];
    let all = |marker: &str| {
        hosts
            .iter()
            .all(|h| state.join("hosts").join(h).join(marker).exists())
    };
    wait_until("every `slow` task to start", || all("started"));
    pg.stop().unwrap();
    // `slow` ends and `after` starts on every host while the database is down.
    std::fs::write(&gate1, "").unwrap();
    wait_until("every `after` task to start", || all("after"));
    pg.restart().unwrap();
    std::fs::write(&gate2, "").unwrap();
    let status = controller.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let (run, local) = support::only_run(&state);
    let local = support::journal(&local);
    let in_db: Vec<serde_json::Value> = db(&url)
        .query(
            "SELECT record::text FROM journal WHERE run_id = $1 ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect();
    assert_eq!(
        in_db.len(),
        local.len(),
        "every record reached the database"
    );
    assert_eq!(in_db, local, "in the same order");
    assert_eq!(
        in_db.last().unwrap()["type"],
        "run_finished",
        "{:?}",
        in_db.last()
    );
}

/// A controller that cannot reach the database for a whole lease loses its lease and
/// stops (its running commands killed, exit 130) instead of going on unseen: another
/// controller may be taking the run over. Nothing here waits on a clock: the task holds
/// until the test ends it, and the test waits for the controller to end.
#[test]
fn a_controller_cut_off_from_the_database_for_a_whole_lease_stops() {
    let mut pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = local_plan(
        dir.path(),
        "name: cut-off\nsteps:\n  - { name: hold, run: \"touch started; while true; do sleep 0.02; done\" }\n  - { name: after, needs: [hold], run: touch after }\n",
    );
    let state = dir.path().join("state");
    // A short lease, so that the test does not wait out a long one: the verdict does not
    // depend on it (nothing ends the `hold` tasks but the lost lease).
    let controller = pony_db(&state, &url, &deploy_args(&inventory, &playbook))
        .env("PONY_LEASE", "3s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut controller = Reaped(Some(controller));
    let hosts = ["h1", "h2", "h3", "h4"];
    let marker = |h: &str, name: &str| state.join("hosts").join(h).join(name);
    wait_until("every `hold` task to start", || {
        hosts.iter().all(|h| marker(h, "started").exists())
    });
    pg.stop().unwrap();
    let mut status = None;
    wait_until("the controller to stop", || {
        status = controller.child().try_wait().unwrap();
        status.is_some()
    });
    let output = controller.0.take().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.unwrap().code(), Some(130), "{stderr}");
    assert!(stderr.contains("lost the inventory's lease"), "{stderr}");
    assert!(
        hosts.iter().all(|h| !marker(h, "after").exists()),
        "a task started after the lease was lost"
    );
}

/// The lease's rules, through the library against the real server: an expired lease is
/// never revived by its old holder, only the same run's resume takes it over, and the
/// takeover fences the old holder off for good.
#[test]
fn an_expired_lease_is_not_revived_and_a_takeover_fences_the_old_holder() {
    use pony::state::lock::LockError;
    use pony::state::pg::{lease, PgStore};
    let pg = server();
    // A long lease: nothing here may expire by the clock on a loaded machine; the test
    // ends the holder's lease itself, as its expiry would.
    let store = PgStore::open(&pg.url(), std::time::Duration::from_secs(30)).unwrap();
    let first = lease::acquire(&store, "global", "run-1", false, Default::default()).unwrap();
    let old_holder = first.holder.clone();
    // The holder dies without a word: its heartbeat stops, nothing is released.
    first.keep();
    match lease::acquire(&store, "global", "run-2", false, Default::default()) {
        Err(LockError::Held(info)) => assert_eq!(info.run_id, "run-1"),
        other => panic!("expected Held, got {:?}", other.err()),
    }
    assert!(lease::read(&store, "global").unwrap().unwrap().live);
    assert_eq!(
        expire_leases(&pg.url(), "leases", "inventory = 'global'"),
        1
    );
    assert!(!lease::read(&store, "global").unwrap().unwrap().live);
    let mut client = store.connect().unwrap();
    assert!(
        !lease::renew(&mut client, "global", &old_holder, 30.0).unwrap(),
        "an expired lease was renewed"
    );
    match lease::acquire(&store, "global", "run-2", true, Default::default()) {
        Err(LockError::Expired(info, _)) => assert_eq!(info.run_id, "run-1"),
        other => panic!("another run took an expired lease: {:?}", other.err()),
    }
    let second = lease::acquire(&store, "global", "run-1", true, Default::default()).unwrap();
    assert_ne!(second.holder, old_holder);
    assert!(
        !lease::renew(&mut client, "global", &old_holder, 30.0).unwrap(),
        "the old holder renewed a lease taken over"
    );
    assert!(lease::renew(&mut client, "global", &second.holder, 30.0).unwrap());
    drop(second);
    assert!(
        lease::read(&store, "global").unwrap().is_none(),
        "a finished holder releases the lease"
    );
}
