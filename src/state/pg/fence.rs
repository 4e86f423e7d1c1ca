//! Breaking a lease (`pony unlock`) fences its holders in the database at once, and
//! `--force` then waits until they say their commands on the hosts are dead.
//!
//! Every lease row carries its holder's token (the inventory's, or each region's for a
//! run split between controllers), and every renewal and every journal batch of a holder
//! matches that token in the same transaction as its write ([`super::sink`]). Breaking
//! the lease deletes the inventory's row **and** every region row of its run in one
//! transaction: from its commit on, each of the old holders' renewals and batches matches
//! no row, and is refused. A batch in flight holds its rows' locks, so the unlock
//! commits after it or it sees no row: no write of an old holder lands after the unlock.
//! The token is the fencing token: a holder never gets its old one back (a takeover
//! makes a new one), so a holder that was frozen (SIGSTOP, a VM paused) and wakes up
//! after a takeover finds nothing of its own to renew.
//!
//! The unlock also records one `fences` row per holder it fenced and notifies
//! `<schema>_fence`: the holders' heartbeats listen on that channel and renew at once,
//! so a live holder notices within a tenth of a second. It then stops as on a lost lease
//! (kills its running commands' process groups on the hosts, confirmed), and writes into
//! its `fences` row that it stopped and what became of its commands. `pony unlock
//! --force` waits for those answers until a lease has passed since it broke the lease.

use super::{fence_channel, PgError, PgStore};
use crate::state::backend::Fenced;
use crate::state::lock::LockInfo;
use std::time::{Duration, Instant};

/// A lease `pony unlock` broke: who held it, whether it was live, whom it fenced off.
#[derive(Debug, Clone)]
pub struct Broken {
    pub info: LockInfo,
    pub live: bool,
    pub fenced: Vec<Fenced>,
}

/// What [`break_lease`] did.
#[derive(Debug)]
pub enum Unlocked {
    /// The inventory had no lease.
    NotLocked,
    /// A live holder (found in the transaction, so also one that took the lease since
    /// the caller looked) and no `force`: nothing was broken.
    Refused(LockInfo),
    Broken(Broken),
}

/// Breaks the lease on `inventory` and every region lease of its run in one transaction,
/// records each holder fenced off (`by` says who broke it) and notifies the holders. A
/// live lease is broken only with `force`.
pub fn break_lease(
    store: &PgStore,
    inventory: &str,
    by: &str,
    force: bool,
) -> Result<Unlocked, PgError> {
    let q = |e| store.query("breaking the lease", e);
    let mut client = store.connect()?;
    let mut tx = client.transaction().map_err(q)?;
    // The run first, unlocked; then its region rows and the inventory's row are locked
    // in the order a split run's renewals lock them (regions, then the inventory), so
    // that an unlock and a heartbeat never wait for each other in a circle.
    let Some(run_id) = tx
        .query_opt(
            "SELECT run_id FROM leases WHERE inventory = $1",
            &[&inventory],
        )
        .map_err(q)?
        .map(|r| r.get::<_, String>(0))
    else {
        return Ok(Unlocked::NotLocked);
    };
    let regions = tx
        .query(
            "SELECT holder, controller, machine, pid, expires > now() FROM region_leases
             WHERE run_id = $1 ORDER BY region FOR UPDATE",
            &[&run_id],
        )
        .map_err(q)?;
    let Some(lease) = super::lease::read_locked(&mut tx, inventory).map_err(q)? else {
        return Ok(Unlocked::NotLocked);
    };
    if lease.info.run_id != run_id {
        // Another run took the inventory between the two reads: break nothing of it.
        return Err(PgError::Conflict(format!(
            "the lease on inventory `{inventory}` changed hands while it was being broken; run `pony unlock {inventory}` again"
        )));
    }
    let mut fenced: Vec<Fenced> = Vec::new();
    if lease.holder().starts_with("run:") {
        for row in &regions {
            let holder: String = row.get(0);
            let live: bool = row.get(4);
            match fenced.iter_mut().find(|f| f.holder == holder) {
                Some(known) => known.live |= live,
                None => fenced.push(Fenced {
                    holder,
                    controller: Some(row.get(1)),
                    machine: row.get(2),
                    pid: row.get(3),
                    live,
                }),
            }
        }
    } else {
        fenced.push(Fenced {
            holder: lease.holder().to_string(),
            controller: None,
            machine: lease.info.host.clone(),
            pid: lease.info.pid as i32,
            live: lease.live && !lease.info.awaiting_approval,
        });
    }
    let live = fenced.iter().any(|f| f.live);
    if live && !force {
        return Ok(Unlocked::Refused(lease.info));
    }
    tx.execute("DELETE FROM region_leases WHERE run_id = $1", &[&run_id])
        .map_err(q)?;
    tx.execute("DELETE FROM leases WHERE inventory = $1", &[&inventory])
        .map_err(q)?;
    for f in &fenced {
        tx.execute(
            "INSERT INTO fences (holder, run_id, inventory, controller, machine, pid, was_live, fenced_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (holder) DO NOTHING",
            &[
                &f.holder,
                &run_id,
                &inventory,
                &f.controller,
                &f.machine,
                &f.pid,
                &f.live,
                &by,
            ],
        )
        .map_err(q)?;
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&fence_channel::name(store), &run_id],
    )
    .map_err(q)?;
    tx.commit().map_err(q)?;
    Ok(Unlocked::Broken(Broken {
        info: lease.info,
        live,
        fenced,
    }))
}

/// What a fenced holder said when it stopped: its `fences` row's outcome.
pub type Stopped = Option<String>;

/// Waits until every live holder in `fenced` has said it stopped, or `within` has
/// passed; returns each live holder with what it said (None: no word in time).
pub fn wait_stopped(
    store: &PgStore,
    fenced: &[Fenced],
    within: Duration,
) -> Result<Vec<(Fenced, Stopped)>, PgError> {
    let live: Vec<&Fenced> = fenced.iter().filter(|f| f.live).collect();
    let holders: Vec<String> = live.iter().map(|f| f.holder.clone()).collect();
    let deadline = Instant::now() + within;
    loop {
        let rows = store.with_reader("reading fenced controllers", |c| {
            c.query(
                "SELECT holder, outcome FROM fences WHERE holder = ANY($1) AND stopped IS NOT NULL",
                &[&holders],
            )
        })?;
        let said = |f: &Fenced| -> Stopped {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == f.holder)
                .map(|r| r.get::<_, Option<String>>(1).unwrap_or_default())
        };
        if rows.len() == holders.len() || Instant::now() >= deadline {
            return Ok(live.iter().map(|f| ((*f).clone(), said(f))).collect());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fenced holder's last word: it stopped, and what became of its commands. Nothing
/// happens when its lease was lost otherwise (expired, taken over): no row is its.
pub fn confirm_stopped(store: &PgStore, holder: &str, outcome: &str) -> Result<(), PgError> {
    store.with_reader("saying the controller stopped", |c| {
        c.execute(
            "UPDATE fences SET stopped = now(), outcome = $2 WHERE holder = $1",
            &[&holder, &outcome],
        )
    })?;
    Ok(())
}

/// Who broke `holder`'s lease with `pony unlock`, if that is how it was lost.
pub fn broken_by(store: &PgStore, holder: &str) -> Result<Option<String>, PgError> {
    let row = store.with_reader("reading fences", |c| {
        c.query_opt(
            "SELECT fenced_by, to_char(fenced AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM fences WHERE holder = $1",
            &[&holder],
        )
    })?;
    Ok(row.map(|r| format!("{} at {}", r.get::<_, String>(0), r.get::<_, String>(1))))
}
