//! pony's schema in the state database: its version, its migrations, and whether the
//! connected role may do what a command does there.
//!
//! Least privilege: creating or migrating the schema is the owner's job (`pony db
//! migrate`; a writing command whose role happens to have the privilege creates a
//! missing one, but never migrates an existing one), never a reader's. So nothing here
//! runs `CREATE` without having read from the catalog first that the schema is missing
//! or behind *and* that this role may create it; a reading
//! command never creates anything, and works with `USAGE` on the schema and `SELECT` on
//! its tables. The privileges a command needs ([`Access`]) are checked from the catalog
//! up front too, so that a role short of one is told which (all of them at once) and
//! the `GRANT` that gives it, before anything is written. docs/scale.md ("Roles and
//! privileges") documents the same rules.

use super::{PgError, PgStore};
use crate::state::backend::Access;
use postgres::{Client, GenericClient};

/// The migrations, in order; each runs once per installation, in one transaction with
/// the version it brings. Never edit one that shipped: add the next.
pub(super) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "runs, journal and leases",
        include_str!("../migrations/0001_runs_journal_leases.sql"),
    ),
    (
        2,
        "region leases and the journal's controller",
        include_str!("../migrations/0002_region_leases.sql"),
    ),
    (
        3,
        "live control from any machine",
        include_str!("../migrations/0003_control.sql"),
    ),
    (
        4,
        "a run's template and upload sources",
        include_str!("../migrations/0004_snapshot_files.sql"),
    ),
    (
        5,
        "holders fenced by pony unlock",
        include_str!("../migrations/0005_fences.sql"),
    ),
];

/// Serializes migrations between controllers starting at once (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x706f_6e79_0001;

/// The table of applied migrations, which a writing role only reads.
const VERSIONS_TABLE: &str = "schema_migrations";

/// The table `pony pause|continue|abort|approve` write their command into.
const CONTROL_TABLE: &str = "control";

/// The schema version this pony needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

impl Access {
    /// The commands this access is for, for messages.
    fn commands(self) -> &'static str {
        match self {
            Access::Read => "read runs (status, history, watch)",
            Access::Control => "send commands to runs (pause, continue, abort, approve)",
            Access::Write => "run or change runs (deploy, resume, join, rollback, unlock)",
        }
    }

    /// The statements that give `role` this access to `schema`.
    pub fn grants(self, schema: &str, role: &str) -> String {
        let usage = format!("GRANT USAGE ON SCHEMA {schema} TO {role};");
        match self {
            Access::Read => {
                format!("{usage} GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};")
            }
            Access::Control => format!(
                "{usage} GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}; GRANT INSERT ON {schema}.{CONTROL_TABLE} TO {role}; GRANT USAGE ON SEQUENCE {schema}.{CONTROL_TABLE}_id_seq TO {role};"
            ),
            Access::Write => format!(
                "{usage} GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};"
            ),
        }
    }
}

/// One table or sequence of the schema and what the connected role may do with it.
struct Relation {
    name: String,
    sequence: bool,
    /// The table a sequence belongs to (a `bigserial` column's).
    owned_by: Option<String>,
    select: bool,
    insert: bool,
    update: bool,
    delete: bool,
    /// `USAGE` on a sequence.
    usage: bool,
}

/// What the catalog says of the schema, for the connected role. Read from `pg_catalog`
/// only, which every role may read: asking needs no privilege on the schema.
struct Found {
    /// The connected role, quoted as a `GRANT` takes it.
    role: String,
    database: String,
    exists: bool,
    owner: Option<String>,
    /// `USAGE` on the schema.
    usage: bool,
    /// `CREATE` on the database: may create the schema.
    create_schema: bool,
    /// `CREATE` on the schema: may create its tables (a migration).
    create_in_schema: bool,
    relations: Vec<Relation>,
}

