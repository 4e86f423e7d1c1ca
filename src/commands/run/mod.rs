//! Running a plan, shared by `deploy`, `resume` and `rollback`: the inventory lock, the
//! journal, reporters, the approval prompt, signals, and what to tell the person after.

mod fenced;
mod prompt;

use crate::events::{Event, EventSink};
use crate::exec::hosts::HostPool;
use crate::exec::Mode;
use crate::exec::{self, ExecOptions};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::report::OutputFormat;
use crate::secret::Redactor;
use crate::settings::Settings;
use crate::state::backend::Held;
use crate::state::deadline::LeaseClock;
use crate::state::deadline::LeaseLost;
use crate::state::journal::{Journal, Record, RunKind};
use crate::state::replay::Replay;
use crate::state::run_dir::RunDir;
use crate::state::store::Store;
use crate::transport::ssh::SshOptions;
use fenced::fenced_stop;
use prompt::prompt_for_approvals;
use std::io::IsTerminal;
use std::sync::Arc;

/// Everything a run needs besides the settings options.
pub struct Launch {
    pub plan: Plan,
    pub run: RunFolder,
    pub redactor: Redactor,
    pub approvals: Vec<String>,
    pub accept_new_host_keys: bool,
    pub replay: Option<Replay>,
    pub mode: Mode,
    /// `pony resume --skip-failed-wave`: the failed wave a person lets the rollout past.
    pub skip_failed_wave: Option<String>,
    /// `deploy`, `resume` or `rollback`: a resume or rollback may take over its own
    /// run's lock.
    pub command: RunKind,
    /// `rollback`: how many tasks it will undo (what its header counts).
    pub rollback_tasks: usize,
    /// The state database's last journal `seq` of the run before it was read (0 for a
    /// new run): a run split by region reads other controllers' results after it.
    pub journal_seen: i64,
}

/// A new run's folder is created only once the lock is held.
pub enum RunFolder {
    New {
        inventory: std::path::PathBuf,
        playbook: std::path::PathBuf,
        vars: crate::state::snapshot::SnapshotVars,
    },
    Existing(RunDir),
}

