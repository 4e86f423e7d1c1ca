//! `pony watch`: someone hears about a dead controller. `--notify` runs inside the
//! controller, so a controller killed (kill -9, a lost machine) tells nobody; a watcher
//! run from cron, a CI schedule or a long-lived service reads the runs from the state
//! (local folder or PostgreSQL) and runs the notifiers of each run whose controller is
//! gone while hosts were in flight: once per dead controller (a marker in
//! `<state dir>/watch/` names the controller it told about).

use crate::events::Event;
use crate::exit::Exit;
use crate::notify::{Notifier, NotifyReporter};
use crate::report::Reporter;
use crate::settings::Settings;
use crate::state::runs::{RunDetail, RunState};
use crate::state::store::Store;
use std::path::PathBuf;
use std::time::Duration;

pub fn run(
    settings: &Settings,
    notify: &[String],
    notify_timeout: Duration,
    every: Option<Duration>,
) -> anyhow::Result<Exit> {
    // Reads only: a role with USAGE and SELECT on the schema may watch.
    let store = Store::open(
        &super::store_settings(settings),
        crate::state::backend::Access::Read,
    )?;
    let extra: Vec<Notifier> = notify
        .iter()
        .map(|command| Notifier {
            command: command.clone(),
            timeout: notify_timeout,
        })
        .collect();
    loop {
        pass(&store, &extra)?;
        match every {
            None => return Ok(Exit::Success),
            Some(every) => std::thread::sleep(every),
        }
    }
}

/// One look at every run.
fn pass(store: &Store, extra: &[Notifier]) -> anyhow::Result<()> {
    let ids = store.list().map_err(|e| {
        anyhow::anyhow!(
            "cannot read the runs under {}: {e}",
            store.place().display()
        )
    })?;
    for id in ids {
        let detail = store.read_summary(&id);
        let Some(gone) = Gone::of(&detail) else {
            continue;
        };
        let marker = store.local_dir().join("watch").join(format!("{id}.told"));
        if std::fs::read_to_string(&marker).is_ok_and(|told| told.trim() == gone.controller()) {
            continue;
        }
        let resume = crate::hint::pony(format!("resume {id}"));
        crate::outln!(
            "run {id}: its controller (pid {} on {}) is gone with {} host(s) in flight ({}): go on with `{resume}`",
            gone.pid,
            gone.machine,
            gone.hosts.len(),
            gone.hosts.join(", ")
        );
        let mut notifiers = run_notifiers(store, &id, &detail.summary.path);
        notifiers.extend(extra.iter().cloned());
        if notifiers.is_empty() {
            crate::outln!("  (no notifier to tell: the run's playbook has no `notify:` and no --notify was given)");
        }
        let event = Event::ControllerGone {
            run_id: id.clone(),
            machine: gone.machine.clone(),
            pid: gone.pid,
            hosts_in_flight: gone.hosts.clone(),
            resume,
        };
        let mut reporter =
            NotifyReporter::new(notifiers, detail.summary.path.join("notify.log"), &id);
        reporter.event(&event);
        reporter.finish();
        if let Some(parent) = marker.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&marker, format!("{}\n", gone.controller()))?;
    }
    Ok(())
}

/// A run whose controller is gone while hosts were in flight.
struct Gone {
    machine: String,
    pid: u32,
    hosts: Vec<String>,
}

impl Gone {
    fn of(detail: &RunDetail) -> Option<Gone> {
        if detail.summary.state != RunState::Stopped {
            return None;
        }
        let mut hosts: Vec<String> = detail
            .tasks
            .iter()
            .filter(|t| t.state == crate::state::runs::TaskStatus::Running)
            .filter_map(|t| t.label.split_once('@').map(|(_, host)| host.to_string()))
            .collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return None;
        }
        Some(Gone {
            machine: detail.summary.host.clone().unwrap_or_default(),
            pid: detail.summary.pid.unwrap_or_default(),
            hosts,
        })
    }

    /// Which controller died: a resumed run that dies again is news again.
    fn controller(&self) -> String {
        format!("{}:{}", self.machine, self.pid)
    }
}

/// The `notify:` of the run's own playbook (its snapshot), when it can be read.
fn run_notifiers(store: &Store, id: &str, folder: &std::path::Path) -> Vec<Notifier> {
    // From a database, reopening copies the run's snapshot into the local folder.
    if let Err(e) = store.open_run(id) {
        tracing::warn!("cannot copy the snapshot of run {id}: {e}");
    }
    let playbook: PathBuf = folder.join(crate::state::snapshot::PLAYBOOK_FILE);
    match crate::playbook::load(&playbook) {
        Ok(playbook) => playbook.notify,
        Err(_) => {
            tracing::warn!(
                "cannot read the notifiers of run {id} from {}",
                playbook.display()
            );
            Vec::new()
        }
    }
}
