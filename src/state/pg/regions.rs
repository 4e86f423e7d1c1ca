//! Region leases: several controllers sharing one run, each working on its own regions
//! (`pony deploy --regions`, `pony join RUN --regions`, `pony resume RUN --regions`).
//!
//! A controller holds one row of `region_leases` per region it works on, renewed by its
//! heartbeat and checked in every journal batch (fencing) exactly as the inventory lease
//! is. The inventory's lease then belongs to the *run* (its holder is `run:<id>`): every
//! controller of the run renews it with its own regions, so it lives while any region
//! lease lives, and the last controller to leave releases it. A controller that dies loses
//! only its region leases; once they expired, `pony resume RUN --regions …` on any machine
//! takes them over with a new token, which fences the old holder off. A controller that
//! stops with work left (interrupted, halted) expires its rows itself rather than deleting
//! them: its regions then read as abandoned exactly as a dead controller's do.

use super::{PgError, PgStore};
use crate::state::lock::LockError;
use crate::state::split::{ControllerPart, RegionRow};

use super::lease::{db, Heartbeat};
use crate::state::deadline::LeaseLost;

/// The inventory lease's holder while a run is split by region.
fn run_holder(run_id: &str) -> String {
    format!("run:{run_id}")
}

/// The region leases this controller holds for one run.
pub struct RegionLease {
    store: PgStore,
    pub run_id: String,
    pub inventory: String,
    pub regions: Vec<String>,
    pub controller: String,
    /// This controller's token in its rows; a takeover replaces it.
    pub holder: String,
    heartbeat: Option<Heartbeat>,
    /// What dropping it does with the rows.
    leaving: Leaving,
}

/// How a controller leaves its regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Its part is done: the rows are deleted (`pony status` shows it `left`).
    Done,
    /// It stopped with work left (interrupted, halted): the rows are marked expired at
    /// once, so they read as abandoned (`expired`), the other controllers see the loss,
    /// and `pony resume RUN --regions …` takes them over.
    Abandoned,
    /// Stopped at an `approve:` gate: the rows are left to expire by themselves.
    Kept,
}

/// Takes the leases of `regions` of run `run_id` for `controller`. A new run (`deploy`)
/// also takes the inventory's lease for the run; joining or resuming needs the inventory
/// free, or held by this run (live, or expired when every controller of it died).
pub fn acquire(
    store: &PgStore,
    inventory: &str,
    run_id: &str,
    regions: &[String],
    controller: &str,
    new_run: bool,
    lost: LeaseLost,
) -> Result<RegionLease, LockError> {
    let mut client = store
        .connect()
        .map_err(|e| LockError::Database(e.to_string()))?;
    let holder = super::lease::new_holder();
    let seconds = store.lease.as_secs_f64();
    let pid = std::process::id() as i32;
    let machine = crate::process::hostname();
    let q = db(store, "taking the region leases");
    let mut tx = client.transaction().map_err(&q)?;
    let run_token = run_holder(run_id);
    if !super::lease::insert(&mut tx, inventory, run_id, &run_token, seconds).map_err(&q)? {
        let current = super::lease::read_in(&mut tx, inventory).map_err(&q)?;
        // A run with one live controller (no --regions) is never split from outside:
        // only a split run's lease, or one its controllers left, is taken.
        let ours = !new_run
            && current.info.run_id == run_id
            && (current.holder() == run_token || !current.live || current.info.awaiting_approval);
        if !ours {
            return Err(current.refusal());
        }
        tx.execute(
            "UPDATE leases SET holder = $2, expires = greatest(expires, now() + make_interval(secs => $3)),
                awaiting_approval = false
             WHERE inventory = $1",
            &[&inventory, &run_token, &seconds],
        )
        .map_err(&q)?;
    }
    for region in regions {
        let taken = tx
            .execute(
                "INSERT INTO region_leases (run_id, region, holder, controller, pid, machine, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
                 ON CONFLICT (run_id, region) DO UPDATE
                   SET holder = excluded.holder, controller = excluded.controller,
                       pid = excluded.pid, machine = excluded.machine,
                       started = now(), expires = excluded.expires
                   WHERE region_leases.expires <= now()",
                &[&run_id, region, &holder, &controller, &pid, &machine, &seconds],
            )
            .map_err(&q)?;
        if taken == 0 {
            let row = tx
                .query_one(
                    "SELECT controller, machine, pid FROM region_leases WHERE run_id = $1 AND region = $2",
                    &[&run_id, region],
                )
                .map_err(&q)?;
            return Err(LockError::RegionHeld(format!(
                "region `{region}` of run {run_id} is held by controller {} (pid {} on {})\n  hint: wait for it, or take it over with `{}` once its lease expired",
                row.get::<_, String>(0),
                row.get::<_, i32>(2),
                row.get::<_, String>(1),
                crate::hint::pony(format_args!("resume {run_id} --regions {region}")),
            )));
        }
    }
    tx.commit().map_err(&q)?;
    let heartbeat = {
        let (run, inventory, holder) = (run_id.to_string(), inventory.to_string(), holder.clone());
        let count = regions.len();
        Heartbeat::spawn(
            store.clone(),
            "region lease",
            format!("lost a lease of run {run} (a region's expired or was taken over, or `pony unlock` broke the run's leases)"),
            lost,
            move |client, seconds| renew(client, &run, &inventory, &holder, count, seconds),
        )
    }
    .map_err(|e| LockError::Database(format!("cannot start the lease heartbeat: {e}")))?;
    Ok(RegionLease {
        store: store.clone(),
        run_id: run_id.to_string(),
        inventory: inventory.to_string(),
        regions: regions.to_vec(),
        controller: controller.to_string(),
        holder,
        heartbeat: Some(heartbeat),
        leaving: Leaving::Done,
    })
}

