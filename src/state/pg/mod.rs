//! PostgreSQL as the shared state of runs (`--state postgres://…`): runs and their
//! snapshots, the journal (one row per record) and one lease per inventory, so that any
//! machine that reaches the database can see, resume or roll back a run.
//!
//! This module owns the connection settings, the schema and its migrations, and the
//! `runs` and `journal` tables; [`lease`] owns the `leases` table and [`sink`] writes the
//! journal. The controller still keeps its run folder (snapshot, `journal.jsonl`, host
//! logs) as a local copy; the database is what other machines read.
//!
//! The client is the synchronous `postgres` crate (tokio-postgres driven by a private
//! runtime): the journal writer and the lease heartbeat are plain threads, as the local
//! journal's writer is, and the commands read before the run's runtime starts.

pub mod backend;
pub mod bounds;
pub mod control;
pub mod fence;
mod fence_channel;
pub mod lease;
pub mod regions;
pub mod schema;
pub mod sink;
mod split;
pub mod tls;

use super::journal::Record;
use crate::state::backend::Access;
use postgres::{Client, NoTls};
pub use schema::Migrated;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The schema pony uses unless the URL says `?schema=NAME`.
const DEFAULT_SCHEMA: &str = "pony";

/// Why the database cannot be used. A driver error is kept as the text
/// [`PgStore::describe`] makes of it, not as a `source`: the driver's own `Display` is
/// only its kind ("db error"), and a chain of sources printed it once per level.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("--state {url}: {problem}\n  hint: give it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME][&sslmode=verify-full&sslrootcert=FILE]")]
    BadUrl { url: String, problem: String },
    #[error("cannot reach the state database {url}: {problem}\n  hint: {hint}")]
    Connect {
        url: String,
        hint: String,
        problem: String,
    },
    #[error("state database {url}: {what}: {problem}")]
    Query {
        url: String,
        what: String,
        problem: String,
    },
    /// The database changed under a command (another controller acted at the same time).
    #[error("{0}")]
    Conflict(String),
    #[error("cannot start a thread for the state database: {0}")]
    Thread(String),
    #[error("the state database {url} did not answer {what} within {after:?}: it is hung or out of reach (a stopped server, a held lock, a dropped link)")]
    Hung {
        url: String,
        what: String,
        after: Duration,
    },
    #[error("the state database {url} has schema version {found}, newer than this pony knows ({known})\n  hint: run a newer pony against it")]
    TooNew { url: String, found: i32, known: i32 },
    /// The schema is missing or behind, or the role lacks a privilege the command needs.
    #[error("state database {url}: {problem}\n  hint: {hint}")]
    Schema {
        url: String,
        problem: String,
        hint: String,
    },
}

/// A driver error as one line for people: the server's own words once (its message,
/// SQLSTATE, then its DETAIL and HINT), or the client-side error with its
/// causes (a refused connection, a certificate the TLS check refused).
pub fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; server hint: {hint}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// Where the shared state lives and how long a lease lasts without a heartbeat.
#[derive(Clone)]
pub struct PgStore {
    config: postgres::Config,
    /// `None` with `sslmode=disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    tls_mode: tls::Mode,
    /// The URL without its password, for messages.
    shown: String,
    schema: String,
    pub lease: Duration,
    /// The connection reads share (a command lists and reads many runs).
    reader: Arc<Mutex<Option<Client>>>,
    /// False when a reading command found no schema (or none of pony's tables in it):
    /// no run was ever stored there, and reads never create it.
    created: bool,
    /// How long one call may take before pony stops waiting for it (see [`bounds`]).
    bound: Duration,
    /// This controller's own count of its lease (see [`deadline`]).
    clock: Arc<crate::state::deadline::LeaseClock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.shown)
    }
}

/// Kept here too so that state code names it where it always has; the function is a
/// redaction concern and lives in [`crate::secret`].
pub use crate::secret::redact_password;