impl Found {
    fn read(client: &mut impl GenericClient, schema: &str) -> Result<Found, postgres::Error> {
        let row = client.query_one(
            "SELECT quote_ident(current_user), current_database(), n.oid IS NOT NULL,
                    pg_get_userbyid(n.nspowner)::text,
                    coalesce(has_schema_privilege(n.oid, 'USAGE'), false),
                    has_database_privilege(current_database(), 'CREATE'),
                    coalesce(has_schema_privilege(n.oid, 'CREATE'), false)
               FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = $1",
            &[&schema],
        )?;
        let relations = client
            .query(
                "SELECT c.relname::text, c.relkind = 'S',
                        (SELECT t.relname::text FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                          LIMIT 1),
                        c.relkind <> 'S' AND has_table_privilege(c.oid, 'SELECT'),
                        c.relkind <> 'S' AND has_table_privilege(c.oid, 'INSERT'),
                        c.relkind <> 'S' AND has_table_privilege(c.oid, 'UPDATE'),
                        c.relkind <> 'S' AND has_table_privilege(c.oid, 'DELETE'),
                        CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'USAGE') ELSE false END
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S')
                  ORDER BY c.relname",
                &[&schema],
            )?
            .iter()
            .map(|r| Relation {
                name: r.get(0),
                sequence: r.get(1),
                owned_by: r.get(2),
                select: r.get(3),
                insert: r.get(4),
                update: r.get(5),
                delete: r.get(6),
                usage: r.get(7),
            })
            .collect();
        Ok(Found {
            role: row.get(0),
            database: row.get(1),
            exists: row.get(2),
            owner: row.get(3),
            usage: row.get(4),
            create_schema: row.get(5),
            create_in_schema: row.get(6),
            relations,
        })
    }

    fn has_versions(&self) -> bool {
        self.relations
            .iter()
            .any(|r| r.name == VERSIONS_TABLE && !r.sequence)
    }

    /// May this role read the schema's version?
    fn may_read_version(&self) -> bool {
        self.usage
            && self
                .relations
                .iter()
                .any(|r| r.name == VERSIONS_TABLE && r.select)
    }

    /// The privileges `access` needs that this role lacks, one line per privilege
    /// naming what it lacks it on; empty when it has them all.
    fn missing(&self, access: Access, schema: &str) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.usage {
            lines.push(format!("USAGE on schema {schema}"));
        }
        let tables = || self.relations.iter().filter(|r| !r.sequence);
        let lacking = |privilege: &str, names: Vec<&str>, lines: &mut Vec<String>| {
            if !names.is_empty() {
                lines.push(format!("{privilege} on {}", names.join(", ")));
            }
        };
        lacking(
            "SELECT",
            tables().filter(|r| !r.select).map(|r| &*r.name).collect(),
            &mut lines,
        );
        let written = |r: &&Relation| match access {
            Access::Read => false,
            Access::Control => r.name == CONTROL_TABLE,
            Access::Write => r.name != VERSIONS_TABLE,
        };
        lacking(
            "INSERT",
            tables()
                .filter(written)
                .filter(|r| !r.insert)
                .map(|r| &*r.name)
                .collect(),
            &mut lines,
        );
        if access == Access::Write {
            for (privilege, has) in [
                ("UPDATE", (|r: &Relation| r.update) as fn(&Relation) -> bool),
                ("DELETE", |r: &Relation| r.delete),
            ] {
                lacking(
                    privilege,
                    tables()
                        .filter(written)
                        .filter(|r| !has(r))
                        .map(|r| &*r.name)
                        .collect(),
                    &mut lines,
                );
            }
        }
        lacking(
            "USAGE",
            self.relations
                .iter()
                .filter(|r| r.sequence && !r.usage)
                .filter(|r| match access {
                    Access::Read => false,
                    Access::Control => r.owned_by.as_deref() == Some(CONTROL_TABLE),
                    Access::Write => true,
                })
                .map(|r| &*r.name)
                .collect(),
            &mut lines,
        );
        lines
    }
}

