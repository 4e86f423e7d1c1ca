//! The inventory lock in PostgreSQL, as a lease: one row per inventory naming its holder
//! (run, pid, machine, user) and when it expires. The holder's heartbeat thread renews it
//! every third of the lease; a holder that dies (on any machine) stops renewing, and its
//! lease is expired once the database's clock passes `expires`: no pid is ever checked.
//!
//! Like the local lock, an expired lease is never broken silently: a new deploy is told
//! how to go on, and only a resume (or rollback) of the same run, or `pony unlock`,
//! takes it over. Taking over gives the row a new holder token, so the old holder (if it
//! was only cut off, not dead) can neither renew it nor write to the journal again
//! ([`super::sink`] checks the token in every batch's transaction).

use super::{PgError, PgStore};
use crate::state::lock::{LockError, LockInfo};
use std::sync::mpsc;

use crate::state::deadline::LeaseLost;

/// The row's columns as [`LockInfo`], with `started` spelt as the local lock spells it.
const SELECT_INFO: &str = "SELECT inventory, run_id, pid, machine, username,
        to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        awaiting_approval,
        expires IS NOT NULL AND expires > now(),
        coalesce(to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),
        holder
    FROM leases WHERE inventory = $1";

/// A lease as read: who holds it, whether it is live (unexpired), when it expires.
#[derive(Debug, Clone)]
pub struct LeaseRow {
    pub info: LockInfo,
    pub live: bool,
    pub expires: String,
    holder: String,
}

fn row_of(row: &postgres::Row) -> LeaseRow {
    LeaseRow {
        info: LockInfo {
            inventory: row.get(0),
            run_id: row.get(1),
            pid: row.get::<_, i32>(2) as u32,
            host: row.get(3),
            user: row.get(4),
            started: row.get(5),
            awaiting_approval: row.get(6),
        },
        live: row.get(7),
        expires: row.get(8),
        holder: row.get(9),
    }
}

/// The lease on an inventory, if any.
pub fn read(store: &PgStore, inventory: &str) -> Result<Option<LeaseRow>, PgError> {
    let row = store.with_reader("reading the lease", |c| {
        c.query_opt(SELECT_INFO, &[&inventory])
    })?;
    Ok(row.as_ref().map(row_of))
}

/// The lease on an inventory inside a transaction that goes on to change it (locked).
pub(crate) fn read_in(
    tx: &mut postgres::Transaction<'_>,
    inventory: &str,
) -> Result<LeaseRow, postgres::Error> {
    let row = tx.query_one(&format!("{SELECT_INFO} FOR UPDATE"), &[&inventory])?;
    Ok(row_of(&row))
}

/// The lease on an inventory, if any, locked for the transaction that changes it.
pub(super) fn read_locked(
    tx: &mut postgres::Transaction<'_>,
    inventory: &str,
) -> Result<Option<LeaseRow>, postgres::Error> {
    let row = tx.query_opt(&format!("{SELECT_INFO} FOR UPDATE"), &[&inventory])?;
    Ok(row.as_ref().map(row_of))
}

/// Whether a live lease (renewed in time, or kept for approval) holds `run_id`.
pub fn holds_run(store: &PgStore, run_id: &str) -> Result<bool, PgError> {
    let row = store.with_reader("reading leases", |c| {
        c.query_one(
            "SELECT (SELECT count(*) FROM leases WHERE run_id = $1 AND expires > now())
                  + (SELECT count(*) FROM region_leases WHERE run_id = $1 AND expires > now())",
            &[&run_id],
        )
    })?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// A held lease. Dropping it stops the heartbeat and releases the lease, unless it was
/// kept (for approval, or left to expire).
pub struct Lease {
    store: PgStore,
    pub info: LockInfo,
    /// This controller's token in the row; a takeover replaces it.
    pub holder: String,
    heartbeat: Option<Heartbeat>,
    keep: bool,
}

/// A token no other controller has.
pub(crate) fn new_holder() -> String {
    crate::process::unique_token()
}

/// Maps a database error of `what` to a lock error (lease and region leases alike).
pub(super) fn db<'a>(store: &'a PgStore, what: &str) -> impl Fn(postgres::Error) -> LockError + 'a {
    let what = what.to_string();
    move |e| LockError::Database(store.query(&what, e).to_string())
}

/// Writes the lease on `inventory` for `run_id`, held by `holder` (this process), unless
/// a row for the inventory is there already (live or not): false then.
pub(super) fn insert(
    tx: &mut postgres::Transaction<'_>,
    inventory: &str,
    run_id: &str,
    holder: &str,
    seconds: f64,
) -> Result<bool, postgres::Error> {
    let pid = std::process::id() as i32;
    let (machine, user) = (crate::process::hostname(), crate::process::current_user());
    let inserted = tx.execute(
        "INSERT INTO leases (inventory, run_id, holder, pid, machine, username, expires)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
         ON CONFLICT (inventory) DO NOTHING",
        &[
            &inventory, &run_id, &holder, &pid, &machine, &user, &seconds,
        ],
    )?;
    Ok(inserted > 0)
}