pub fn launch(settings: &Settings, mut launch: Launch) -> anyhow::Result<Exit> {
    // A closed terminal does not end a run that may have tasks in flight: it goes on
    // without it (docs/operating.md, "Closing the terminal").
    crate::term::survive_hangup();
    let inventory = launch.plan.inventory.name.clone();
    let resuming = launch.command != RunKind::Deploy;
    let run_id = match &launch.run {
        RunFolder::New { .. } => crate::state::run_dir::new_run_id(),
        RunFolder::Existing(dir) => dir.id.clone(),
    };
    secure_control_dir(settings, &launch)?;
    let store = Store::for_writing(&super::store_settings(settings))?;
    let lease_lost = LeaseLost::default();
    let regions = regions(settings, &launch)?;
    let controller = settings.controller.clone().unwrap_or_default();
    // The lease counts from before it is asked for (the database's expiry is later).
    let asked = std::time::Instant::now();
    let held = match &regions {
        Some(regions) => store.acquire_regions(
            &inventory,
            &run_id,
            regions,
            &controller,
            !resuming,
            lease_lost.clone(),
        )?,
        None => store.acquire(&inventory, &run_id, resuming, lease_lost.clone())?,
    };
    let lease_clock = store.lease_clock(asked);
    if let RunFolder::Existing(dir) = &launch.run {
        // The run was read before its lease was ours: it must not have moved on since.
        // (Split by region, the other controllers go on writing: what they finish is
        // read from the shared journal as it comes.)
        if regions.is_none() {
            store.check_current(dir)?;
        }
    }
    let run_dir = run_folder(settings, &launch, &run_id, &inventory, &store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let journal = held.journal(&run_dir.journal_path(), &run_id, lease_lost.clone())?;
    // A controller joining a split run takes the approvals its other controllers took.
    if regions.is_some() {
        launch.approvals.extend(store.earlier_approvals(&run_id)?);
    }
    // Live control from any machine, through the state database (its listener connects
    // before the run's runtime starts: the client blocks).
    let control = control(settings, &store, &run_id, regions.is_some());
    let split = match &regions {
        Some(regions) => Some(split(settings, &launch, &store, &run_id, regions)?),
        None => None,
    };
    let journal_path = run_dir.journal_path();
    let exit = runtime.block_on(execute(
        settings,
        launch,
        run_dir,
        journal,
        Lease {
            lost: lease_lost.clone(),
            clock: lease_clock,
        },
        split,
        control,
    ));
    // Everything the run does has been awaited; a terminal question still open (its gate
    // was approved from another shell) must not hold the process.
    runtime.shutdown_background();
    let mut exit = exit?;
    if lease_lost.is_lost() {
        // Whatever the scheduler made of the end, a controller fenced off stopped as on
        // a second Ctrl-C: its commands were killed, its run is another's to go on with.
        exit = Exit::Interrupted;
        fenced_stop(&held, &journal_path);
    }
    leave(held, exit, &run_id);
    Ok(exit)
}

/// Before the lock and the run folder: a refused SSH control folder is a usage error,
/// and nothing has run.
fn secure_control_dir(settings: &Settings, launch: &Launch) -> anyhow::Result<()> {
    if launch
        .plan
        .inventory
        .hosts
        .iter()
        .any(|h| h.connection == crate::inventory::ConnectionKind::Ssh)
    {
        SshOptions::new(&settings.state_dir, launch.accept_new_host_keys).secure_control_dir()?;
    }
    Ok(())
}

/// This controller's part of a run split by region: the other controllers' progress
/// read from the shared journal as it comes.
fn split(
    settings: &Settings,
    launch: &Launch,
    store: &Store,
    run_id: &str,
    regions: &[String],
) -> anyhow::Result<Arc<crate::exec::regions::Split>> {
    Ok(Arc::new(crate::exec::regions::Split::start(
        &launch.plan,
        regions,
        store.follow_split(run_id, launch.journal_seen, regions)?,
        settings
            .on_controller_loss
            .unwrap_or(launch.plan.playbook.strategy.on_controller_loss),
    )))
}

/// The journal's first record of this part of the run: the run started (a deploy), or
/// resumed (a resume, rollback or join) by this process.
fn start_record(command: RunKind, plan: &Plan, run_dir: &RunDir) -> Record {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let user = crate::process::current_user();
    if command == RunKind::Deploy {
        Record::RunStarted {
            run_id: run_dir.id.clone(),
            playbook: plan.playbook.name.clone(),
            inventory: plan.inventory.name.clone(),
            time: now,
            pid: std::process::id(),
            user,
            host: crate::process::hostname(),
        }
    } else {
        Record::RunResumed {
            command,
            time: now,
            pid: std::process::id(),
            user,
            host: crate::process::hostname(),
        }
    }
}

/// The reporters the settings ask for, and the notifiers of the playbook and `--notify`.
fn reporters(
    settings: &Settings,
    plan: &Plan,
    run_dir: &RunDir,
) -> Vec<Box<dyn crate::report::Reporter>> {
    let mut reporters = crate::report::for_run(&settings.report_options());
    let notifiers: Vec<_> = plan
        .playbook
        .notify
        .iter()
        .chain(&settings.notify)
        .cloned()
        .collect();
    if !notifiers.is_empty() {
        reporters.push(Box::new(crate::notify::NotifyReporter::new(
            notifiers,
            run_dir.path.join("notify.log"),
            &run_dir.id,
        )));
    }
    reporters
}

/// The run's header: what it works through (a rollback's undoes, on the hosts it
/// touches; it has no waves).
fn run_started(mode: &Mode, rollback_tasks: usize, plan: &Plan, run_dir: &RunDir) -> Event {
    // A rollback's header counts what it undoes, on the hosts it touches; it has no waves.
    let (hosts, tasks, waves, regions) = match mode {
        Mode::Rollback(hosts) => (
            hosts.len(),
            rollback_tasks,
            Vec::new(),
            region_sizes_of(plan, hosts.iter()),
        ),
        Mode::Deploy => (
            plan.host_count(),
            plan.task_count(),
            plan.waves.iter().map(|w| w.name.clone()).collect(),
            region_sizes(plan),
        ),
    };
    Event::RunStarted {
        run_id: run_dir.id.clone(),
        playbook: plan.playbook.name.clone(),
        inventory: plan.inventory.name.clone(),
        hosts,
        tasks,
        waves,
        regions,
    }
}

/// The run's control socket for other shells on this machine; a run goes on without it
/// (Ctrl-C still works).
fn serve_control(
    run_dir: &RunDir,
    requests: tokio::sync::mpsc::UnboundedSender<crate::control::ControlRequest>,
) -> Option<crate::state::local::control::ControlSocket> {
    crate::state::local::control::serve(
        &crate::state::local::control::socket_path(&run_dir.path),
        requests,
    )
    .map_err(|e| {
        tracing::warn!("live control (pony pause/continue/abort/approve) is off for this run: {e}")
    })
    .ok()
}

/// `--approve WAVE` given now, and the approvals journaled from other shells (`pony
/// approve RUN WAVE` ahead of the gate) in an earlier part of the run.
fn approvals(given: Vec<String>, replay: Option<&Replay>) -> Vec<String> {
    let mut approvals = given;
    for wave in replay.iter().flat_map(|r| &r.pre_approved) {
        if !approvals.contains(wave) {
            approvals.push(wave.clone());
        }
    }
    approvals
}

/// The regions this controller takes (`--regions`) when the run is split by region;
/// `pony join` must name them.
fn regions(settings: &Settings, launch: &Launch) -> anyhow::Result<Option<Vec<String>>> {
    Ok(match &settings.regions {
        Some(globs) => Some(crate::exec::regions::select(&launch.plan, globs)?),
        None if launch.command == RunKind::Join => {
            return Err(crate::diag::Diagnostics::from(
                crate::diag::Diagnostic::new(
                    std::path::Path::new("--regions"),
                    "pony join needs the regions this controller takes",
                )
                .hint("give --regions GLOBS, e.g. --regions '!cn-*'"),
            )
            .into())
        }
        None => None,
    })
}

/// The run's folder: a new run's is created (and the run registered with the store) now
/// that the lock is held; a resumed run's is the one it was read from.
fn run_folder(
    settings: &Settings,
    launch: &Launch,
    run_id: &str,
    inventory: &str,
    store: &Store,
) -> anyhow::Result<RunDir> {
    let run_dir = match &launch.run {
        RunFolder::New {
            inventory,
            playbook,
            vars,
        } => RunDir::create(
            run_id.to_string(),
            &settings.state_dir,
            inventory,
            playbook,
            vars.clone(),
            &launch.plan,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the run folder under {}: {e}",
                settings.state_dir.display()
            )
        })?,
        RunFolder::Existing(dir) => dir.clone(),
    };
    if let RunFolder::New { .. } = &launch.run {
        store.create_run(run_id, inventory, &launch.plan.playbook.name, &run_dir.path)?;
    }
    Ok(run_dir)
}