/// Whether a `--state` value names a PostgreSQL database.
pub fn is_url(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// What pony takes off the URL's query itself (the driver rejects keys it does not
/// know): `schema=NAME`, and the TLS settings.
struct OwnParams {
    /// The URL with the rest of its query.
    base: String,
    schema: String,
    tls: tls::TlsSettings,
}

/// Splits pony's own parameters off the URL's query.
fn take_params(url: &str) -> Result<OwnParams, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = DEFAULT_SCHEMA.to_string();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("schema=") {
            Some(name) => schema = name.to_string(),
            None => kept.push(pair),
        }
    }
    let tls = tls::TlsSettings::take(&mut kept)?;
    let valid = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!(
            "schema `{schema}` is not a plain lower-case name (letters, digits, _)"
        ));
    }
    let base = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(OwnParams { base, schema, tls })
}

impl PgStore {
    /// [`PgStore::open_as`] for a command that writes (it creates a missing schema if its
    /// role may).
    pub fn open(url: &str, lease: Duration) -> Result<PgStore, PgError> {
        Self::open_as(url, lease, Access::Write)
    }

    /// Parses the URL, connects once and checks the schema for `access`: its version (a
    /// missing schema is created first by a writing command whose role may; an older one
    /// is refused with the `pony db migrate` hint) and the role's privileges ([`schema`]).
    pub fn open_as(url: &str, lease: Duration, access: Access) -> Result<PgStore, PgError> {
        let mut store = Self::configure(url, lease)?;
        let mut client = store.connect_raw()?;
        store.created = store.prepare(&mut client, access)?;
        Ok(store)
    }

    /// Parses the URL into a store without connecting (`pony db migrate` connects itself).
    pub fn configure(url: &str, lease: Duration) -> Result<PgStore, PgError> {
        let shown = redact_password(url);
        let bad = |problem: String| PgError::BadUrl {
            url: shown.clone(),
            problem,
        };
        let OwnParams { base, schema, tls } = take_params(url).map_err(&bad)?;
        let mut config: postgres::Config = base
            .parse()
            .map_err(|e: postgres::Error| bad(e.to_string()))?;
        config.ssl_mode(tls.driver_mode());
        // A database that is hung (not down) must not freeze a controller: every
        // connection carries the bounds of [`bounds`] (unless the URL sets its own).
        let bound = bounds::call_bound(lease);
        bounds::apply(&mut config, lease);
        let connector = tls.connector().map_err(&bad)?;
        let store = PgStore {
            config,
            tls: connector,
            tls_mode: tls.mode,
            shown,
            schema,
            lease,
            reader: Arc::default(),
            created: true,
            bound,
            clock: Arc::new(crate::state::deadline::LeaseClock::new(lease)),
        };
        Ok(store)
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How long one call to the database may take before pony stops waiting for it.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// This controller's own count of its lease: renewals that went through move its
    /// deadline on; the run stops once it passes (see [`deadline`]).
    pub fn lease_clock(&self) -> &Arc<crate::state::deadline::LeaseClock> {
        &self.clock
    }

    /// Connects, waiting at most the connect bound: the driver's `connect_timeout` only
    /// covers the TCP connect, and a server that accepted the connection but is stopped
    /// (SIGSTOP, a hung host) never answers the startup packet.
    fn connect_raw(&self) -> Result<Client, PgError> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let after = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(self.bound);
        let connected = self.bounded("the connection", after, move || match tls {
            Some(tls) => config.connect(tls),
            None => config.connect(NoTls),
        })?;
        connected.map_err(|source| PgError::Connect {
            url: self.shown.clone(),
            hint: tls::hint(self.tls_mode, &source),
            problem: self.describe(&source),
        })
    }

