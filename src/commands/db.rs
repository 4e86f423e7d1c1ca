//! `pony db migrate`: creates pony's schema in the state database or brings it to this
//! pony's version, as a role that may, and says what it did. The other commands then
//! need fewer privileges: reading ones never create anything ([`crate::state::pg::schema`]).

use crate::cli::DbAction;
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit::Exit;
use crate::report::OutputFormat;
use crate::settings::Settings;
use crate::state::pg::{self, PgStore};
use std::io::Write;
use std::path::Path;

pub fn run(settings: &Settings, action: &DbAction) -> anyhow::Result<Exit> {
    match action {
        DbAction::Migrate => migrate(settings),
    }
}

fn migrate(settings: &Settings) -> anyhow::Result<Exit> {
    let url = match settings.state.as_deref().filter(|s| !s.is_empty()) {
        Some(url) if pg::is_url(url) => url,
        given => {
            let problem = match given {
                None => "`pony db migrate` works on a state database, and none is given".into(),
                Some(other) => format!("`{}` is not a postgres:// URL", pg::redact_password(other)),
            };
            return Err(Diagnostics::from(
                Diagnostic::new(Path::new("--state"), problem)
                    .hint("give --state postgres://USER@HOST/DATABASE (or set PONY_STATE), connecting as the role that is to own the schema"),
            )
            .into());
        }
    };
    let store = PgStore::configure(url, settings.lease)?;
    let migrated = store.migrate()?;
    let mut out = crate::term::Stdout;
    match settings.output {
        OutputFormat::Json => {
            serde_json::to_writer(&mut out, &migrated)?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Human => {
            let schema = &migrated.schema;
            if migrated.created_schema {
                writeln!(out, "created schema `{schema}` in {}", store.shown())?;
            }
            for applied in &migrated.applied {
                writeln!(
                    out,
                    "applied migration {:04}: {}",
                    applied.version, applied.name
                )?;
            }
            if migrated.applied.is_empty() {
                writeln!(
                    out,
                    "schema `{schema}` in {} is at version {}, the latest this pony knows: nothing to do",
                    store.shown(),
                    migrated.version
                )?;
            } else {
                writeln!(
                    out,
                    "schema `{schema}` in {} is now at version {}",
                    store.shown(),
                    migrated.version
                )?;
            }
        }
    }
    out.flush()?;
    Ok(Exit::Success)
}