/// The channel of control commands (`pony pause|continue|abort|approve`) from any
/// machine, through the state database when there is one.
fn control(settings: &Settings, store: &Store, run_id: &str, split: bool) -> Control {
    let (control_sender, control_receiver) = tokio::sync::mpsc::unbounded_channel();
    let controller = settings
        .controller
        .clone()
        .unwrap_or_else(crate::process::this_process);
    let remote = store.remote_control(run_id, &controller, control_sender.clone(), split);
    let forward = remote
        .forward
        .map(|forward| warn_unforwarded(forward, run_id.to_string()));
    let listener = remote.listener;
    Control {
        sender: control_sender,
        receiver: control_receiver,
        listener,
        forward,
    }
}

/// What the run leaves behind: the lock kept for an approval, or left with work to do
/// (and, on an interrupt, how to go on).
fn leave(held: Held, exit: Exit, run_id: &str) {
    match exit {
        Exit::AwaitingApproval => {
            held.keep_for_approval();
        }
        Exit::Interrupted => {
            eprintln!(
                "interrupted; continue with: {}",
                crate::hint::pony(format_args!("resume {run_id}"))
            );
            held.leave_with_work_left();
        }
        Exit::NeedsAttention => held.leave_with_work_left(),
        _ => {}
    }
}

