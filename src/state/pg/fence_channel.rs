//! The fence channel `<schema>_fence`: `pony unlock` notifies it when it breaks a lease
//! ([`super::fence`]), and every lease's heartbeat listens on it ([`super::lease`]) to
//! renew at once and notice it was fenced off. Its own module so that the breaking side
//! and the holding side both depend on it, not on each other.

use super::{PgError, PgStore};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::time::Duration;

/// The channel a lease's holders listen on (the whole installation's; the payload is
/// the run whose leases were broken, and a notification only says "renew now").
pub(super) fn name(store: &PgStore) -> String {
    format!("{}_fence", store.schema)
}

/// A connection listening on the fence channel, for a heartbeat.
pub(super) fn listening(store: &PgStore) -> Result<Client, PgError> {
    let mut client = store.connect()?;
    client
        .batch_execute(&format!("LISTEN {}", name(store)))
        .map_err(|e| store.query("listening for fences", e))?;
    Ok(client)
}

/// Waits up to `wait` for a fence notification; true when one came (the others queued
/// are taken with it: each only says "renew now").
pub(super) fn notified(client: &mut Client, wait: Duration) -> Result<bool, postgres::Error> {
    let mut notifications = client.notifications();
    let came = notifications.timeout_iter(wait).next()?.is_some();
    if came {
        notifications.iter().count()?;
    }
    Ok(came)
}
