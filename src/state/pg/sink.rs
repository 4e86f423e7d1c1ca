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
//!
//! The database is written by a sender thread of its own, through an **outbox**: the
//! writer queues each batch and waits for it a bounded time ([`super::PgStore::bound`]).
//! A database that is down or hung (a stopped server, `LOCK TABLE journal`) therefore
//! never holds the run: the batch stays queued, the run goes on with its records durable
//! in the local journal only, and the sender sends the whole outbox, in order, once the
//! database takes it again. While the database is not answering, a batch does not wait at all.
//! A controller that cannot renew its lease meanwhile stops by its own clock
//! ([`super::deadline`]); what its outbox still held stays in its local journal, and a
//! `pony resume` on the same machine merges it and sends it ([`crate::state::store`]).

use super::lease;
use super::regions;
use super::PgStore;
use crate::state::deadline::LeaseLost;
// A duration as messages show it (`3.3s`).
use crate::duration::short as show;
use crate::state::journal::Mirror;
use postgres::Client;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a batch's transaction renews, and is refused without.
pub enum Fence {
    /// The inventory's lease (one controller per run).
    Inventory,
    /// This controller's region leases (`--regions`): it holds this many.
    Regions { count: usize, controller: String },
}

/// Writes one run's records: the writer's side of the outbox.
pub struct PgSink {
    shared: Arc<Shared>,
    /// How long a batch waits for the database before the run goes on without it.
    wait: Duration,
    run_id: String,
    /// The controller's own count of its lease: once it ran out, nothing waits on the
    /// database any more (the run is stopping as on a lost lease).
    clock: Arc<crate::state::deadline::LeaseClock>,
}

/// The outbox, shared by the writer and the sender thread.
struct Shared {
    outbox: Mutex<Outbox>,
    changed: Condvar,
}

#[derive(Default)]
struct Outbox {
    /// Records (JSON lines) not yet committed, oldest first.
    pending: VecDeque<String>,
    /// How many records were ever queued, and how many of them were committed.
    queued: u64,
    sent: u64,
    /// The lease is gone: nothing more is written.
    fenced: bool,
    /// The journal is closing: the sender ends once the outbox is empty.
    closing: bool,
    /// Why the last attempt failed, while the database is not taking records.
    failing: Option<String>,
    /// Records given up because the outbox was full (they are in the local journal).
    dropped: u64,
}

/// The most records the outbox holds; newer ones beyond it are not queued (they stay
/// in the local journal, which a resume on this machine merges).
const OUTBOX_AT_MOST: usize = 1_000_000;

/// The most records sent in one transaction when the outbox is long.
const BATCH_AT_MOST: usize = 10_000;

impl PgSink {
    /// A sink whose outbox starts with `unsent`: records of the run's local journal the
    /// database lacks (an earlier controller on this machine could not send them).
    pub fn new(
        store: PgStore,
        run_id: String,
        inventory: String,
        holder: String,
        fence: Fence,
        lost: LeaseLost,
        unsent: Vec<String>,
    ) -> std::io::Result<PgSink> {
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox {
                queued: unsent.len() as u64,
                pending: unsent.into(),
                ..Outbox::default()
            }),
            changed: Condvar::new(),
        });
        let wait = store.bound();
        let clock = store.lease_clock().clone();
        let sender = Sender {
            store,
            client: None,
            run_id: run_id.clone(),
            inventory,
            holder,
            fence,
            lost,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("pony-journal-db".into())
            .spawn(move || sender.run())?;
        Ok(PgSink {
            shared,
            wait,
            run_id,
            clock,
        })
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a batch may wait now: nothing once the lease ran out by this
    /// controller's own clock.
    fn wait_now(&self) -> Duration {
        if self.clock.passed() {
            Duration::ZERO
        } else {
            self.wait
        }
    }
}

fn fenced_error(inventory_hint: &str) -> String {
    format!("the lease {inventory_hint} is no longer this controller's (expired, taken over, or broken with `pony unlock`): nothing it journals from now on is accepted, and no new task starts; its records stay in the local journal only")
}

impl Mirror for PgSink {
    fn fenced(&self) -> bool {
        self.outbox().fenced
    }

