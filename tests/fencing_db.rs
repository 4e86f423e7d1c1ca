//! Never two hands on one host, with the state database (a real PostgreSQL started for
//! each test, and real sshd hosts): every step writes time-stamped ticks into its host's
//! `ticks` file (`<tag> <nanoseconds>` every 50 ms while it runs), and a host's ticks
//! of two runs or two controllers must never interleave.
//!
//! - `pony unlock --force` during a run split between two controllers fences both at
//!   once (their region leases go with the run's), waits until their commands on the
//!   hosts are dead and says so; a new deploy then works the hosts, and no host's ticks
//!   of the two runs overlap. The fenced controllers exit 130, and the database holds no
//!   record of theirs from after the unlock (their local journals do).
//! - A controller frozen (SIGSTOP) and taken over, then woken, writes nothing into the
//!   database and kills nothing of the run that took over.
//! - A controller whose lease is lost mid-step (taken over) kills the step on its hosts.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::db::{db, expire_leases, pony_db, query_count, server, stored_run};
use support::{code, deploy_args, lab, lab_with, only_run, text, wait_until, Lab, Reaped};

/// A step that ticks `<tag> <ns>` into `{{ root }}/ticks` every 50 ms until the file
/// `until` exists (never, when it is a path nobody creates).
fn ticking_step(tag: &str, until: &Path) -> String {
    format!(
        "name: ticking\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: tick, run: \"t={tag}; [ -e {{{{ root }}}}/second ] && t=new; while [ ! -e {until} ]; do echo $t $(date +%s%N) >> {{{{ root }}}}/ticks; sleep 0.05; done\" }}\n",
        until = until.display()
    )
}