async fn execute(
    settings: &Settings,
    launch: Launch,
    run_dir: RunDir,
    journal: Journal,
    lease: Lease,
    split: Option<Arc<crate::exec::regions::Split>>,
    control: Control,
) -> anyhow::Result<Exit> {
    let plan = Arc::new(launch.plan);
    let record = start_record(launch.command, &plan, &run_dir);
    journal.write(&record).await;
    let ssh = SshOptions::new(&settings.state_dir, launch.accept_new_host_keys);
    let pool = HostPool::new(plan.clone(), ssh, settings.state_dir.join("hosts")).prepare();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let reporters = reporters(settings, &plan, &run_dir);
    let reporting = tokio::spawn(crate::report::drive(receiver, reporters));
    let (sink, events) = EventSink::new();
    let recording = tokio::spawn(crate::state::recorder::record(
        events,
        journal.clone(),
        run_dir.clone(),
        sender.clone(),
    ));
    let _ = sender.send(run_started(
        &launch.mode,
        launch.rollback_tasks,
        &plan,
        &run_dir,
    ));
    // Live control from other shells; a run goes on without it (Ctrl-C still works).
    let Control {
        sender: control_sender,
        receiver: control,
        listener,
        forward,
    } = control;
    let socket = serve_control(&run_dir, control_sender);
    let has_control = socket.is_some() || listener.is_some();
    let interactive = std::io::stdin().is_terminal() && settings.output == OutputFormat::Human;
    let options = ExecOptions {
        run_id: run_dir.id.clone(),
        run_dir_display: run_dir.path.display().to_string(),
        redactor: launch.redactor,
        // `--approve WAVE` given now, and the approvals journaled from other shells
        // (`pony approve RUN WAVE` ahead of the gate) in an earlier part of the run.
        approvals: approvals(launch.approvals, launch.replay.as_ref()),
        connections: settings
            .connections
            .unwrap_or(plan.playbook.strategy.connections),
        interrupts: watch_signals(lease.clone()),
        approver: interactive.then(|| prompt_for_approvals(forward)),
        approval_wait: settings.approval_wait,
        control: has_control.then_some(control),
        replay: launch.replay,
        mode: launch.mode,
        clock: crate::exec::clock::Clock::real(),
        skip_failed_wave: launch.skip_failed_wave,
        rollback_pace: settings
            .rollback_pace
            .unwrap_or(plan.playbook.strategy.rollback_pace),
        split,
        lease_lost: Some(lease.lost),
    };
    let report = exec::run(plan.clone(), pool, options, sink).await;
    // Commands sent from now on find no run.
    drop(socket);
    drop(listener);
    // The scheduler's sink is gone: the recorder drains what is left, then the reporters
    // see the end of the stream.
    let _ = recording.await;
    drop(sender);
    journal.close().await;
    let _ = reporting.await;
    Ok(report.exit)
}

/// Hosts per region taking part in the run, in inventory order.
pub fn region_sizes(plan: &Plan) -> Vec<(String, usize)> {
    region_sizes_of(
        plan,
        plan.waves.iter().flat_map(|w| w.hosts.iter().copied()),
    )
}

/// Hosts per region among `hosts`, in inventory order, regions without any left out.
fn region_sizes_of(
    plan: &Plan,
    hosts: impl Iterator<Item = crate::inventory::HostId>,
) -> Vec<(String, usize)> {
    let mut sizes = vec![0usize; plan.inventory.regions.len()];
    for host in hosts {
        sizes[plan.inventory.hosts[host].region] += 1;
    }
    plan.inventory
        .regions
        .iter()
        .zip(sizes)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name.clone(), n))
        .collect()
}

/// Where a run's live-control commands come from: its control socket (made once the run
/// starts), the state database's listener, and the forwarding of terminal approvals.
struct Control {
    sender: tokio::sync::mpsc::UnboundedSender<crate::control::ControlRequest>,
    receiver: tokio::sync::mpsc::UnboundedReceiver<crate::control::ControlRequest>,
    listener: Option<Box<dyn Send + Sync>>,
    forward: Option<Forward>,
}

