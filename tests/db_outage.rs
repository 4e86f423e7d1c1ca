//! A state database that is hung or out of reach never freezes a run, and nothing a
//! controller journaled meanwhile is lost. Against a real PostgreSQL
//! (`pony::lab::postgres`) and the `tiny` inventory of local hosts:
//!
//! - the whole server SIGSTOPped mid-run (the kernel still accepts connections and acks
//!   data, nothing answers): Ctrl-C still stops the run, and without it the controller
//!   stops by its own count of its lease, its running commands killed, and a takeover
//!   once the lease expired never works a host at the same time;
//! - `LOCK TABLE pony.leases` held: the controller stops by its own count of the lease,
//!   and a takeover once the lease expired never works a host at the same time;
//! - `LOCK TABLE pony.journal` held by another session: the run goes on, its records
//!   reach the table once the lock is released, and Ctrl-C works while it is held;
//! - an outage longer than the lease, then `pony resume` on the same machine: the records
//!   only its local journal holds are merged and sent, and no task that succeeded runs
//!   again; a resume from another machine says where the missing records may be.
//!
//! Every step waits on a marker file the test writes; each host counts each task's runs
//! in files of its own, and each copy of the long step `two` ticks (time and pid) into a
//! file per host, so that two copies at once on a host would show. No verdict depends on
//! how long anything takes; bounds are short through the documented `PONY_LEASE`.

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use support::db::{db, expire_leases, pony_db, query_count, server};
use support::{deploy_args, wait_until, write_plan, Reaped, TINY_INVENTORY};

const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// A test's folder: the plan, the state folder, gates and the controller's stderr.
struct Setup {
    dir: tempfile::TempDir,
    inventory: PathBuf,
    playbook: PathBuf,
}