/// The ticks of `tag` in a host's ticks file, in nanoseconds.
fn ticks(lab: &Lab, host: &str, tag: &str) -> Vec<u128> {
    std::fs::read_to_string(lab.root(host).join("ticks"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(t, _)| *t == tag)
        .filter_map(|(_, ns)| ns.trim().parse().ok())
        .collect()
}

/// Asserts that on every host all ticks of `first` come before every tick of `then`
/// (each tag ticked at least once): two runs' hands never on one host at once.
fn assert_no_overlap(lab: &Lab, hosts: &[String], first: &str, then: &str) {
    for host in hosts {
        let (a, b) = (ticks(lab, host, first), ticks(lab, host, then));
        assert!(
            !a.is_empty() && !b.is_empty(),
            "{host}: {first} {} ticks, {then} {}",
            a.len(),
            b.len()
        );
        let (last_a, first_b) = (a.iter().max().unwrap(), b.iter().min().unwrap());
        assert!(
            last_a < first_b,
            "{host}: {first} ticked {} ms after {then} began",
            (last_a - first_b) / 1_000_000
        );
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A pony started with its output in files of the lab (`<name>.out`, `<name>.err`), so
/// that nothing blocks on a full pipe; killed if the test fails first.
fn spawn(lab: &Lab, name: &str, mut command: Command) -> Reaped {
    let out = std::fs::File::create(lab.path(&format!("{name}.out"))).unwrap();
    let err = std::fs::File::create(lab.path(&format!("{name}.err"))).unwrap();
    Reaped::new(command.stdout(out).stderr(err).spawn().unwrap())
}

/// What a process started with [`spawn`] wrote.
fn said(lab: &Lab, name: &str) -> String {
    let read =
        |ext| std::fs::read_to_string(lab.path(&format!("{name}.{ext}"))).unwrap_or_default();
    format!("{}{}", read("out"), read("err"))
}

/// Waits for a process started with [`spawn`] to end; its exit code.
fn exit_code(child: Reaped) -> i32 {
    let status = child.wait_with_output().unwrap().status;
    status.code().unwrap_or(-1)
}

fn signal(child: &Reaped, signal: i32) {
    // Our own child, by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The run's records in the database's journal, as compact JSON text.
fn db_records(url: &str, run: &str) -> Vec<serde_json::Value> {
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

/// A run folder's local journal.
fn local_records(run_dir: &Path) -> Vec<serde_json::Value> {
    support::journal(run_dir)
}

#[test]
fn unlock_force_during_a_split_run_fences_every_controller_before_a_new_run_works_the_hosts() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let hosts = lab.host_names();
    // Nobody creates `never`: the split run's steps tick until they are killed.
    let one = lab.path("one.yaml");
    std::fs::write(&one, ticking_step("one", &lab.path("never"))).unwrap();
    let two = lab.path("two.yaml");
    let two_done = lab.path("two-done");
    std::fs::write(&two, ticking_step("two", &two_done)).unwrap();

    let mut args = deploy_args(&lab.inventory, &one);
    args.extend(["--regions", "r1", "--controller", "ctl-a"]);
    let mut a = spawn(&lab, "a", pony_db(&lab.path("state-a"), &url, &args));
    let run = stored_run(&url, &mut a);
    let r1 = lab.hosts_in(&["r1"]);
    wait_until("A's hosts to tick", || {
        r1.iter().all(|h| !ticks(&lab, h, "one").is_empty())
    });
    // Until B joins, the run waits for the regions nobody holds, and says so.
    let status = pony_db(&lab.path("state-c"), &url, &["status", &run])
        .output()
        .unwrap();
    let shown = text(&status);
    assert!(
        shown.contains("waiting: for regions r2, r3 to be joined"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("pony join {run} --regions r2,r3")),
        "{shown}"
    );
    let b = spawn(
        &lab,
        "b",
        pony_db(
            &lab.path("state-b"),
            &url,
            &["join", &run, "--regions", "r2,r3", "--controller", "ctl-b"],
        ),
    );
    wait_until("every host to tick for the split run", || {
        hosts.iter().all(|h| !ticks(&lab, h, "one").is_empty())
    });

    // `pony status` of the split run names each controller, not one pid.
    let status = pony_db(&lab.path("state-c"), &url, &["status", &run])
        .output()
        .unwrap();
    let shown = text(&status);
    assert!(
        shown.contains("by 2 controller(s)")
            && shown.contains(&format!("ctl-a (pid {} on", a.id()))
            && shown.contains(&format!("ctl-b (pid {} on", b.id())),
        "{shown}"
    );
    assert!(!shown.contains("state: running (pid"), "{shown}");
    assert!(shown.contains("\njoined "), "{shown}");
    assert!(!shown.contains("\nresumed "), "{shown}");

    // A live lease is refused without --force (exit 4, naming the run).
    let refused = pony_db(&lab.path("state-c"), &url, &["unlock", "lab"])
        .output()
        .unwrap();
    assert_eq!(code(&refused), 4, "{}", text(&refused));
    assert!(text(&refused).contains(&run), "{}", text(&refused));

    let records_before = db_records(&url, &run).len();
    let unlocked = pony_db(&lab.path("state-c"), &url, &["unlock", "lab", "--force"])
        .output()
        .unwrap();
    let unlocked_at = now_ns();
    let says = text(&unlocked);
    assert_eq!(code(&unlocked), 0, "{says}");
    assert!(says.contains("broke the live lock"), "{says}");
    assert!(
        says.contains("controller ctl-a") && says.contains("controller ctl-b"),
        "{says}"
    );
    assert!(
        says.contains("stopped and its commands on the hosts are dead"),
        "{says}"
    );
    // Unlock said the commands are dead: no host ticks for the split run after it.
    for host in &hosts {
        let last = ticks(&lab, host, "one").into_iter().max().unwrap();
        assert!(last < unlocked_at, "{host} ticked after unlock returned");
    }
    let fenced_records = db_records(&url, &run);

    // A new deploy from a fourth folder takes the inventory and works every host.
    let d = pony_db(
        &lab.path("state-d"),
        &url,
        &deploy_args(&lab.inventory, &two),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let d = Reaped::new(d);
    wait_until("every host to tick for the new run", || {
        hosts.iter().all(|h| !ticks(&lab, h, "two").is_empty())
    });
    std::fs::write(&two_done, "").unwrap();
    let d = d.wait_with_output().unwrap();
    assert_eq!(code(&d), 0, "D: {}", text(&d));

    // The fenced controllers stopped as on a lost lease: exit 130.
    assert_eq!(exit_code(a), 130, "A: {}", said(&lab, "a"));
    assert_eq!(exit_code(b), 130, "B: {}", said(&lab, "b"));
    assert!(
        said(&lab, "a").contains("broken with `pony unlock --force`"),
        "{}",
        said(&lab, "a")
    );

    assert_no_overlap(&lab, &hosts, "one", "two");
    // Nothing of the fenced controllers reached the database after the unlock, though
    // each journaled its killed tasks locally.
    let after = db_records(&url, &run);
    assert_eq!(
        after.len(),
        fenced_records.len(),
        "records after the unlock: {:#?}",
        &after[fenced_records.len()..]
    );
    assert!(fenced_records.len() >= records_before);
    for state in ["state-a", "state-b"] {
        let (_, run_dir) = only_run(&lab.path(state));
        let interrupted: Vec<_> = local_records(&run_dir)
            .into_iter()
            .filter(|r| r["state"] == "interrupted")
            .collect();
        assert!(!interrupted.is_empty(), "{state} journaled no kill");
        for record in &interrupted {
            assert!(
                !after.contains(record),
                "{state}'s record reached the database after the unlock: {record}"
            );
            assert!(
                record["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("killed on the host"),
                "{record}"
            );
        }
    }
    assert_eq!(
        query_count(
            &url,
            "SELECT count(*) FROM region_leases WHERE run_id = $1",
            &[&run]
        ),
        0
    );
}

#[test]
fn a_frozen_controller_woken_after_a_takeover_writes_nothing_and_kills_nothing_of_the_new_run() {
    let lab = lab_with(1, 1, 2);
    let pg = server();
    let url = pg.url();
    let hosts = lab.host_names();
    let gate = lab.path("gate");
    let playbook = lab.path("tick.yaml");
    std::fs::write(&playbook, ticking_step("old", &gate)).unwrap();
    let mut old = spawn(
        &lab,
        "old",
        pony_db(
            &lab.path("state-a"),
            &url,
            &deploy_args(&lab.inventory, &playbook),
        ),
    );
    let run = stored_run(&url, &mut old);
    wait_until("every host to tick for the first controller", || {
        hosts.iter().all(|h| !ticks(&lab, h, "old").is_empty())
    });
    signal(&old, libc::SIGSTOP);
    wait_until("the controller to be stopped", || {
        support::proc_stat(old.id()).is_some_and(|(state, _)| state == 'T')
    });
    // Its lease ends as its expiry would; another machine takes the run over, killing
    // the copies of the step it finds running.
    assert_eq!(expire_leases(&url, "leases", "true"), 1);
    for host in &hosts {
        std::fs::write(lab.root(host).join("second"), "").unwrap();
    }
    let new = spawn(
        &lab,
        "new",
        pony_db(&lab.path("state-b"), &url, &["resume", &run]),
    );
    wait_until("every host to tick for the new controller", || {
        hosts.iter().all(|h| !ticks(&lab, h, "new").is_empty())
    });
    let (_, old_dir) = only_run(&lab.path("state-a"));
    let old_local_before = local_records(&old_dir).len();
    let db_before = db_records(&url, &run);

    signal(&old, libc::SIGCONT);
    assert_eq!(exit_code(old), 130, "{}", said(&lab, "old"));
    // The new run's steps still tick on every host: nothing of theirs was killed.
    let seen: Vec<usize> = hosts.iter().map(|h| ticks(&lab, h, "new").len()).collect();
    wait_until(
        "the new run's steps to tick on after the old one stopped",
        || {
            hosts
                .iter()
                .zip(&seen)
                .all(|(h, &n)| ticks(&lab, h, "new").len() > n + 2)
        },
    );
    // The woken controller journaled locally what it made of its end, and none of it
    // reached the database.
    let old_local = local_records(&old_dir);
    assert!(
        old_local.len() > old_local_before,
        "the woken controller journaled nothing"
    );
    let db_now = db_records(&url, &run);
    for record in &old_local[old_local_before..] {
        assert!(
            !db_now.contains(record),
            "a record of the fenced controller reached the database: {record}"
        );
    }
    assert_eq!(
        db_now.len(),
        db_before.len(),
        "{:#?}",
        &db_now[db_before.len()..]
    );

    std::fs::write(&gate, "").unwrap();
    assert_eq!(exit_code(new), 0, "{}", said(&lab, "new"));
    assert_no_overlap(&lab, &hosts, "old", "new");
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn processes_running(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| support::is_running(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_lease_lost_mid_step_kills_the_step_on_every_host() {
    let lab = lab_with(1, 1, 2);
    let pg = server();
    let url = pg.url();
    let hosts = lab.host_names();
    // A gate path unique to this test names its steps' processes in /proc.
    let gate: PathBuf = lab.path("lost-lease-gate");
    let playbook = lab.path("tick.yaml");
    std::fs::write(&playbook, ticking_step("one", &gate)).unwrap();
    // A short lease, so that the heartbeat notices within a second; nothing here waits
    // on it: the step runs until it is killed.
    let mut command = pony_db(
        &lab.path("state-a"),
        &url,
        &deploy_args(&lab.inventory, &playbook),
    );
    command.env("PONY_LEASE", "3s");
    let mut controller = spawn(&lab, "a", command);
    let run = stored_run(&url, &mut controller);
    wait_until("every host to tick", || {
        hosts.iter().all(|h| !ticks(&lab, h, "one").is_empty())
    });
    // Another controller takes the lease (a new token), as a takeover does.
    let taken = db(&url)
        .execute(
            "UPDATE leases SET holder = 'another-controller' WHERE run_id = $1",
            &[&run],
        )
        .unwrap();
    assert_eq!(taken, 1);
    assert_eq!(exit_code(controller), 130, "{}", said(&lab, "a"));
    let needle = gate.to_string_lossy().to_string();
    wait_until("no process of the step to be left", || {
        processes_running(&needle).is_empty()
    });
    let counts: Vec<usize> = hosts.iter().map(|h| ticks(&lab, h, "one").len()).collect();
    // Ten of the step's periods: a live step would have ticked in each.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let now: Vec<usize> = hosts.iter().map(|h| ticks(&lab, h, "one").len()).collect();
    assert_eq!(counts, now, "a host ticked after the controller stopped");
    let (_, run_dir) = only_run(&lab.path("state-a"));
    let interrupted: Vec<_> = local_records(&run_dir)
        .into_iter()
        .filter(|r| r["state"] == "interrupted")
        .collect();
    assert_eq!(interrupted.len(), hosts.len(), "{interrupted:#?}");
    for record in interrupted {
        assert!(
            record["error"]
                .as_str()
                .unwrap_or_default()
                .contains("killed on the host"),
            "{record}"
        );
    }
}

/// The lease rules under the commands, through the library against the real server: a
/// split run's controller renews (heartbeat and journal batch alike) only while the
/// run's inventory lease is there too; `break_lease` refuses a live lease without force,
/// and with it deletes the inventory's and every region lease in one go, fences each
/// holder (its heartbeat hears of it and says the lease is lost) and hands the unlock the
/// holder's word once it stopped.
#[test]
fn a_split_controllers_leases_stand_or_fall_with_the_runs_inventory_lease() {
    use pony::state::deadline::LeaseLost;
    use pony::state::pg::fence::{self, Unlocked};
    use pony::state::pg::{regions, PgStore};
    let pg = server();
    let url = pg.url();
    let store = PgStore::open(&url, std::time::Duration::from_secs(30)).unwrap();
    let lost = LeaseLost::default();
    let held = regions::acquire(
        &store,
        "global",
        "run-1",
        &["r1".to_string(), "r2".to_string()],
        "ctl-a",
        true,
        lost.clone(),
    )
    .unwrap();
    let mut client = store.connect().unwrap();
    let renew = |client: &mut postgres::Client| {
        regions::renew(client, "run-1", "global", &held.holder, 2, 30.0).unwrap()
    };
    assert!(renew(&mut client));

    // The inventory's lease alone taken by another holder (as an unlock of the inventory
    // lease alone and a new deploy would leave it): the region renewal fails.
    db(&url)
        .execute("UPDATE leases SET holder = 'someone-else'", &[])
        .unwrap();
    assert!(
        !renew(&mut client),
        "renewed regions whose run lost the inventory"
    );
    db(&url)
        .execute("UPDATE leases SET holder = 'run:run-1'", &[])
        .unwrap();
    assert!(renew(&mut client));

    match fence::break_lease(&store, "global", "test", false).unwrap() {
        Unlocked::Refused(info) => assert_eq!(info.run_id, "run-1"),
        other => panic!("a live lease was broken without force: {other:?}"),
    }
    assert!(renew(&mut client), "a refused unlock broke something");
    let broken = match fence::break_lease(&store, "global", "test", true).unwrap() {
        Unlocked::Broken(broken) => broken,
        other => panic!("{other:?}"),
    };
    assert!(broken.live);
    assert_eq!(broken.fenced.len(), 1, "{:?}", broken.fenced);
    assert_eq!(broken.fenced[0].holder, held.holder);
    assert_eq!(broken.fenced[0].controller.as_deref(), Some("ctl-a"));
    assert!(!renew(&mut client), "a fenced holder renewed");
    assert_eq!(
        query_count(
            &url,
            "SELECT (SELECT count(*) FROM leases) + (SELECT count(*) FROM region_leases)",
            &[]
        ),
        0
    );
    // The heartbeat hears of the fence (it renews every ten seconds otherwise).
    wait_until("the heartbeat to say the lease is lost", || lost.is_lost());
    fence::confirm_stopped(&store, &held.holder, "stopped; 0 running command(s) killed").unwrap();
    let answers = fence::wait_stopped(&store, &broken.fenced, std::time::Duration::ZERO).unwrap();
    assert_eq!(
        answers[0].1.as_deref(),
        Some("stopped; 0 running command(s) killed")
    );
    assert!(fence::broken_by(&store, &held.holder).unwrap().is_some());
    drop(held);
}

/// `pony unlock --force` of a holder that cannot answer (frozen with SIGSTOP) waits at
/// most a lease, then says that its commands may still run on the hosts (true: they
/// do). Woken, the holder writes nothing more into the database, and kills its own
/// commands (exit 130).
#[test]
fn unlock_force_of_a_frozen_holder_says_its_commands_may_still_run_and_it_kills_them_on_waking() {
    let lab = lab_with(1, 1, 2);
    let pg = server();
    let url = pg.url();
    let hosts = lab.host_names();
    let gate = lab.path("frozen-holder-gate");
    let playbook = lab.path("tick.yaml");
    std::fs::write(&playbook, ticking_step("one", &gate)).unwrap();
    let mut holder = spawn(
        &lab,
        "holder",
        pony_db(
            &lab.path("state-a"),
            &url,
            &deploy_args(&lab.inventory, &playbook),
        ),
    );
    let run = stored_run(&url, &mut holder);
    wait_until("every host to tick", || {
        hosts.iter().all(|h| !ticks(&lab, h, "one").is_empty())
    });
    signal(&holder, libc::SIGSTOP);
    wait_until("the controller to be stopped", || {
        support::proc_stat(holder.id()).is_some_and(|(state, _)| state == 'T')
    });
    let records = db_records(&url, &run).len();
    // The unlock's own lease setting bounds its wait (the holder's lease is the tests'
    // long one, so it is live throughout).
    let unlocked = pony_db(&lab.path("state-c"), &url, &["unlock", "lab", "--force"])
        .env("PONY_LEASE", "2s")
        .output()
        .unwrap();
    let says = text(&unlocked);
    assert_eq!(code(&unlocked), 0, "{says}");
    assert!(says.contains("no word within 2s"), "{says}");
    assert!(
        says.contains("their commands on the hosts may still run"),
        "{says}"
    );
    // True: the frozen holder's steps still tick.
    let seen: Vec<usize> = hosts.iter().map(|h| ticks(&lab, h, "one").len()).collect();
    wait_until("the frozen holder's steps to tick on", || {
        hosts
            .iter()
            .zip(&seen)
            .all(|(h, &n)| ticks(&lab, h, "one").len() > n)
    });

    signal(&holder, libc::SIGCONT);
    assert_eq!(exit_code(holder), 130, "{}", said(&lab, "holder"));
    let needle = gate.to_string_lossy().to_string();
    wait_until("no process of the step to be left", || {
        processes_running(&needle).is_empty()
    });
    assert_eq!(
        db_records(&url, &run).len(),
        records,
        "the fenced holder wrote"
    );
    let (_, run_dir) = only_run(&lab.path("state-a"));
    let killed = local_records(&run_dir)
        .into_iter()
        .filter(|r| {
            r["state"] == "interrupted"
                && r["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("killed on the host")
        })
        .count();
    assert_eq!(killed, hosts.len(), "{}", said(&lab, "holder"));
}
