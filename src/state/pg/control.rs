//! Live control through the database (`pony pause|continue|abort|approve RUN` with
//! `--state postgres://…`): the command reaches every live controller of the run, from
//! any machine that reaches the database, and each controller's answer comes back.
//!
//! The sender inserts one row into `control` and notifies `<schema>_control`; every
//! controller of a run listens on that channel, hands each new command of its run to its
//! scheduler exactly as the local control socket does ([`crate::control`]), and writes
//! its answer into `control_answers` once the command is applied and journaled, notifying
//! `<schema>_control_answer`. The sender waits for one answer per controller that was
//! live when it sent.
//!
//! Notifications only wake the readers up: what is read is always the tables, from the
//! last row seen on, and a reader also looks every [`RECHECK`] without one. So a
//! notification lost while a connection was being re-made loses nothing.

use super::{PgError, PgStore};
use crate::control::{Answer, ControlCommand, ControlReply, ControlRequest, Operator};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long a reader waits for a notification before reading the table anyway.
const RECHECK: Duration = Duration::from_secs(1);

/// How long `pony pause` & co. wait for every controller's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The holder of a single controller's inventory lease is a token; a run split by region
/// holds it as `run:<id>` and names its controllers in `region_leases`.
const LIVE_CONTROLLERS: &str = "
    SELECT DISTINCT controller FROM region_leases WHERE run_id = $1 AND expires > now()
    UNION
    SELECT machine || ':' || pid FROM leases
     WHERE run_id = $1 AND expires > now() AND holder NOT LIKE 'run:%'
    ORDER BY 1";

fn commands_channel(store: &PgStore) -> String {
    format!("{}_control", store.schema)
}

fn answers_channel(store: &PgStore) -> String {
    format!("{}_control_answer", store.schema)
}

/// What became of a command sent through the database.
#[derive(Debug)]
pub enum Sent {
    /// No controller of the run is live: nothing was sent.
    NotRunning,
    Answered {
        answers: Vec<Answer>,
        /// Controllers live when it was sent that stopped before answering.
        gone: Vec<String>,
        /// Controllers still live that did not answer in time.
        silent: Vec<String>,
    },
}

/// Sends `command` to every live controller of `run_id` and waits for their answers.
pub fn send(
    store: &PgStore,
    run_id: &str,
    command: &ControlCommand,
    operator: &Operator,
) -> Result<Sent, PgError> {
    let q = |what: &'static str| move |e| store.query(what, e);
    let mut client = store.connect()?;
    let mut expected = live_controllers(&mut client, run_id).map_err(q("reading leases"))?;
    if expected.is_empty() {
        return Ok(Sent::NotRunning);
    }
    client
        .batch_execute(&format!("LISTEN {}", answers_channel(store)))
        .map_err(q("listening for answers"))?;
    let id = insert(store, &mut client, run_id, command, operator, None)?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut gone = Vec::new();
    loop {
        let answers = answers(&mut client, id).map_err(q("reading answers"))?;
        let answered = |name: &String| answers.iter().any(|a| &a.controller == name);
        let live = live_controllers(&mut client, run_id).map_err(q("reading leases"))?;
        let (waiting, left): (Vec<String>, Vec<String>) = expected
            .into_iter()
            .filter(|c| !answered(c))
            .partition(|c| live.contains(c));
        gone.extend(left);
        expected = waiting;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if expected.is_empty() || remaining.is_zero() {
            return Ok(Sent::Answered {
                answers,
                gone,
                silent: expected,
            });
        }
        wait_for_notification(&mut client, remaining.min(RECHECK), &id.to_string())
            .map_err(q("waiting for answers"))?;
    }
}

/// Records a command a controller took at its own terminal, so that the run's other
/// controllers apply it too; nobody waits for their answers.
pub fn forward(
    store: &PgStore,
    run_id: &str,
    command: &ControlCommand,
    operator: &Operator,
    origin: &str,
) -> Result<(), PgError> {
    let mut client = store.connect()?;
    insert(store, &mut client, run_id, command, operator, Some(origin)).map(|_| ())
}