impl Setup {
    /// Three steps on every host, each counting its runs in `count-NAME`: `one` waits
    /// for the gate `gate-1`, `two` for `gate-2` (writing its pid to `two.pid` first,
    /// then a time-stamped tick with its pid to the test's `ticks-HOST` every 20 ms: the
    /// host's marker of who works it when, whichever state folder runs it), `three` ends
    /// at once.
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let gate = |n: u32| dir.path().join(format!("gate-{n}")).display().to_string();
        let playbook = format!(
            r#"
name: outage
strategy: {{ max_unavailable: 100% }}
steps:
  - {{ name: one, run: "echo run >> count-one; touch one-started; while [ ! -e {g1} ]; do sleep 0.02; done" }}
  - {{ name: two, needs: [one], run: "echo run >> count-two; echo $$ > two.pid; while :; do echo \"$(date +%s%N) $$\" >> {ticks}-{{{{ host.name }}}}; [ -e {g2} ] && break; sleep 0.02; done" }}
  - {{ name: three, needs: [two], run: "echo run >> count-three" }}
"#,
            g1 = gate(1),
            g2 = gate(2),
            ticks = dir.path().join("ticks").display(),
        );
        let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, playbook);
        Setup {
            dir,
            inventory,
            playbook,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open(&self, gate: u32) {
        std::fs::write(self.path(&format!("gate-{gate}")), "").unwrap();
    }

    /// A host's file in the state folder `state`.
    fn host_file(&self, state: &str, host: &str, name: &str) -> PathBuf {
        self.path(state).join("hosts").join(host).join(name)
    }

    fn on_every_host(&self, state: &str, name: &str) -> bool {
        HOSTS
            .iter()
            .all(|h| self.host_file(state, h, name).exists())
    }

    /// How many times `step` ran on each host.
    fn runs(&self, state: &str, step: &str) -> Vec<usize> {
        HOSTS
            .iter()
            .map(|h| {
                std::fs::read_to_string(self.host_file(state, h, &format!("count-{step}")))
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The pids of the `two` commands running on every host.
    fn two_pids(&self, state: &str) -> Vec<u32> {
        HOSTS
            .iter()
            .map(|h| {
                std::fs::read_to_string(self.host_file(state, h, "two.pid"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// `pony deploy` with state folder `state` and lease `lease`, its stderr into the
    /// file `NAME.err`.
    fn deploy(&self, url: &str, state: &str, lease: &str) -> Reaped {
        let args = deploy_args(&self.inventory, &self.playbook);
        self.spawn(url, state, lease, &args)
    }

    fn spawn(&self, url: &str, state: &str, lease: &str, args: &[&str]) -> Reaped {
        let err = File::create(self.path(&format!("{state}.err"))).unwrap();
        let out = File::create(self.path(&format!("{state}.out"))).unwrap();
        Reaped::new(
            pony_db(&self.path(state), url, args)
                .env("PONY_LEASE", lease)
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap(),
        )
    }

    fn stdout(&self, state: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{state}.out"))).unwrap_or_default()
    }

    /// Two Ctrl-Cs, as a person gives them: the second once the controller said it
    /// took the first (two signals sent at once may reach it as one).
    fn interrupt_twice(&self, controller: &mut Reaped, state: &str) {
        interrupt(controller.child());
        wait_until("the controller to take the first Ctrl-C", || {
            controller.still_running("the controller");
            self.stdout(state)
                .contains("interrupted: no new host starts")
        });
        interrupt(controller.child());
    }

    /// Per host, the `two` commands that ticked (by pid) and the first and last tick of
    /// each, in order of their first: the intervals during which each copy worked it.
    fn two_copies(&self) -> Vec<Vec<(u32, u128, u128)>> {
        HOSTS
            .iter()
            .map(|h| {
                let text =
                    std::fs::read_to_string(self.path(&format!("ticks-{h}"))).unwrap_or_default();
                let mut copies: Vec<(u32, u128, u128)> = Vec::new();
                for line in text.lines() {
                    let Some((at, pid)) = line.split_once(' ') else {
                        continue;
                    };
                    let (Ok(at), Ok(pid)) = (at.parse::<u128>(), pid.parse::<u32>()) else {
                        continue;
                    };
                    match copies.iter_mut().find(|c| c.0 == pid) {
                        Some(copy) => copy.2 = copy.2.max(at),
                        None => copies.push((pid, at, at)),
                    }
                }
                copies.sort_by_key(|c| c.1);
                copies
            })
            .collect()
    }

    /// On every host, the copies of `two` that ticked (the first controller's, if it got
    /// to start one, and the takeover's) never ticked at once: each copy's first tick
    /// comes after the previous copy's last. Returns how many copies each host saw.
    fn assert_one_copy_at_a_time(&self) -> Vec<usize> {
        HOSTS
            .iter()
            .zip(self.two_copies())
            .map(|(host, copies)| {
                for pair in copies.windows(2) {
                    let (old, new) = (pair[0], pair[1]);
                    assert!(
                        old.2 < new.1,
                        "{host}: `two` pid {} ticked until {}, after pid {} started at {}: two copies at once",
                        old.0, old.2, new.0, new.1
                    );
                }
                copies.len()
            })
            .collect()
    }

    fn stderr(&self, state: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{state}.err"))).unwrap_or_default()
    }

    /// The journal records of the run in state folder `state` (one run).
    fn local_journal(&self, state: &str) -> (String, Vec<serde_json::Value>) {
        let (id, dir) = support::only_run(&self.path(state));
        (id, support::journal(&dir))
    }
}

/// The run's records in the database, in order.
fn db_journal(url: &str, run: &str) -> Vec<serde_json::Value> {
    db(url)
        .query(
            "SELECT record::text FROM journal WHERE run_id = $1 ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

/// Waits for `child` to end; its exit code.
fn exit_code(child: &mut Reaped) -> i32 {
    let mut status = None;
    wait_until("the controller to end", || {
        status = child.child().try_wait().unwrap();
        status.is_some()
    });
    status.unwrap().code().unwrap_or(-1)
}

fn interrupt(child: &Child) {
    // SAFETY: kill(2) on the test's own child, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// The run the controller stored.
fn stored(url: &str, controller: &mut Reaped) -> String {
    support::db::stored_run(url, controller)
}

/// Labels of `task_finished` records of `state` in `records`.
fn finished(records: &[serde_json::Value], state: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == "task_finished" && r["state"] == state)
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect()
}

/// The whole server stopped (SIGSTOP) while tasks run: two Ctrl-Cs stop the run (its
/// commands killed, exit 130) while the server is still stopped, with a long lease so
/// that only the signals can have stopped it. A write to the database is pending when
/// the signals come: `one` finishing is journaled after the server froze.
#[test]
fn ctrl_c_stops_a_run_whose_database_is_hung() {
    let mut pg = server();
    let url = pg.url();
    let setup = Setup::new();
    let mut controller = setup.deploy(&url, "state", "120s");
    wait_until("every `one` to start", || {
        controller.still_running("the controller");
        setup.on_every_host("state", "one-started")
    });
    pg.freeze().unwrap();
    // `one` ends and `two` starts: its journal batch waits on the stopped server.
    setup.open(1);
    wait_until("every `two` to start", || {
        setup.on_every_host("state", "two.pid")
    });
    let pids = setup.two_pids("state");
    setup.interrupt_twice(&mut controller, "state");
    let code = exit_code(&mut controller);
    let stderr = setup.stderr("state");
    assert_eq!(code, 130, "{stderr}");
    assert!(
        pids.iter().all(|&pid| !support::is_running(pid)),
        "a `two` command outlived the controller: {stderr}"
    );
    assert!(
        stderr.contains("did not reach the state database"),
        "the controller says its records are in its local journal only: {stderr}"
    );
    pg.thaw();
    let (_, local) = setup.local_journal("state");
    assert_eq!(finished(&local, "interrupted").len(), 4, "{local:?}");
    assert_eq!(setup.runs("state", "three"), [0, 0, 0, 0]);
}

/// The whole server stopped while tasks run and nobody signals the controller: it
/// cannot renew its lease, so it stops by its own clock before the lease expires (its
/// running commands killed, exit 130), while the server is still stopped. Once the
/// server goes on and the lease has expired by the database's clock, another controller
/// takes the run over: on every host, its copy of `two` starts after the last tick of
/// the first controller's (the hosts' markers), the first controller's records all
/// reach the database (merged from its local journal), and nothing that succeeded runs
/// again.
#[test]
fn a_controller_whose_database_hangs_stops_by_its_own_count_of_the_lease() {
    let mut pg = server();
    let url = pg.url();
    let setup = Setup::new();
    let mut controller = setup.deploy(&url, "state", "6s");
    let run = stored(&url, &mut controller);
    setup.open(1);
    wait_until("every `two` to tick", || {
        controller.still_running("the controller");
        setup.two_copies().iter().all(|copies| !copies.is_empty())
    });
    let pids = setup.two_pids("state");
    let expires: f64 = db(&url)
        .query_one(
            "SELECT extract(epoch FROM expires)::float8 FROM leases WHERE run_id = $1",
            &[&run],
        )
        .unwrap()
        .get(0);
    pg.freeze().unwrap();
    let frozen = std::time::SystemTime::now();
    wait_until("the `two` commands to be killed", || {
        pids.iter().all(|&pid| !support::is_running(pid))
    });
    let killed = std::time::SystemTime::now();
    let code = exit_code(&mut controller);
    let exited = std::time::SystemTime::now();
    let stderr = setup.stderr("state");
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("lost the inventory's lease"), "{stderr}");
    assert!(stderr.contains("no renewal went through"), "{stderr}");
    assert!(
        stderr.contains("did not reach the state database"),
        "the controller says which records are in its local journal only: {stderr}"
    );
    // Measured, not asserted: how far before the lease's expiry (as last read) it left.
    let epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    eprintln!(
        "measured: lease 6s; commands killed {:.2}s after the freeze, {:.2}s before the lease's expiry; controller exited {:.2}s after the freeze ({:.2}s before the expiry)",
        epoch(killed) - epoch(frozen),
        expires - epoch(killed),
        epoch(exited) - epoch(frozen),
        expires - epoch(exited)
    );
    let (_, first) = setup.local_journal("state");
    assert_eq!(finished(&first, "interrupted").len(), 4, "{first:?}");
    pg.thaw();

    // The takeover: once the database's clock has expired the lease.
    wait_until("the lease to expire by the database's clock", || {
        query_count(
            &url,
            "SELECT count(*) FROM leases WHERE run_id = $1 AND expires > now()",
            &[&run],
        ) == 0
    });
    setup.open(2);
    let mut resume = setup.spawn(&url, "state", support::db::LEASE, &["resume", &run]);
    let code = exit_code(&mut resume);
    let stderr = setup.stderr("state");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("note: merged"), "{stderr}");
    assert_eq!(
        setup.assert_one_copy_at_a_time(),
        [2, 2, 2, 2],
        "the first controller's copy of `two` and the takeover's ticked on every host"
    );
    assert_eq!(setup.runs("state", "one"), [1, 1, 1, 1], "`one` ran again");
    assert_eq!(setup.runs("state", "three"), [1, 1, 1, 1]);
    let in_db = db_journal(&url, &run);
    for record in &first {
        assert!(
            in_db.contains(record),
            "the first controller's record {record} is not in the database"
        );
    }
}

/// `LOCK TABLE pony.journal` held by another session: the run goes on (its records
/// durable in the local journal, the lease renewed by the heartbeat), the records reach
/// the table once the lock is released while the run still goes; held again, Ctrl-C
/// stops the run; then a resume on the same machine sends what the table missed and
/// runs again only what was interrupted.
#[test]
fn a_locked_journal_table_holds_neither_the_run_nor_ctrl_c() {
    let pg = server();
    let url = pg.url();
    let setup = Setup::new();
    let mut controller = setup.deploy(&url, "state", support::db::LEASE);
    let run = stored(&url, &mut controller);
    wait_until("every `one` to start", || {
        controller.still_running("the controller");
        setup.on_every_host("state", "one-started")
    });
    let mut locker = db(&url);
    locker
        .batch_execute("BEGIN; LOCK TABLE pony.journal")
        .unwrap();
    setup.open(1);
    wait_until("every `two` to start behind the lock", || {
        controller.still_running("the controller");
        setup.on_every_host("state", "two.pid")
    });
    locker.batch_execute("COMMIT").unwrap();
    wait_until("`one`'s results to reach the table", || {
        controller.still_running("the controller");
        finished(&db_journal(&url, &run), "succeeded").len() == 4
    });
    let pids = setup.two_pids("state");
    locker
        .batch_execute("BEGIN; LOCK TABLE pony.journal")
        .unwrap();
    setup.interrupt_twice(&mut controller, "state");
    let code = exit_code(&mut controller);
    let stderr = setup.stderr("state");
    assert_eq!(code, 130, "{stderr}");
    assert!(
        pids.iter().all(|&pid| !support::is_running(pid)),
        "{stderr}"
    );
    assert!(
        stderr.contains("did not reach the state database"),
        "{stderr}"
    );
    locker.batch_execute("COMMIT").unwrap();
    let (_, before) = setup.local_journal("state");
    let missing = before.len() - db_journal(&url, &run).len();
    assert!(
        missing > 0,
        "the table missed the records written while it was locked"
    );

    setup.open(2);
    let mut resume = setup.spawn(&url, "state", support::db::LEASE, &["resume", &run]);
    let code = exit_code(&mut resume);
    let stderr = setup.stderr("state");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("merged {missing} record(s)")),
        "{stderr}"
    );
    assert_eq!(setup.runs("state", "one"), [1, 1, 1, 1], "`one` ran again");
    assert_eq!(setup.runs("state", "two"), [2, 2, 2, 2]);
    assert_eq!(setup.runs("state", "three"), [1, 1, 1, 1]);
    let (_, local) = setup.local_journal("state");
    assert_eq!(
        db_journal(&url, &run),
        local,
        "the table holds every record, in order"
    );
}

/// The database away for longer than the lease: the controller stops by its own clock
/// with `one` succeeded on every host in its local journal only. A resume from another
/// machine says that the local journal on this one may hold more; the resume on this
/// machine merges those records, sends them, and does not run `one` again.
#[test]
fn records_journaled_while_the_database_was_away_count_on_a_resume_on_the_same_machine() {
    let mut pg = server();
    let url = pg.url();
    let setup = Setup::new();
    let mut controller = setup.deploy(&url, "state-a", "3s");
    let run = stored(&url, &mut controller);
    wait_until("every `one` to start", || {
        controller.still_running("the controller");
        setup.on_every_host("state-a", "one-started")
    });
    let pid = controller.id();
    pg.stop().unwrap();
    setup.open(1);
    let code = exit_code(&mut controller);
    let stderr = setup.stderr("state-a");
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("lost the inventory's lease"), "{stderr}");
    let (_, first) = setup.local_journal("state-a");
    let local_only_successes = finished(&first, "succeeded");
    pg.restart().unwrap();
    assert!(
        finished(&db_journal(&url, &run), "succeeded").len() < local_only_successes.len(),
        "some successes reached the local journal only: {first:?}"
    );
    assert_eq!(setup.runs("state-a", "one"), [1, 1, 1, 1]);

    // Another machine (state folder), while the lease still counts as held: it is told
    // where the missing records may be, and refused.
    let held = query_count(
        &url,
        "WITH renewed AS (UPDATE leases SET expires = now() + interval '1 hour' RETURNING 1)
         SELECT count(*) FROM renewed",
        &[],
    );
    assert_eq!(held, 1);
    let mut elsewhere = setup.spawn(&url, "state-b", "3s", &["resume", &run]);
    let code = exit_code(&mut elsewhere);
    let stderr = setup.stderr("state-b");
    assert_eq!(code, 4, "{stderr}");
    let warning = format!(
        "warning: the run's last controller (pid {pid} on {}",
        pony::process::hostname()
    );
    assert!(stderr.contains(&warning), "{stderr}");
    assert!(
        stderr.contains("may hold records the database lacks"),
        "{stderr}"
    );

    expire_leases(&url, "leases", &format!("run_id = '{run}'"));
    setup.open(2);
    let mut resume = setup.spawn(&url, "state-a", "30s", &["resume", &run]);
    let code = exit_code(&mut resume);
    let stderr = setup.stderr("state-a");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("note: merged"), "{stderr}");
    assert_eq!(
        setup.runs("state-a", "one"),
        [1, 1, 1, 1],
        "a task that succeeded while the database was away ran again"
    );
    // The first controller's `two`, where it started one before its deadline, was
    // killed before the resume's started.
    assert!(setup
        .assert_one_copy_at_a_time()
        .iter()
        .all(|&copies| copies >= 1));
    assert_eq!(setup.runs("state-a", "three"), [1, 1, 1, 1]);
    let in_db = db_journal(&url, &run);
    for record in &first {
        assert!(
            in_db.contains(record),
            "the first controller's record {record} is not in the database"
        );
    }
    let (_, merged) = setup.local_journal("state-a");
    assert_eq!(
        in_db, merged,
        "the table holds the merged journal, in order"
    );
}

/// `LOCK TABLE pony.leases` held by another session: the lease's row cannot be renewed
/// (each try, the heartbeat's and each journal batch's, gives up at `lock_timeout`), so
/// the controller stops by its own count of the lease, its commands killed, while the
/// lock is still held. Once the lock is gone and the lease expired, a takeover runs `two`
/// after the first copy's last tick on every host, and every record the first
/// controller journaled reaches the database.
#[test]
fn a_locked_lease_table_stops_the_controller_by_its_own_count_of_the_lease() {
    let pg = server();
    let url = pg.url();
    let setup = Setup::new();
    let mut controller = setup.deploy(&url, "state", "6s");
    let run = stored(&url, &mut controller);
    setup.open(1);
    wait_until("every `two` to tick", || {
        controller.still_running("the controller");
        setup.two_copies().iter().all(|copies| !copies.is_empty())
    });
    let pids = setup.two_pids("state");
    let mut locker = db(&url);
    locker
        .batch_execute("BEGIN; LOCK TABLE pony.leases")
        .unwrap();
    let code = exit_code(&mut controller);
    let stderr = setup.stderr("state");
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("no renewal went through"), "{stderr}");
    assert!(
        pids.iter().all(|&pid| !support::is_running(pid)),
        "a `two` command outlived the controller: {stderr}"
    );
    let (_, first) = setup.local_journal("state");
    assert_eq!(finished(&first, "interrupted").len(), 4, "{first:?}");
    locker.batch_execute("COMMIT").unwrap();

    wait_until("the lease to expire by the database's clock", || {
        query_count(
            &url,
            "SELECT count(*) FROM leases WHERE run_id = $1 AND expires > now()",
            &[&run],
        ) == 0
    });
    setup.open(2);
    let mut resume = setup.spawn(&url, "state", support::db::LEASE, &["resume", &run]);
    let code = exit_code(&mut resume);
    let stderr = setup.stderr("state");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        setup.assert_one_copy_at_a_time(),
        [2, 2, 2, 2],
        "the first controller's copy of `two` and the takeover's ticked on every host"
    );
    assert_eq!(setup.runs("state", "one"), [1, 1, 1, 1], "`one` ran again");
    assert_eq!(setup.runs("state", "three"), [1, 1, 1, 1]);
    let in_db = db_journal(&url, &run);
    for record in &first {
        assert!(
            in_db.contains(record),
            "the first controller's record {record} is not in the database"
        );
    }
}
