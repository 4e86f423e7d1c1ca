//! The shared-state tests' database: a real PostgreSQL started for the test
//! (`pony::lab::postgres`, stopped when dropped), pony pointed at it, and a client to look
//! inside.

use pony::lab::postgres::{Postgres, Sync};
use std::path::Path;
use std::process::Command;

pub fn server() -> Postgres {
    Postgres::start(Sync::Fast).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e:#}"))
}

/// pony with its own state folder `state`, sharing the database `url`, leases of 2s.
pub fn pony_db(state: &Path, url: &str, args: &[&str]) -> Command {
    let mut command = super::pony(state, args);
    command.env("PONY_STATE", url).env("PONY_LEASE", "2s");
    command
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