fn insert(
    store: &PgStore,
    client: &mut Client,
    run_id: &str,
    command: &ControlCommand,
    operator: &Operator,
    origin: Option<&str>,
) -> Result<i64, PgError> {
    let q = |e| store.query("sending the command", e);
    let text = serde_json::to_string(command).expect("serializes");
    let pid = operator.pid as i32;
    let mut tx = client.transaction().map_err(q)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO control (run_id, command, username, machine, pid, origin)
             VALUES ($1, $2::text::jsonb, $3, $4, $5, $6) RETURNING id",
            &[
                &run_id,
                &text,
                &operator.user,
                &operator.host,
                &pid,
                &origin,
            ],
        )
        .map_err(q)?
        .get(0);
    // Delivered when the transaction commits, so a woken controller finds the row.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&commands_channel(store), &run_id],
    )
    .map_err(q)?;
    tx.commit().map_err(q)?;
    Ok(id)
}

fn live_controllers(client: &mut Client, run_id: &str) -> Result<Vec<String>, postgres::Error> {
    Ok(client
        .query(LIVE_CONTROLLERS, &[&run_id])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn answers(client: &mut Client, id: i64) -> Result<Vec<Answer>, postgres::Error> {
    Ok(client
        .query(
            "SELECT controller, accepted, message FROM control_answers
             WHERE control_id = $1 ORDER BY answered, controller",
            &[&id],
        )?
        .iter()
        .map(|r| Answer {
            controller: r.get(0),
            reply: ControlReply {
                accepted: r.get(1),
                message: r.get(2),
            },
        })
        .collect())
}

/// Waits up to `wait` for a notification whose payload is `wanted`, then takes every
/// other one already queued (each only says "look again"). The channel is the whole
/// installation's: notifications about other runs or commands are passed over, so they
/// cost no read of the table.
fn wait_for_notification(
    client: &mut Client,
    wait: Duration,
    wanted: &str,
) -> Result<(), postgres::Error> {
    let deadline = Instant::now() + wait;
    let mut notifications = client.notifications();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match notifications.timeout_iter(left).next()? {
            Some(notification) if notification.payload() != wanted && !left.is_zero() => {}
            _ => break,
        }
    }
    notifications.iter().count()?;
    Ok(())
}

/// The `approve` commands of a run that some controller took (or that a controller
/// forwarded from its terminal): a controller that starts later (`join`, `resume
/// --regions`) takes them as pre-approvals, as the controllers live then did.
pub fn earlier_approvals(store: &PgStore, run_id: &str) -> Result<Vec<String>, PgError> {
    let rows = store.with_reader("reading earlier approvals", |c| {
        c.query(
            "SELECT DISTINCT c.command->>'wave' FROM control c
             WHERE c.run_id = $1 AND c.command->>'command' = 'approve'
               AND (c.origin IS NOT NULL OR EXISTS (
                     SELECT 1 FROM control_answers a WHERE a.control_id = c.id AND a.accepted))",
            &[&run_id],
        )
    })?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect())
}

/// Who paused the run, when a pause is in force for `controller` joining it: the run's
/// latest `pause` or `continue` up to command `up_to` is a `pause`, and another controller
/// of the run holds a live lease. Every live controller is paused then: each took the
/// pause, or carried it over when it joined. A pause whose controllers have all ended is
/// over. Answers are not awaited: a command sent just before the join counts as it will
/// for the others.
pub fn pause_in_force(
    store: &PgStore,
    run_id: &str,
    up_to: i64,
    controller: &str,
) -> Result<Option<Operator>, PgError> {
    let row = store.with_reader("reading the run's pause", |c| {
        c.query_opt(
            "SELECT c.command->>'command', c.username, c.machine, c.pid FROM control c
              WHERE c.run_id = $1 AND c.id <= $2
                AND c.command->>'command' IN ('pause', 'continue')
                AND EXISTS (SELECT 1 FROM region_leases r
                             WHERE r.run_id = c.run_id AND r.controller <> $3
                               AND r.expires > now())
              ORDER BY c.id DESC LIMIT 1",
            &[&run_id, &up_to, &controller],
        )
    })?;
    Ok(row
        .filter(|r| r.get::<_, Option<&str>>(0) == Some("pause"))
        .map(|r| Operator {
            user: r.get(1),
            host: r.get(2),
            pid: r.get::<_, i32>(3) as u32,
        }))
}

/// A controller's reader of its run's commands; dropping it stops the reading (the
/// thread sees its stop channel disconnected at its next wake-up: a notification, or
/// [`RECHECK`] without one).
pub struct Listener {
    _stop: Mutex<mpsc::Sender<()>>,
}