/// Renews this controller's region leases and, with them, the run's inventory lease;
/// false when any of its regions is no longer its own or already expired, or when the
/// inventory's lease is no longer the run's (broken with `pony unlock`, and maybe taken
/// by another run since): every lease the controller works under is checked, each in
/// the caller's transaction (a journal batch's, or the heartbeat's statement).
pub fn renew(
    client: &mut impl postgres::GenericClient,
    run_id: &str,
    inventory: &str,
    holder: &str,
    regions: usize,
    seconds: f64,
) -> Result<bool, postgres::Error> {
    let renewed = client.execute(
        "UPDATE region_leases SET expires = now() + make_interval(secs => $3)
         WHERE run_id = $1 AND holder = $2 AND expires > now()",
        &[&run_id, &holder, &seconds],
    )?;
    if renewed as usize != regions {
        return Ok(false);
    }
    let inventory_renewed = client.execute(
        "UPDATE leases SET expires = greatest(expires, now() + make_interval(secs => $3))
         WHERE inventory = $1 AND run_id = $2 AND holder = $4",
        &[&inventory, &run_id, &seconds, &run_holder(run_id)],
    )?;
    Ok(inventory_renewed == 1)
}

impl RegionLease {
    fn stop_heartbeat(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop();
        }
    }
}

impl RegionLease {
    /// Stops renewing and leaves the regions' leases to expire (the run stopped at an
    /// `approve:` gate): `pony resume RUN --regions …` takes them over.
    pub fn keep(mut self) {
        self.stop_heartbeat();
        self.leaving = Leaving::Kept;
    }

    /// Leaves the regions with work left (the controller was interrupted, or stopped
    /// by a failure): their rows expire now rather than being deleted, so they read as
    /// abandoned and are taken over by `pony resume RUN --regions …`.
    pub fn abandon(mut self) {
        self.leaving = Leaving::Abandoned;
    }
}