/// Takes the lease on `inventory` for `run_id`. `resuming` lets a resume of the same run
/// take over a lease its earlier controller left expired or kept for approval.
pub fn acquire(
    store: &PgStore,
    inventory: &str,
    run_id: &str,
    resuming: bool,
    lost: LeaseLost,
) -> Result<Lease, LockError> {
    let mut client = store
        .connect()
        .map_err(|e| LockError::Database(e.to_string()))?;
    let holder = new_holder();
    let seconds = store.lease.as_secs_f64();
    let pid = std::process::id() as i32;
    let (machine, user) = (crate::process::hostname(), crate::process::current_user());
    let q = db(store, "taking the lease");
    let mut tx = client.transaction().map_err(&q)?;
    if !insert(&mut tx, inventory, run_id, &holder, seconds).map_err(&q)? {
        let current = read_in(&mut tx, inventory).map_err(&q)?;
        let ours = resuming && current.info.run_id == run_id;
        let free = current.info.awaiting_approval || !current.live;
        if !(ours && free) {
            return Err(current.refusal());
        }
        tx.execute(
            "UPDATE leases SET holder = $2, pid = $3, machine = $4, username = $5,
                started = now(), expires = now() + make_interval(secs => $6),
                awaiting_approval = false
             WHERE inventory = $1",
            &[&inventory, &holder, &pid, &machine, &user, &seconds],
        )
        .map_err(&q)?;
    }
    if resuming {
        // A run split by region, resumed by one controller: it takes every region, so
        // the region leases its controllers left expired are no longer anyone's
        // (`pony status` shows those controllers `left`, not `expired`).
        tx.execute(
            "DELETE FROM region_leases WHERE run_id = $1 AND expires <= now()",
            &[&run_id],
        )
        .map_err(&q)?;
    }
    let row = tx.query_one(SELECT_INFO, &[&inventory]).map_err(&q)?;
    tx.commit().map_err(&q)?;
    let info = row_of(&row).info;
    let heartbeat = {
        let (inventory, holder) = (inventory.to_string(), holder.clone());
        Heartbeat::spawn(
            store.clone(),
            "lease",
            format!("lost the lease on inventory `{inventory}` (expired, taken over or broken with `pony unlock`)"),
            lost,
            move |client, seconds| renew(client, &inventory, &holder, seconds),
        )
    }
    .map_err(|e| LockError::Database(format!("cannot start the lease heartbeat: {e}")))?;
    Ok(Lease {
        store: store.clone(),
        info,
        holder,
        heartbeat: Some(heartbeat),
        keep: false,
    })
}

/// Renews the lease of a live holder; false when it is no longer ours (taken over,
/// broken) or already expired (someone may be taking it over: never revive it).
pub fn renew(
    client: &mut impl postgres::GenericClient,
    inventory: &str,
    holder: &str,
    seconds: f64,
) -> Result<bool, postgres::Error> {
    let renewed = client.execute(
        "UPDATE leases SET expires = now() + make_interval(secs => $3)
         WHERE inventory = $1 AND holder = $2 AND expires > now()",
        &[&inventory, &holder, &seconds],
    )?;
    Ok(renewed == 1)
}

/// A thread renewing a lease every third of its length until stopped. When `renew`
/// finds the lease gone, it says `lost` (logged) and notifies `lost_signal`; database
/// errors are logged and retried on a new connection, until a whole lease has passed
/// since the last renewal: then the lease is lost as well.
///
/// Its connection listens on the fence channel ([`super::fence`]): `pony unlock --force`
/// notifies it when it breaks a lease, and every heartbeat renews at once, so a holder
/// fenced by an unlock notices within a tenth of a second, not a third of a lease later.
pub(super) struct Heartbeat {
    stop: mpsc::Sender<()>,
    /// Disconnected when the thread ends.
    ended: mpsc::Receiver<()>,
    /// How long stopping waits for a renewal in flight (nothing once the lease ran out
    /// by the controller's own clock).
    bound: std::time::Duration,
    clock: std::sync::Arc<crate::state::deadline::LeaseClock>,
}

/// How often a heartbeat looks for its stop and for a fence notification.
const HEARTBEAT_TICK: std::time::Duration = std::time::Duration::from_millis(100);