    /// Runs `call` (blocking calls to the database) on a thread of its own and waits at
    /// most `after` for it: the synchronous client has no timeout of its own, and a
    /// stopped server answers neither a query nor a TCP keepalive (the kernel acks both).
    /// A call that overruns is left to finish (or fail) on its own thread, whatever it
    /// holds dropped there.
    pub fn bounded<T: Send + 'static>(
        &self,
        what: &str,
        after: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PgError> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("pony-db-call".into())
            .spawn(move || {
                let _ = done.send(call());
            })
            .map_err(|e| PgError::Thread(e.to_string()))?;
        result.recv_timeout(after).map_err(|_| PgError::Hung {
            url: self.shown.clone(),
            what: what.to_string(),
            after,
        })
    }

    /// A new connection in the installation's schema.
    pub fn connect(&self) -> Result<Client, PgError> {
        let mut client = self.connect_raw()?;
        client
            .batch_execute(&format!("SET search_path TO {}", self.schema))
            .map_err(|e| self.query("setting the schema", e))?;
        Ok(client)
    }

    /// Runs `read` on the shared reading connection (opened on first use).
    pub fn with_reader<T>(
        &self,
        what: &str,
        read: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if reader.as_ref().is_none_or(|c| c.is_closed()) {
            *reader = Some(self.connect()?);
        }
        read(reader.as_mut().expect("connected above")).map_err(|e| self.query(what, e))
    }

    pub(crate) fn query(&self, what: &str, source: postgres::Error) -> PgError {
        PgError::Query {
            url: self.shown.clone(),
            what: what.to_string(),
            problem: self.describe(&source),
        }
    }

    /// [`describe`], with this URL's password (should anything repeat it) as `***`.
    pub fn describe(&self, error: &postgres::Error) -> String {
        let text = describe(error);
        match self.config.get_password().map(String::from_utf8_lossy) {
            Some(password) if !password.is_empty() => text.replace(&*password, "***"),
            _ => text,
        }
    }

    /// Whether pony's schema exists (false only for a reading command that found none).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The installation's schema (`?schema=NAME`, default `pony`).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Stores a new run's snapshot from its run folder (written just before).
    pub fn create_run(
        &self,
        id: &str,
        inventory: &str,
        playbook: &str,
        folder: &Path,
    ) -> anyhow::Result<()> {
        let file = |name: &str| {
            std::fs::read(folder.join(name))
                .map_err(|e| anyhow::anyhow!("{}: {e}", folder.join(name).display()))
        };
        let (inventory_yaml, playbook_yaml) = (
            file(super::snapshot::INVENTORY_FILE)?,
            file(super::snapshot::PLAYBOOK_FILE)?,
        );
        let vars = String::from_utf8(file(super::snapshot::VARS_FILE)?)?;
        let origin = String::from_utf8(file(super::snapshot::ORIGIN_FILE)?)?;
        let files = String::from_utf8(file(super::snapshot::FILES_FILE)?)?;
        let manifest: super::snapshot::Manifest = serde_json::from_str(&files)?;
        let blobs_dir = super::snapshot::blobs_dir(folder);
        let q = |e| self.query("storing the run's snapshot", e);
        let mut client = self.connect()?;
        let mut tx = client.transaction().map_err(q)?;
        // The blobs first (each content once, whichever run stored it first), then the
        // run that names them, in one transaction.
        for hash in manifest.hashes() {
            let known = tx
                .query_opt("SELECT 1 FROM blobs WHERE sha256 = $1", &[&hash])
                .map_err(q)?
                .is_some();
            if !known {
                let content = std::fs::read(blobs_dir.join(hash))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", blobs_dir.join(hash).display()))?;
                tx.execute(
                    "INSERT INTO blobs (sha256, content) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&hash, &content],
                )
                .map_err(q)?;
            }
        }
        tx.execute(
            "INSERT INTO runs (run_id, inventory, playbook, inventory_yaml, playbook_yaml, vars_json, origin_json, files_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&id, &inventory, &playbook, &inventory_yaml, &playbook_yaml, &vars, &origin, &files],
        )
        .map_err(q)?;
        tx.commit().map_err(q)?;
        Ok(())
    }

    /// Run ids, newest first: by the start time in the id, then by when the run was
    /// stored, then by id (the local folder's order).
    pub fn list(&self) -> Result<Vec<String>, PgError> {
        if !self.created {
            return Ok(Vec::new());
        }
        let rows = self.with_reader("listing runs", |c| {
            c.query(
                "SELECT run_id FROM runs ORDER BY left(run_id, 15) DESC, created DESC, run_id DESC",
                &[],
            )
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A run's journal records in order; rows that do not parse are counted apart.
    pub fn records(&self, id: &str) -> Result<(Vec<Record>, Vec<i64>), PgError> {
        let rows = self.with_reader("reading the journal", |c| {
            c.query(
                "SELECT seq, record::text FROM journal WHERE run_id = $1 ORDER BY seq",
                &[&id],
            )
        })?;
        let mut records = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for row in rows {
            let text: String = row.get(1);
            match serde_json::from_str(&text) {
                Ok(record) => records.push(record),
                Err(_) => bad.push(row.get::<_, i64>(0)),
            }
        }
        Ok((records, bad))
    }

    /// Writes a run's snapshot into `folder` (a run folder under the local state
    /// folder), so the plan rebuilds from it as from a local run. `journal` also
    /// replaces the folder's `journal.jsonl` with the database's records: the database
    /// is the truth, the folder its copy on this machine.
    pub fn checkout(&self, id: &str, folder: &Path, journal: bool) -> anyhow::Result<bool> {
        let row = self.with_reader("reading the run's snapshot", |c| {
            c.query_opt(
                "SELECT inventory_yaml, playbook_yaml, vars_json, origin_json, files_json FROM runs WHERE run_id = $1",
                &[&id],
            )
        })?;
        let Some(row) = row else { return Ok(false) };
        std::fs::create_dir_all(folder.join("logs"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", folder.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(folder.join(name), bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", folder.join(name).display()))
        };
        write(super::snapshot::INVENTORY_FILE, row.get::<_, &[u8]>(0))?;
        write(super::snapshot::PLAYBOOK_FILE, row.get::<_, &[u8]>(1))?;
        write(super::snapshot::VARS_FILE, row.get::<_, &str>(2).as_bytes())?;
        write(
            super::snapshot::ORIGIN_FILE,
            row.get::<_, &str>(3).as_bytes(),
        )?;
        // The run's sources: `files.json` and the blobs this machine lacks (a run
        // started by an older pony has neither).
        if let Some(files) = row.get::<_, Option<&str>>(4) {
            let manifest: super::snapshot::Manifest = serde_json::from_str(files)?;
            let blobs_dir = super::snapshot::blobs_dir(folder);
            std::fs::create_dir_all(&blobs_dir)
                .map_err(|e| anyhow::anyhow!("{}: {e}", blobs_dir.display()))?;
            let missing: Vec<String> = manifest
                .hashes()
                .into_iter()
                .filter(|hash| !blobs_dir.join(hash).exists())
                .map(str::to_string)
                .collect();
            if !missing.is_empty() {
                let rows = self.with_reader("reading the run's files", |c| {
                    c.query(
                        "SELECT sha256, content FROM blobs WHERE sha256 = ANY($1)",
                        &[&missing],
                    )
                })?;
                for row in rows {
                    let content: &[u8] = row.get(1);
                    let hash = super::snapshot::put_blob(&blobs_dir, content)?;
                    if hash != row.get::<_, &str>(0) {
                        anyhow::bail!(
                            "the state database's blob {} does not hold the content of that sha256",
                            row.get::<_, &str>(0)
                        );
                    }
                }
            }
            write(super::snapshot::FILES_FILE, files.as_bytes())?;
        } else {
            let _ = std::fs::remove_file(folder.join(super::snapshot::FILES_FILE));
        }
        if journal {
            let (records, _) = self.records(id)?;
            let mut text = String::new();
            for record in &records {
                text.push_str(&serde_json::to_string(record)?);
                text.push('\n');
            }
            let path = folder.join("journal.jsonl");
            let tmp = folder.join("journal.jsonl.tmp");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(true)
    }

    /// The last journal `seq` of a run (0 without records).
    pub fn last_seq(&self, id: &str) -> Result<i64, PgError> {
        Ok(self
            .with_reader("reading the journal's end", |c| {
                c.query_one(
                    "SELECT coalesce(max(seq), 0) FROM journal WHERE run_id = $1",
                    &[&id],
                )
            })?
            .get(0))
    }

    /// How many journal records a run has (to notice a run that moved on meanwhile).
    pub fn record_count(&self, id: &str) -> Result<i64, PgError> {
        Ok(self
            .with_reader("counting journal records", |c| {
                c.query_one("SELECT count(*) FROM journal WHERE run_id = $1", &[&id])
            })?
            .get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_schema_apart() {
        let params =
            take_params("postgres://a@h/d?schema=mail_eu&sslmode=require&connect_timeout=5")
                .unwrap();
        assert_eq!(params.base, "postgres://a@h/d?connect_timeout=5");
        assert_eq!(params.schema, "mail_eu");
        assert_eq!(params.tls.mode, tls::Mode::Require);
        assert_eq!(take_params("postgres://a@h/d").unwrap().schema, "pony");
        assert!(take_params("postgres://a@h/d?schema=Bad;drop").is_err());
    }
}
