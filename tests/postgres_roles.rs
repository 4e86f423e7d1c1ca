//! Least privilege in the state database (`--state postgres://…`, a real PostgreSQL per
//! test): `pony db migrate` creates and migrates the schema as its owner; a role with only
//! USAGE and SELECT on the schema reads runs (`history`, `status`, `watch`) and is refused
//! a deploy naming the privilege it lacks, before anything runs on a host; a role that may not
//! create the schema is told to run `pony db migrate`; an outdated schema is migrated only
//! by `pony db migrate`; the database's own message is printed once, without the password.

mod support;

use std::path::Path;
use std::process::Output;
use support::code;
use support::db::{pony_db, server};
use support::{deploy_args, pony, text, write_plan, TINY_INVENTORY};

const PLAYBOOK: &str = "\
name: roles
vars: { bad: none }
steps:
  - name: prepare
    run: echo prepare >> ran
  - name: check
    needs: [prepare]
    run: test {{ host.name }} != {{ bad }}
";

const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// The migrations this pony ships, in order (their SQL, as `src/state/pg/migrations/`
/// holds them): a test builds an older schema from all but the last.
fn migrations() -> Vec<(i32, String)> {
    let dir = support::crate_root().join("src/state/pg/migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            let version = name[..4].parse().unwrap();
            (version, std::fs::read_to_string(path).unwrap())
        })
        .collect()
}

/// The server's URL as `role` with `password` (loopback trust auth: the server does not
/// check it, but pony must never print it).
fn as_role(url: &str, role: &str, password: &str) -> String {
    let rest = url.strip_prefix("postgres://pony@").expect("the lab's URL");
    format!("postgres://{role}:{password}@{rest}")
}