impl Heartbeat {
    pub(super) fn spawn(
        store: PgStore,
        name: &'static str,
        lost: String,
        lost_signal: LeaseLost,
        mut renew: impl FnMut(&mut postgres::Client, f64) -> Result<bool, postgres::Error>
            + Send
            + 'static,
    ) -> std::io::Result<Heartbeat> {
        let (stop, stopped) = mpsc::channel::<()>();
        let (ending, ended) = mpsc::channel::<()>();
        let every = store.lease / 3;
        let bound = store.bound();
        let clock = store.lease_clock().clone();
        std::thread::Builder::new()
            .name(format!("pony-{}", name.replace(' ', "-")))
            .spawn(move || {
                let _ending = ending;
                let connect = || {
                    super::fence_channel::listening(&store)
                        .map_err(|e| tracing::warn!("{name} heartbeat: {e}"))
                        .ok()
                };
                let mut client: Option<postgres::Client> = connect();
                // The local monotonic clock only ever says "at least a lease has passed":
                // by then the database's clock has expired the lease too.
                let mut renewed = std::time::Instant::now();
                let mut due = renewed + every;
                loop {
                    if !matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                        return;
                    }
                    let wait = due
                        .saturating_duration_since(std::time::Instant::now())
                        .min(HEARTBEAT_TICK);
                    let fenced = match client.as_mut() {
                        Some(c) => match super::fence_channel::notified(c, wait) {
                            Ok(fenced) => fenced,
                            Err(e) => {
                                tracing::warn!("{name} heartbeat: {e}; reconnecting");
                                client = None;
                                false
                            }
                        },
                        None => {
                            match stopped.recv_timeout(wait) {
                                Err(mpsc::RecvTimeoutError::Timeout) => {}
                                _ => return,
                            }
                            false
                        }
                    };
                    if !fenced && std::time::Instant::now() < due {
                        continue;
                    }
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = connect();
                    }
                    let sent = std::time::Instant::now();
                    let renewal = match client.as_mut() {
                        Some(c) => renew(c, store.lease.as_secs_f64()).map_err(|e| e.to_string()),
                        None => Err("no connection".to_string()),
                    };
                    due = std::time::Instant::now() + every;
                    match renewal {
                        Ok(true) => {
                            renewed = std::time::Instant::now();
                            // The controller's own deadline counts from when it was sent.
                            store.lease_clock().renewed(sent);
                        }
                        Ok(false) => {
                            tracing::error!("{lost}: no new task starts");
                            lost_signal.notify_one();
                            return;
                        }
                        Err(e) if renewed.elapsed() >= store.lease => {
                            tracing::error!(
                                "{lost}: the state database was out of reach for a whole lease ({e})"
                            );
                            lost_signal.notify_one();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("{name} heartbeat: {e}; retrying");
                            client = None;
                        }
                    }
                }
            })?;
        Ok(Heartbeat {
            stop,
            ended,
            bound,
            clock,
        })
    }

    /// Stops renewing and waits for the thread, at most a call's bound: a renewal that
    /// a hung database never answers is left behind, it must not hold the exit.
    pub(super) fn stop(self) {
        drop(self.stop);
        let wait = if self.clock.passed() {
            std::time::Duration::ZERO
        } else {
            self.bound
        };
        let _ = self.ended.recv_timeout(wait);
    }
}

impl Lease {
    fn stop_heartbeat(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop();
        }
    }

    /// Keeps the lease after this process exits, with no expiry: the run is paused for
    /// approval, and only its resume (or `pony unlock`) takes it over.
    pub fn keep_for_approval(mut self) {
        self.stop_heartbeat();
        let kept = self.store.connect().map(|mut c| {
            c.execute(
                "UPDATE leases SET awaiting_approval = true, expires = NULL
                 WHERE inventory = $1 AND holder = $2",
                &[&self.info.inventory, &self.holder],
            )
        });
        if !matches!(kept, Ok(Ok(1))) {
            tracing::error!("could not mark the lease as kept for approval");
        }
        self.keep = true;
    }

    /// Leaves the lease to expire (a crashed-like stop).
    pub fn keep(mut self) {
        self.stop_heartbeat();
        self.keep = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if self.keep {
            return;
        }
        // Bounded as a whole: a server that stops answering after the connection was
        // made must not hold the controller's exit (the lease expires by itself).
        let (store, inventory, holder) = (
            self.store.clone(),
            self.info.inventory.clone(),
            self.holder.clone(),
        );
        let released = self
            .store
            .bounded("releasing the lease", self.store.bound() * 2, move || {
                store
                    .connect()
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        c.execute(
                            "DELETE FROM leases WHERE inventory = $1 AND holder = $2",
                            &[&inventory, &holder],
                        )
                        .map_err(|e| e.to_string())
                    })
            })
            .map_err(|e| e.to_string())
            .and_then(|released| released);
        if let Err(e) = released {
            tracing::warn!("could not release the lease (it expires by itself): {e}");
        }
    }
}

impl LeaseRow {
    /// The holder token (for tests and `pony status`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Why this lease keeps another run out: kept for approval, live, or expired.
    pub(crate) fn refusal(self) -> LockError {
        if self.info.awaiting_approval {
            LockError::Paused(Box::new(self.info))
        } else if self.live {
            LockError::Held(Box::new(self.info))
        } else {
            LockError::Expired(Box::new(self.info), self.expires)
        }
    }
}