    /// Queues the batch and waits (a bounded time) for the database to take it. Err
    /// only when the lease is lost; a database that does not answer in time leaves the
    /// batch queued (reported once when it starts failing, and when it is back).
    fn commit(&mut self, lines: &[String]) -> Result<(), String> {
        let wait = self.wait_now();
        let shared = self.shared.clone();
        let mut outbox = self.outbox();
        if outbox.fenced {
            return Err(fenced_error("of this run"));
        }
        // The run does not wait on a database that is not answering already (the
        // sender catches up once it does; then batches wait for it again).
        let behind = outbox.failing.is_some();
        let room = OUTBOX_AT_MOST.saturating_sub(outbox.pending.len());
        if room < lines.len() {
            outbox.dropped += (lines.len() - room) as u64;
        }
        let taken = &lines[..room.min(lines.len())];
        outbox.pending.extend(taken.iter().cloned());
        outbox.queued += taken.len() as u64;
        let target = outbox.queued;
        shared.changed.notify_all();
        if behind {
            return Ok(());
        }
        let until = Instant::now() + wait;
        while outbox.sent < target && !outbox.fenced && outbox.failing.is_none() {
            let now = Instant::now();
            if now >= until {
                if outbox.failing.is_none() {
                    outbox.failing = Some(format!("no answer within {}", show(wait)));
                    tracing::warn!(
                        "state database: a journal batch of run {} was not taken within {}; the run goes on, its records in the local journal and queued to be sent when the database answers",
                        self.run_id,
                        show(wait)
                    );
                }
                return Ok(());
            }
            outbox = shared
                .changed
                .wait_timeout(outbox, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if outbox.fenced {
            return Err(fenced_error("of this run"));
        }
        Ok(())
    }

    /// Waits (a bounded time) for the outbox to be sent; what is left stays in the
    /// local journal, and the error says so.
    fn close(&mut self) -> Result<(), String> {
        let wait = self.wait_now();
        let shared = self.shared.clone();
        let mut outbox = self.outbox();
        outbox.closing = true;
        shared.changed.notify_all();
        let until = Instant::now() + wait;
        while !outbox.pending.is_empty() && !outbox.fenced {
            let now = Instant::now();
            if now >= until {
                break;
            }
            outbox = shared
                .changed
                .wait_timeout(outbox, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let left = outbox.pending.len() as u64 + outbox.dropped;
        if left == 0 {
            return Ok(());
        }
        Err(format!(
            "{left} journal record(s) of run {run} did not reach the state database{why}: they are in this machine's local journal, and `{resume}` run on this machine sends them (a resume from another machine would not see them)",
            run = self.run_id,
            why = match (&outbox.failing, outbox.fenced) {
                (_, true) => " (the lease was lost)".to_string(),
                (Some(e), _) => format!(" ({e})"),
                (None, _) => String::new(),
            },
            resume = crate::hint::pony(format_args!("resume {}", self.run_id)),
        ))
    }
}

/// The thread that empties the outbox into the database.
struct Sender {
    store: PgStore,
    client: Option<Client>,
    run_id: String,
    inventory: String,
    holder: String,
    fence: Fence,
    lost: LeaseLost,
    shared: Arc<Shared>,
}

impl Sender {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(mut self) {
        loop {
            let batch: Vec<String> = {
                let mut outbox = self.outbox();
                while outbox.pending.is_empty() && !outbox.closing {
                    outbox = self
                        .shared
                        .changed
                        .wait(outbox)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if outbox.pending.is_empty() {
                    return;
                }
                outbox.pending.iter().take(BATCH_AT_MOST).cloned().collect()
            };
            let sent = Instant::now();
            // A dropped connection (the server restarted, a network blip) gets one
            // fresh connection and one more try before the batch waits for the next.
            let outcome = match self.try_commit(&batch) {
                Err(_) => {
                    self.client = None;
                    self.try_commit(&batch)
                }
                ok => ok,
            };
            match outcome {
                Ok(true) => {
                    self.store.lease_clock().renewed(sent);
                    let mut outbox = self.outbox();
                    outbox.pending.drain(..batch.len());
                    outbox.sent += batch.len() as u64;
                    if outbox.failing.take().is_some() {
                        tracing::warn!(
                            "state database: it takes the journal of run {} again ({} record(s) of the outbox sent)",
                            self.run_id,
                            batch.len()
                        );
                    }
                    self.shared.changed.notify_all();
                }
                Ok(false) => {
                    tracing::error!(
                        "{}",
                        fenced_error(&format!(
                            "on inventory `{}` (or on one of its regions)",
                            self.inventory
                        ))
                    );
                    // The lease is marked lost before the writer learns the batch was
                    // refused: the run, finding its records unacknowledged, then stops
                    // as a fenced controller (interrupted), not as a broken journal.
                    self.lost.notify_one();
                    let mut outbox = self.outbox();
                    outbox.fenced = true;
                    self.shared.changed.notify_all();
                    return;
                }
                Err(e) => {
                    self.client = None;
                    let mut outbox = self.outbox();
                    if outbox.failing.is_none() {
                        tracing::warn!(
                            "state database: {e}; the run goes on, its records in the local journal and queued ({} now) to be sent when the database answers",
                            outbox.pending.len()
                        );
                    }
                    outbox.failing = Some(e);
                    self.shared.changed.notify_all();
                    // Tried again after a pause (sooner when the journal closes).
                    let pause = self.store.bound();
                    if !outbox.closing {
                        let _ = self
                            .shared
                            .changed
                            .wait_timeout(outbox, pause)
                            .unwrap_or_else(|e| e.into_inner());
                    } else {
                        drop(outbox);
                        std::thread::sleep(pause / 4);
                    }
                }
            }
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
        let controller = match &self.fence {
            Fence::Inventory => None,
            Fence::Regions { controller, .. } => Some(controller.as_str()),
        };
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
        // The rows first, the leases after: a batch held up behind a lock on `journal`
        // then holds no lock on a lease's row, and the heartbeat keeps renewing it.
        // Every lease this controller works under is checked here, in the batch's own
        // transaction (a region controller's regions and the run's inventory lease): an
        // update matching no row refuses the whole batch.
        tx.execute(
            "INSERT INTO journal (run_id, record, controller)
             SELECT $1, line::jsonb, $3 FROM unnest($2::text[]) WITH ORDINALITY AS batch(line, n)
             ORDER BY n",
            &[&self.run_id, &lines, &controller],
        )
        .map_err(|e| e.to_string())?;
        let renewed = match &self.fence {
            Fence::Inventory => lease::renew(&mut tx, &self.inventory, &self.holder, seconds),
            Fence::Regions { count, .. } => regions::renew(
                &mut tx,
                &self.run_id,
                &self.inventory,
                &self.holder,
                *count,
                seconds,
            ),
        };
        if !renewed.map_err(|e| e.to_string())? {
            // Rolled back: a fenced controller's rows never land.
            return Ok(false);
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(true)
    }
}