/// The superuser's client, in no particular schema.
fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a refusal must be: exit 2, every part of `expected` in stderr, the database's
/// message not wrapped in repeated driver words, and no password anywhere.
fn refused(output: &Output, expected: &[&str], passwords: &[&str]) {
    assert_eq!(code(output), 2, "{}", text(output));
    let err = stderr(output);
    for part in expected {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    let all = text(output);
    assert!(!all.contains("db error: db error"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    for password in passwords {
        assert!(!all.contains(password), "password printed: {all}");
    }
}

/// What every host's `ran` file holds (the steps that ran there).
fn ran(state: &Path) -> Vec<String> {
    HOSTS
        .iter()
        .map(|host| {
            std::fs::read_to_string(state.join("hosts").join(host).join("ran")).unwrap_or_default()
        })
        .collect()
}

fn schemas_named(url: &str, name: &str) -> i64 {
    admin(url)
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_read_only_role_reads_runs_and_is_refused_a_deploy_naming_the_privilege() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, PLAYBOOK);
    let mut admin = admin(&url);
    admin
        .batch_execute(
            "CREATE ROLE pony_owner LOGIN;
             GRANT CREATE ON DATABASE postgres TO pony_owner;
             CREATE ROLE pony_writer LOGIN;
             CREATE ROLE pony_reader LOGIN;",
        )
        .unwrap();
    let (owner_pw, writer_pw, reader_pw) = ("own-pw-5v1q", "wri-pw-8k2z", "rea-pw-3m7x");
    let passwords = [owner_pw, writer_pw, reader_pw];
    let owner = as_role(&url, "pony_owner", owner_pw);
    let writer = as_role(&url, "pony_writer", writer_pw);
    let reader = as_role(&url, "pony_reader", reader_pw);
    let state = dir.path().join("state");
    let elsewhere = dir.path().join("elsewhere");
    let deploy = |as_url: &str, extra: &[&str]| {
        let mut args = deploy_args(&inventory, &playbook);
        args.extend_from_slice(extra);
        pony_db(&state, as_url, &args).output().unwrap()
    };

    // A fresh database: reading creates nothing, and says why there are no runs.
    let history = pony_db(&elsewhere, &reader, &["history"]).output().unwrap();
    assert_eq!(code(&history), 0, "{}", text(&history));
    assert!(
        stdout(&history).contains("pony has not created its schema `pony` there yet")
            && stdout(&history).contains("pony db migrate"),
        "{}",
        text(&history)
    );
    assert_eq!(schemas_named(&url, "pony"), 0, "a read created the schema");

    // A writer that may not create the schema: refused naming the privilege and the fix,
    // before any host is touched.
    let no_create = deploy(&writer, &[]);
    refused(
        &no_create,
        &[
            "has no schema `pony` yet",
            "role pony_writer may not migrate it: it lacks CREATE on database `postgres`",
            "hint: run `pony db migrate` once as a role with CREATE on database `postgres`",
        ],
        &passwords,
    );
    assert_eq!(ran(&state), ["", "", "", ""], "a refused deploy ran steps");
    assert_eq!(schemas_named(&url, "pony"), 0);

    // The owner migrates, once; again is nothing to do.
    let migrate = pony_db(&elsewhere, &owner, &["db", "migrate"])
        .output()
        .unwrap();
    assert_eq!(code(&migrate), 0, "{}", text(&migrate));
    let said = stdout(&migrate);
    let latest = migrations().last().unwrap().0;
    assert!(said.contains("created schema `pony`"), "{said}");
    assert!(
        said.contains("applied migration 0001: runs, journal and leases"),
        "{said}"
    );
    assert!(
        said.contains(&format!("is now at version {latest}")),
        "{said}"
    );
    assert!(!said.contains(owner_pw), "{said}");
    let again = pony_db(&elsewhere, &owner, &["db", "migrate"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(
        stdout(&again).contains(&format!(
            "at version {latest}, the latest this pony knows: nothing to do"
        )),
        "{}",
        text(&again)
    );
    let schema_owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'pony'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(schema_owner, "pony_owner");

    // The writer, before its grants: refused naming every privilege, with the GRANTs.
    let ungranted = deploy(&writer, &[]);
    refused(
        &ungranted,
        &[
            "role pony_writer may not run or change runs",
            "it lacks USAGE on schema pony",
            "INSERT on",
            "hint: as the schema's owner role `pony_owner`",
            "GRANT USAGE ON SCHEMA pony TO pony_writer;",
        ],
        &passwords,
    );
    assert_eq!(ran(&state), ["", "", "", ""]);

    // The owner grants what the docs say: the writer runs, the reader only reads.
    let mut as_owner = postgres::Client::connect(&owner, postgres::NoTls).unwrap();
    as_owner
        .batch_execute(
            "GRANT USAGE ON SCHEMA pony TO pony_writer, pony_reader;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pony TO pony_writer;
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA pony TO pony_writer;
             GRANT SELECT ON ALL TABLES IN SCHEMA pony TO pony_reader;",
        )
        .unwrap();
    let ok = deploy(&writer, &[]);
    assert_eq!(code(&ok), 0, "{}", text(&ok));
    assert_eq!(ran(&state), vec!["prepare\n".to_string(); 4]);
    let failed = deploy(&writer, &["--var", "bad=h2"]);
    assert_eq!(code(&failed), 1, "{}", text(&failed));
    let after_runs = ran(&state);
    let runs: Vec<String> = admin
        .query("SELECT run_id FROM pony.runs ORDER BY created", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs.len(), 2);

    // The reader, from another state folder, reads both runs as the writer does.
    let history = pony_db(&elsewhere, &reader, &["history"]).output().unwrap();
    assert_eq!(code(&history), 0, "{}", text(&history));
    let by_writer = pony_db(&elsewhere, &writer, &["history"]).output().unwrap();
    assert_eq!(stdout(&history), stdout(&by_writer));
    for run in &runs {
        assert!(
            stdout(&history).contains(run.as_str()),
            "{}",
            text(&history)
        );
    }
    let json = pony_db(&elsewhere, &reader, &["--output", "json", "history"])
        .output()
        .unwrap();
    assert_eq!(code(&json), 0, "{}", text(&json));
    let exits: Vec<(String, i64)> = support::json_lines(&stdout(&json))
        .iter()
        .map(|v| {
            (
                v["run_id"].as_str().unwrap_or_default().to_string(),
                v["exit_code"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        exits,
        [(runs[1].clone(), 1), (runs[0].clone(), 0)],
        "newest first: {}",
        stdout(&json)
    );
    for run in &runs {
        let status = pony_db(&elsewhere, &reader, &["status", run])
            .output()
            .unwrap();
        assert_eq!(code(&status), 0, "{}", text(&status));
        let by_writer = pony_db(&state, &writer, &["status", run]).output().unwrap();
        assert_eq!(stdout(&status), stdout(&by_writer), "status {run}");
    }
    let failed_status = pony_db(&elsewhere, &reader, &["status", &runs[1]])
        .output()
        .unwrap();
    assert!(
        stdout(&failed_status).contains("h2 (step check, exit 1"),
        "{}",
        text(&failed_status)
    );
    // Without a run id: the newest.
    let newest = pony_db(&elsewhere, &reader, &["status"]).output().unwrap();
    assert_eq!(code(&newest), 0, "{}", text(&newest));
    assert!(stdout(&newest).contains(&runs[1]), "{}", text(&newest));

    // A watcher with the reader's role: both runs ended, so no controller is gone.
    let watch = pony_db(&elsewhere, &reader, &["watch"]).output().unwrap();
    assert_eq!(code(&watch), 0, "{}", text(&watch));
    assert!(!stdout(&watch).contains("is gone"), "{}", text(&watch));

    // The reader may not deploy nor send a command: refused naming what it lacks,
    // nothing stored, nothing run.
    let denied = deploy(&reader, &[]);
    refused(
        &denied,
        &[
            "role pony_reader may not run or change runs",
            "it lacks INSERT on",
            "hint: as the schema's owner role `pony_owner`",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pony TO pony_reader;",
        ],
        &passwords,
    );
    assert_eq!(ran(&state), after_runs, "a refused deploy ran steps");
    let stored: i64 = admin
        .query_one("SELECT count(*) FROM pony.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
    let pause = pony_db(&elsewhere, &reader, &["pause", &runs[1]])
        .output()
        .unwrap();
    refused(
        &pause,
        &[
            "role pony_reader may not send commands to runs",
            "it lacks INSERT on control",
        ],
        &passwords,
    );
}

#[test]
fn an_outdated_schema_is_migrated_only_by_pony_db_migrate() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, PLAYBOOK);
    let state = dir.path().join("state");
    let migrations = migrations();
    let (latest, _) = migrations.last().unwrap().clone();
    let older = latest - 1;

    // The schema as the previous pony left it.
    let mut admin = admin(&url);
    admin
        .batch_execute(
            "CREATE SCHEMA pony; SET search_path TO pony;
             CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 applied timestamptz NOT NULL DEFAULT now());",
        )
        .unwrap();
    for (version, sql) in &migrations[..migrations.len() - 1] {
        admin.batch_execute(sql).unwrap();
        admin
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, 'old')",
                &[version],
            )
            .unwrap();
    }
    let versions = |admin: &mut postgres::Client| -> Vec<i32> {
        admin
            .query("SELECT version FROM pony.schema_migrations ORDER BY 1", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };

    // Reading and writing commands alike say to migrate; a deploy, even by the
    // superuser, does not migrate it on its own (controllers of the older pony may run).
    let outdated =
        format!("schema `pony` is at version {older} and this pony needs version {latest}");
    let history = pony_db(&state, &url, &["history"]).output().unwrap();
    refused(
        &history,
        &[
            &outdated,
            "hint: run `pony db migrate` once as the schema's owner role `pony`",
        ],
        &[],
    );
    let deploy = pony_db(&state, &url, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    refused(&deploy, &[&outdated, "pony db migrate"], &[]);
    assert_eq!(ran(&state), ["", "", "", ""]);
    assert_eq!(versions(&mut admin), (1..=older).collect::<Vec<_>>());

    // pony db migrate applies exactly the missing one.
    let migrate = pony_db(&state, &url, &["--output", "json", "db", "migrate"])
        .output()
        .unwrap();
    assert_eq!(code(&migrate), 0, "{}", text(&migrate));
    let said: serde_json::Value = serde_json::from_str(stdout(&migrate).trim()).unwrap();
    assert_eq!(said["created_schema"], false, "{said}");
    assert_eq!(said["version"], latest, "{said}");
    assert_eq!(
        said["applied"].as_array().unwrap().len(),
        1,
        "only the missing migration: {said}"
    );
    assert_eq!(said["applied"][0]["version"], latest, "{said}");
    assert_eq!(versions(&mut admin), (1..=latest).collect::<Vec<_>>());
    let deploy = pony_db(&state, &url, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(code(&deploy), 0, "{}", text(&deploy));
    assert_eq!(ran(&state), vec!["prepare\n".to_string(); 4]);

    // Without a database, `db migrate` says what it needs.
    let nothing = pony(&state, &["db", "migrate"]).output().unwrap();
    refused(&nothing, &["--state", "none is given", "postgres://"], &[]);

    // A role the server does not know: its own message, once, and no password.
    let ghost = as_role(&url, "ghost", "gho-pw-9t4r");
    let unknown = pony_db(&state, &ghost, &["history"]).output().unwrap();
    refused(
        &unknown,
        &[
            "cannot reach the state database",
            "role \"ghost\" does not exist",
        ],
        &["gho-pw-9t4r"],
    );
    assert_eq!(
        stderr(&unknown).matches("does not exist").count(),
        1,
        "{}",
        text(&unknown)
    );
}

#[test]
fn a_role_with_create_on_the_database_creates_a_missing_schema_with_its_first_deploy() {
    let pg = server();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, PLAYBOOK);
    let state = dir.path().join("state");
    admin(&url)
        .batch_execute(
            "CREATE ROLE ops LOGIN; GRANT CREATE ON DATABASE postgres TO ops;
             CREATE ROLE auditor LOGIN;",
        )
        .unwrap();
    let ops = as_role(&url, "ops", "ops-pw-1d6w");
    let auditor = as_role(&url, "auditor", "aud-pw-2c8e");
    let deploy = pony_db(&state, &ops, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(code(&deploy), 0, "{}", text(&deploy));
    assert_eq!(ran(&state), vec!["prepare\n".to_string(); 4]);
    assert_eq!(schemas_named(&url, "pony"), 1);
    // Another installation's schema, as `?schema=`: created by its own first deploy.
    let eu = format!("{ops}?schema=mail_eu");
    let deploy = pony_db(&state, &eu, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(code(&deploy), 0, "{}", text(&deploy));
    assert_eq!(schemas_named(&url, "mail_eu"), 1);

    // A role with no grant at all on the existing schema: told every privilege reading
    // needs, and the GRANTs that give them.
    let history = pony_db(&state, &auditor, &["history"]).output().unwrap();
    refused(
        &history,
        &[
            "role auditor may not read runs (status, history, watch)",
            "it lacks USAGE on schema pony; SELECT on",
            "GRANT USAGE ON SCHEMA pony TO auditor; GRANT SELECT ON ALL TABLES IN SCHEMA pony TO auditor;",
        ],
        &["aud-pw-2c8e", "ops-pw-1d6w"],
    );
}
