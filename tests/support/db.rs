//! The shared-state tests' database: a real PostgreSQL started for the test
//! (`pony::lab::postgres`, stopped when dropped), pony pointed at it, and a client to look
//! inside.

use pony::lab::postgres::{Postgres, Sync};
use std::path::Path;
use std::process::Command;

pub fn server() -> Postgres {
    Postgres::start(Sync::Fast).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e:#}"))
}

/// How long pony's leases last in the tests: long enough that a controller starved by a
/// loaded machine never loses its lease by accident. A test that needs a dead holder's
/// lease expired ends it with [`expire_leases`] (as its expiry would, by the database's
/// clock); only a test about losing a lease sets a short one itself.
pub const LEASE: &str = "30s";

/// pony with its own state folder `state`, sharing the database `url`, leases of
/// [`LEASE`].
pub fn pony_db(state: &Path, url: &str, args: &[&str]) -> Command {
    let mut command = super::pony(state, args);
    command.env("PONY_STATE", url).env("PONY_LEASE", LEASE);
    command
}

/// Ends now every lease (the inventory's and the regions') that `holder_sql` selects: a
/// SQL condition on the row (`run_id = 'X'`, `controller = 'ctl-b'`), as if its expiry
/// had come. Returns how many rows it ended; the rows stay, expired, as a dead holder's do.
pub fn expire_leases(url: &str, table: &str, condition: &str) -> u64 {
    assert!(matches!(table, "leases" | "region_leases"), "{table}");
    db(url)
        .execute(
            &format!("UPDATE {table} SET expires = now() WHERE ({condition}) AND expires > now()"),
            &[],
        )
        .unwrap()
}

/// A client of the database `url`, in pony's schema.
pub fn db(url: &str) -> postgres::Client {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client.batch_execute("SET search_path TO pony").unwrap();
    client
}

/// The number one `SELECT count(*) …` query of the database `url` returns.
pub fn query_count(
    url: &str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + std::marker::Sync)],
) -> i64 {
    db(url).query_one(sql, params).unwrap().get(0)
}

/// The run the first controller stored (fails with its stderr if it ended first).
pub fn stored_run(url: &str, first: &mut super::Reaped) -> String {
    let mut id = None;
    super::wait_until("the run to be stored", || {
        first.still_running("the first controller");
        id = db(url)
            .query_opt("SELECT run_id FROM runs", &[])
            .ok()
            .flatten()
            .map(|r| r.get(0));
        id.is_some()
    });
    id.unwrap()
}
