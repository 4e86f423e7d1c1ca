//! The journal's second sink: each batch the journal writer group-commits to its file is
//! also inserted into the `journal` table in one transaction (one row per record), before
//! the batch is acknowledged. So a task's `task_started` is committed in the database
//! before its command starts, and its `task_finished` before its dependents start.
//!
//! The same transaction renews every lease this controller works under (the inventory's,
//! or its regions' and the run's inventory lease), and refuses the batch when any is no
//! longer its own: a controller that was cut off and taken over, or whose lease `pony
//! unlock` broke, can never write into the run another controller continues. A refused
//! batch is not acknowledged ([`Mirror::fenced`]): no task whose start it held starts.

use super::lease::{self, LeaseLost};
use super::regions;
use super::PgStore;
use crate::state::journal::Mirror;
use postgres::Client;

/// What a batch's transaction renews, and is refused without.
pub enum Fence {
    /// The inventory's lease (one controller per run).
    Inventory,
    /// This controller's region leases (`--regions`): it holds this many.
    Regions { count: usize, controller: String },
}

/// Writes one run's records; owned by the journal writer thread.
pub struct PgSink {
    store: PgStore,
    client: Option<Client>,
    run_id: String,
    inventory: String,
    holder: String,
    fence: Fence,
    lost: LeaseLost,
    /// Set once the lease is gone: nothing more is written.
    fenced: bool,
    /// Records of batches the database did not take (it was unreachable): sent again,
    /// first, with the next batch, so the database's journal catches up.
    unsent: Vec<String>,
}

/// How many unsent records are kept for a later batch before the oldest are given up
/// (they stay in the local journal).
const UNSENT_AT_MOST: usize = 100_000;

impl PgSink {
    pub fn new(
        store: PgStore,
        run_id: String,
        inventory: String,
        holder: String,
        fence: Fence,
        lost: LeaseLost,
    ) -> PgSink {
        PgSink {
            store,
            client: None,
            run_id,
            inventory,
            holder,
            fence,
            lost,
            fenced: false,
            unsent: Vec::new(),
        }
    }

    /// One attempt: Ok(false) when the lease was lost.
    fn try_commit(&mut self, lines: &[String]) -> Result<bool, String> {
        if self.client.is_none() {
            self.client = Some(self.store.connect().map_err(|e| e.to_string())?);
        }
        let client = self.client.as_mut().expect("connected above");
        let mut tx = client.transaction().map_err(|e| e.to_string())?;
        let seconds = self.store.lease.as_secs_f64();
        let (renewed, controller) = match &self.fence {
            Fence::Inventory => (
                lease::renew(&mut tx, &self.inventory, &self.holder, seconds),
                None,
            ),
            Fence::Regions { count, controller } => (
                regions::renew(
                    &mut tx,
                    &self.run_id,
                    &self.inventory,
                    &self.holder,
                    *count,
                    seconds,
                ),
                Some(controller.as_str()),
            ),
        };
        if !renewed.map_err(|e| e.to_string())? {
            return Ok(false);
        }
        if controller.is_some() {
            // Several controllers write this run: one batch at a time, so that rows
            // become visible in `seq` order and the others' readers, which go on from
            // the last `seq` they read, never skip one committed late.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('pony-journal:' || $1))",
                &[&self.run_id],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.execute(
            "INSERT INTO journal (run_id, record, controller)
             SELECT $1, line::jsonb, $3 FROM unnest($2::text[]) WITH ORDINALITY AS batch(line, n)
             ORDER BY n",
            &[&self.run_id, &lines, &controller],
        )
        .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(true)
    }
}

impl Mirror for PgSink {
    fn fenced(&self) -> bool {
        self.fenced
    }

    fn commit(&mut self, lines: &[String]) -> Result<(), String> {
        if self.fenced {
            return Err("the lease is lost; records stay in the local journal only".into());
        }
        let mut batch = std::mem::take(&mut self.unsent);
        batch.extend_from_slice(lines);
        // A dropped connection (the server restarted, a network blip) gets one fresh
        // connection and one more try before the batch is kept for the next one.
        let outcome = match self.try_commit(&batch) {
            Err(first) => {
                tracing::warn!("state database: {first}; reconnecting");
                self.client = None;
                self.try_commit(&batch)
            }
            ok => ok,
        };
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.fenced = true;
                self.lost.notify_one();
                Err(format!(
                    "the lease on inventory `{}` (or on one of its regions) is no longer this controller's (expired, taken over, or broken with `pony unlock`): nothing it journals from now on is accepted, and no new task starts",
                    self.inventory
                ))
            }
            Err(e) => {
                self.client = None;
                let kept = batch.len().min(UNSENT_AT_MOST);
                self.unsent = batch.split_off(batch.len() - kept);
                Err(format!(
                    "{e} ({kept} record(s) kept to send with the next batch; all are in the local journal)"
                ))
            }
        }
    }
}