/// What `pony db migrate` did.
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub schema: String,
    /// It created the schema itself.
    pub created_schema: bool,
    /// The migrations it applied, in order (none: the schema was up to date).
    pub applied: Vec<Applied>,
    /// The schema's version now.
    pub version: i32,
}

#[derive(Debug, serde::Serialize)]
pub struct Applied {
    pub version: i32,
    pub name: String,
}

impl PgStore {
    fn schema_error(&self, problem: String, hint: String) -> PgError {
        PgError::Schema {
            url: self.shown.clone(),
            problem,
            hint,
        }
    }

    /// The command that migrates, as a hint prints it. Without this command's `--state`:
    /// the owner runs it with a URL of its own role.
    fn migrate_command(&self) -> &'static str {
        "pony db migrate"
    }

    /// Checks the schema for a command of `access`: a missing one is created first by a
    /// writing command whose role may; an older one is refused with the `pony db migrate`
    /// hint. Returns whether the schema exists (false only for a command that does not
    /// write, on a database where no pony created it yet).
    pub(super) fn prepare(&self, client: &mut Client, access: Access) -> Result<bool, PgError> {
        let q = |e| self.query("reading the schema's version", e);
        let schema = &self.schema;
        let mut found = Found::read(client, schema).map_err(q)?;
        let version = self.version(client, &found, access)?;
        let latest = latest();
        if version > latest {
            return Err(PgError::TooNew {
                url: self.shown.clone(),
                found: version,
                known: latest,
            });
        }
        if version == 0 {
            if access != Access::Write {
                return Ok(false);
            }
            // A fresh installation: a writing command creates the schema if its role
            // may, so that one owner role needs no separate step.
            self.refuse_migration(&found, version)?;
            self.migrate_in(client)?;
            tracing::info!("created schema `{schema}` in {}", self.shown);
            found = Found::read(client, schema).map_err(q)?;
        } else if version < latest {
            // An existing installation is migrated only on purpose: controllers of the
            // older pony may still be running against it.
            return Err(self.schema_error(
                format!(
                    "schema `{schema}` is at version {version} and this pony needs version {latest}; only `{}` migrates it",
                    self.migrate_command()
                ),
                format!(
                    "run `{}` once as {}, then run this command again",
                    self.migrate_command(),
                    self.owner_words(&found)
                ),
            ));
        }
        let missing = found.missing(access, schema);
        if missing.is_empty() {
            return Ok(true);
        }
        Err(self.privileges_error(&found, access, &missing))
    }

    /// The schema's version: 0 when there is no schema or no version table in it. A role
    /// that may not read it is refused here, with every privilege it lacks.
    fn version(&self, client: &mut Client, found: &Found, access: Access) -> Result<i32, PgError> {
        if !found.exists || !found.has_versions() {
            return Ok(0);
        }
        if !found.may_read_version() {
            let missing = found.missing(access, &self.schema);
            return Err(self.privileges_error(found, access, &missing));
        }
        Ok(client
            .query_one(
                &format!(
                    "SELECT coalesce(max(version), 0) FROM {}.{VERSIONS_TABLE}",
                    self.schema
                ),
                &[],
            )
            .map_err(|e| self.query("reading the schema's version", e))?
            .get(0))
    }

    /// Who may migrate, as "run … as {this}" says it (its `--state` URL's user).
    fn owner_words(&self, found: &Found) -> String {
        match &found.owner {
            Some(owner) => {
                format!("the schema's owner role `{owner}` (that role as the --state URL's user)")
            }
            None => format!(
                "a role with CREATE on database `{}` (it becomes the schema's owner)",
                found.database
            ),
        }
    }

    fn privileges_error(&self, found: &Found, access: Access, missing: &[String]) -> PgError {
        let schema = &self.schema;
        self.schema_error(
            format!(
                "role {} may not {} in schema `{schema}`: it lacks {}",
                found.role,
                access.commands(),
                missing.join("; ")
            ),
            format!(
                "as {}, grant what it needs: {} (docs/scale.md, \"Roles and privileges\")",
                self.owner_words(found),
                access.grants(schema, &found.role)
            ),
        )
    }

    /// Refuses a migration the role may not make, naming the privilege it lacks.
    fn refuse_migration(&self, found: &Found, version: i32) -> Result<(), PgError> {
        let schema = &self.schema;
        let latest = latest();
        let (state, privilege) = if !found.exists {
            if found.create_schema {
                return Ok(());
            }
            (
                format!("has no schema `{schema}` yet"),
                format!("CREATE on database `{}`", found.database),
            )
        } else {
            if found.create_in_schema {
                return Ok(());
            }
            let state = match version {
                0 => format!("schema `{schema}` has none of pony's tables yet"),
                _ => format!(
                    "schema `{schema}` is at version {version} and this pony needs {latest}"
                ),
            };
            (state, format!("CREATE on schema `{schema}`"))
        };
        Err(self.schema_error(
            format!(
                "{state}, and role {} may not migrate it: it lacks {privilege}",
                found.role
            ),
            format!(
                "run `{}` once as {}, then run this command again",
                self.migrate_command(),
                self.owner_words(found)
            ),
        ))
    }

    /// `pony db migrate`: creates the schema or brings it to this pony's version, and
    /// says what it did; nothing when it is up to date.
    pub fn migrate(&self) -> Result<Migrated, PgError> {
        let mut client = self.connect_raw()?;
        let q = |e| self.query("reading the schema's version", e);
        let found = Found::read(&mut client, &self.schema).map_err(q)?;
        let version = self.version(&mut client, &found, Access::Read)?;
        if version > latest() {
            return Err(PgError::TooNew {
                url: self.shown.clone(),
                found: version,
                known: latest(),
            });
        }
        if version == latest() {
            return Ok(Migrated {
                schema: self.schema.clone(),
                created_schema: false,
                applied: Vec::new(),
                version,
            });
        }
        self.refuse_migration(&found, version)?;
        self.migrate_in(&mut client)
    }

    /// Applies the migrations this database lacks, one controller at a time; creates the
    /// schema and the version table first when they are missing (and only then: `CREATE
    /// … IF NOT EXISTS` still needs the privilege to create).
    fn migrate_in(&self, client: &mut Client) -> Result<Migrated, PgError> {
        let q = |e| self.query("migrating the schema", e);
        let schema = &self.schema;
        let mut tx = client.transaction().map_err(q)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(q)?;
        // Read again under the lock: another controller may have migrated meanwhile.
        let found = Found::read(&mut tx, schema).map_err(q)?;
        let created_schema = !found.exists;
        if created_schema {
            tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(q)?;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO {schema}"))
            .map_err(q)?;
        if !found.has_versions() {
            tx.batch_execute(&format!(
                "CREATE TABLE {VERSIONS_TABLE} (
                     version integer PRIMARY KEY,
                     name    text NOT NULL,
                     applied timestamptz NOT NULL DEFAULT now()
                 )"
            ))
            .map_err(q)?;
        }
        let found: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {VERSIONS_TABLE}"),
                &[],
            )
            .map_err(q)?
            .get(0);
        if found > latest() {
            return Err(PgError::TooNew {
                url: self.shown.clone(),
                found,
                known: latest(),
            });
        }
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
            let what = format!("applying migration {version:04} ({name})");
            tx.batch_execute(sql).map_err(|e| self.query(&what, e))?;
            tx.execute(
                &format!("INSERT INTO {VERSIONS_TABLE} (version, name) VALUES ($1, $2)"),
                &[version, name],
            )
            .map_err(|e| self.query(&what, e))?;
            applied.push(Applied {
                version: *version,
                name: name.to_string(),
            });
        }
        tx.commit().map_err(q)?;
        Ok(Migrated {
            schema: schema.clone(),
            created_schema,
            applied,
            version: latest().max(found),
        })
    }
}

#[cfg(test)]
mod tests;