/// Sends an approval given at this controller's terminal to the run's other controllers.
type Forward = Arc<dyn Fn(&str) + Send + Sync>;

/// The backend's forwarding of approvals, saying at the terminal when one did not go.
fn warn_unforwarded(forward: crate::state::backend::Forward, run_id: String) -> Forward {
    Arc::new(move |wave: &str| {
        if let Err(e) = forward(wave) {
            eprintln!(
                "warning: the approval of wave {wave} did not reach the run's other controllers: {e}\n  hint: give it to them with `{}`",
                crate::hint::pony(format_args!("approve {run_id} {wave}"))
            );
        }
    })
}

/// What tells a run of the state database that its lease is gone: the heartbeat or the
/// journal finding it lost, and the controller's own count of it (None locally).
#[derive(Clone)]
struct Lease {
    lost: LeaseLost,
    clock: Option<Arc<LeaseClock>>,
}

/// Resolves once `clock`'s deadline passed with no renewal moving it on; never without
/// a clock. Waits on the run's own timer, never on the database.
async fn lease_deadline(clock: Option<Arc<LeaseClock>>) {
    let Some(clock) = clock else {
        return std::future::pending().await;
    };
    loop {
        match clock.deadline() {
            Some(deadline) if std::time::Instant::now() >= deadline => return,
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => tokio::time::sleep(clock.allowance()).await,
        }
    }
}

/// The next delivery of `stream`'s signal; never when it could not be caught.
async fn next_signal(stream: &mut Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Counts SIGINT/SIGTERM: the executor stops starting tasks at 1 and kills at 2. A lost
/// lease (state database), or one this controller could not renew before its own
/// deadline, goes straight to 2. The signals are counted here, on the run's runtime, and
/// nothing here waits on the database: a hung one cannot delay the stop.
///
/// Both signal streams are made here, before the run starts and once for its whole
/// life: a stream made afresh for each wait would miss a signal that came between two
/// waits (a second Ctrl-C pressed just after the first was taken was lost that way, and
/// the run went on draining a step that never ends).
fn watch_signals(lease: Lease) -> tokio::sync::watch::Receiver<u32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (sender, receiver) = tokio::sync::watch::channel(0u32);
    let streams = signal(SignalKind::interrupt()).and_then(|interrupt| {
        signal(SignalKind::terminate()).map(|terminate| (interrupt, terminate))
    });
    let (mut interrupt, mut term) = match streams {
        Ok((interrupt, terminate)) => (Some(interrupt), Some(terminate)),
        Err(error) => {
            eprintln!("warning: Ctrl-C and SIGTERM cannot be caught ({error}): they end pony at once, with no drain");
            (None, None)
        }
    };
    tokio::spawn(async move {
        let Lease { lost, clock } = lease;
        let allowance = clock.as_ref().map(|c| c.allowance()).unwrap_or_default();
        let deadline = lease_deadline(clock);
        tokio::pin!(deadline);
        let mut count = 0;
        let mut lease_held = true;
        loop {
            tokio::select! {
                _ = next_signal(&mut interrupt) => {}
                _ = next_signal(&mut term) => {}
                _ = lost.notified(), if lease_held => {
                    lease_held = false;
                    eprintln!("error: this controller lost the inventory's lease: its running commands are killed and no new task starts");
                    // As a second Ctrl-C: another controller may be taking the run over,
                    // so nothing of this one may go on running on the hosts.
                    count = count.max(1);
                }
                _ = &mut deadline, if lease_held => {
                    lease_held = false;
                    eprintln!(
                        "error: this controller lost the inventory's lease: no renewal went through for {} (the state database is down, hung or locked), so it stops before the lease expires: its running commands are killed and no new task starts",
                        humantime::format_duration(std::time::Duration::from_millis(allowance.as_millis() as u64))
                    );
                    count = count.max(1);
                }
            }
            count += 1;
            crate::notify::interrupted(count);
            if sender.send(count).is_err() {
                return;
            }
        }
    });
    receiver
}