impl Drop for RegionLease {
    /// Gives this controller's regions back (or marks them abandoned); the last
    /// controller of the run also gives the inventory back, once no live region lease
    /// is left (a `resume` or `join` then takes it as any free lease).
    fn drop(&mut self) {
        self.stop_heartbeat();
        let leave = match self.leaving {
            Leaving::Kept => return,
            Leaving::Done => "DELETE FROM region_leases WHERE run_id = $1 AND holder = $2",
            Leaving::Abandoned => {
                "UPDATE region_leases SET expires = least(expires, now())
                 WHERE run_id = $1 AND holder = $2"
            }
        };
        let released = self
            .store
            .connect()
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.execute(leave, &[&self.run_id, &self.holder])
                    .and_then(|_| {
                        c.execute(
                            "DELETE FROM leases WHERE inventory = $1 AND run_id = $2
                           AND holder = 'run:' || $2
                           AND NOT EXISTS (SELECT 1 FROM region_leases
                                           WHERE run_id = $2 AND expires > now())",
                            &[&self.inventory, &self.run_id],
                        )
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = released {
            tracing::warn!("could not release the region leases (they expire by themselves): {e}");
        }
    }
}

/// The region leases of a run (live or expired), by region.
pub fn read(store: &PgStore, run_id: &str) -> Result<Vec<RegionRow>, PgError> {
    store.with_reader("reading region leases", |c| rows(c, run_id))
}

/// [`read`] on a connection of the caller's (the split run's journal reader).
pub fn rows(
    client: &mut impl postgres::GenericClient,
    run_id: &str,
) -> Result<Vec<RegionRow>, postgres::Error> {
    let rows = client.query(
        "SELECT region, controller, machine, pid, expires > now(), holder
         FROM region_leases WHERE run_id = $1 ORDER BY region",
        &[&run_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| RegionRow {
            region: r.get(0),
            controller: r.get(1),
            machine: r.get(2),
            pid: r.get(3),
            live: r.get(4),
            holder: r.get(5),
        })
        .collect())
}

/// Each controller's part of a split run, in the order they first wrote; empty for a
/// run with one controller. `region_of` names the region of a task label's host.
pub fn parts(
    store: &PgStore,
    run_id: &str,
    region_of: impl Fn(&str) -> Option<(usize, String)>,
) -> Result<Vec<ControllerPart>, PgError> {
    let rows = store.with_reader("reading the journal's controllers", |c| {
        c.query(
            "SELECT controller, record->>'type', record->>'state', record->>'label'
             FROM journal WHERE run_id = $1 AND controller IS NOT NULL
               AND record->>'type' IN ('task_started', 'task_finished')
             ORDER BY seq",
            &[&run_id],
        )
    })?;
    let leases = read(store, run_id)?;
    let mut parts: Vec<(ControllerPart, Vec<(usize, String)>)> = Vec::new();
    for row in &rows {
        let controller: String = row.get(0);
        let at = match parts.iter().position(|p| p.0.controller == controller) {
            Some(at) => at,
            None => {
                let lease = match leases.iter().find(|l| l.controller == controller) {
                    Some(l) if l.live => "live",
                    Some(_) => "expired",
                    None => "left",
                };
                parts.push((
                    ControllerPart {
                        controller,
                        regions: Vec::new(),
                        started: 0,
                        succeeded: 0,
                        failed: 0,
                        lease,
                    },
                    Vec::new(),
                ));
                parts.len() - 1
            }
        };
        let (part, regions) = &mut parts[at];
        match (row.get::<_, Option<&str>>(1), row.get::<_, Option<&str>>(2)) {
            (Some("task_started"), _) => part.started += 1,
            (_, Some("succeeded" | "skipped")) => part.succeeded += 1,
            (_, Some(_)) => part.failed += 1,
            _ => {}
        }
        if let Some(region) = row.get::<_, Option<&str>>(3).and_then(&region_of) {
            if !regions.contains(&region) {
                regions.push(region);
            }
        }
    }
    Ok(parts
        .into_iter()
        .map(|(mut part, mut regions)| {
            regions.sort();
            part.regions = regions.into_iter().map(|(_, name)| name).collect();
            part
        })
        .collect())
}