impl Listener {
    /// Listens for the commands of `run_id` sent from now on and hands each to
    /// `requests`, answering as `controller`. A controller `joining` a split run first
    /// gets the pause in force, if any ([`pause_in_force`]), ahead of every later command:
    /// it starts paused as the others are, and goes on at the same `continue`.
    pub fn start(
        store: PgStore,
        run_id: String,
        controller: String,
        requests: UnboundedSender<ControlRequest>,
        joining: bool,
    ) -> Result<Listener, PgError> {
        let mut client = listening(&store)?;
        let last: i64 = client
            .query_one(
                "SELECT coalesce(max(id), 0) FROM control WHERE run_id = $1",
                &[&run_id],
            )
            .map_err(|e| store.query("reading the control table", e))?
            .get(0);
        if joining {
            if let Some(operator) = pause_in_force(&store, &run_id, last, &controller)? {
                // Journaled as the pause its operator sent; nobody waits for this answer.
                let (reply, _) = tokio::sync::oneshot::channel();
                let _ = requests.send(ControlRequest {
                    command: ControlCommand::Pause,
                    operator,
                    reply,
                });
            }
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let reader = Reader {
            store,
            run_id,
            controller,
            requests,
            last,
        };
        std::thread::Builder::new()
            .name("pony-control".into())
            .spawn(move || reader.run(client, &stopped))
            .map_err(|e| PgError::Thread(e.to_string()))?;
        Ok(Listener {
            _stop: Mutex::new(stop),
        })
    }
}

fn listening(store: &PgStore) -> Result<Client, PgError> {
    let mut client = store.connect()?;
    client
        .batch_execute(&format!("LISTEN {}", commands_channel(store)))
        .map_err(|e| store.query("listening for commands", e))?;
    Ok(client)
}

/// The reading thread's state: the last command seen of its run.
struct Reader {
    store: PgStore,
    run_id: String,
    controller: String,
    requests: UnboundedSender<ControlRequest>,
    last: i64,
}

impl Reader {
    fn run(mut self, mut client: Client, stop: &mpsc::Receiver<()>) {
        let stopped = || !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty));
        loop {
            if stopped() || self.requests.is_closed() {
                return;
            }
            let read = self
                .take_new(&mut client)
                .and_then(|_| wait_for_notification(&mut client, RECHECK, &self.run_id));
            if let Err(e) = read {
                tracing::warn!("live control through the state database: {e}; reconnecting");
                // Waits out a moment before reconnecting, or ends at once when stopped.
                if !matches!(
                    stop.recv_timeout(RECHECK),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
                match listening(&self.store) {
                    Ok(fresh) => client = fresh,
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
    }

    /// Applies the run's commands after the last one seen, in order, answering each.
    fn take_new(&mut self, client: &mut Client) -> Result<(), postgres::Error> {
        let rows = client.query(
            "SELECT id, command::text, username, machine, pid, origin FROM control
             WHERE run_id = $1 AND id > $2 ORDER BY id",
            &[&self.run_id, &self.last],
        )?;
        for row in rows {
            let id: i64 = row.get(0);
            self.last = id;
            // This controller applied what it forwarded before forwarding it.
            if row.get::<_, Option<&str>>(5) == Some(self.controller.as_str()) {
                continue;
            }
            let operator = Operator {
                user: row.get(2),
                host: row.get(3),
                pid: row.get::<_, i32>(4) as u32,
            };
            let reply = self.apply(row.get(1), operator);
            client.execute(
                "INSERT INTO control_answers (control_id, controller, accepted, message)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&id, &self.controller, &reply.accepted, &reply.message],
            )?;
            client.execute(
                "SELECT pg_notify($1, $2)",
                &[&answers_channel(&self.store), &id.to_string()],
            )?;
        }
        Ok(())
    }

    /// Hands one command to the scheduler and waits for its answer (given once the
    /// command's journal record is written).
    fn apply(&self, text: &str, operator: Operator) -> ControlReply {
        let ended = || ControlReply {
            accepted: false,
            message: "the run is ending and takes no more commands".into(),
        };
        let command = match serde_json::from_str::<ControlCommand>(text) {
            Ok(command) => command,
            Err(e) => {
                return ControlReply {
                    accepted: false,
                    message: format!("not a control command: {e}"),
                }
            }
        };
        let (reply, answered) = tokio::sync::oneshot::channel();
        let request = ControlRequest {
            command,
            operator,
            reply,
        };
        match self.requests.send(request) {
            Ok(()) => answered.blocking_recv().unwrap_or_else(|_| ended()),
            Err(_) => ended(),
        }
    }
}
