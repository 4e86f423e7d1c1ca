//! One watcher per followed run: it notices when the run's journal grows (the local
//! journal file's length, or the database's last `seq`), folds the journal again and
//! renders the run page's `<main>` once for everyone following the run, read-only and
//! with buttons. Page requests and event streams subscribe to it; it stops when nobody
//! follows the run any more. Rendering once per change (not once per viewer) keeps a
//! page of a 1,000-host run cheap to follow for many people.

use super::auth::Access;
use super::html::{self, Buttons};
use super::view::HostsView;
use crate::commands::status::Report;
use crate::plan::Plan;
use crate::state::runs;
use crate::state::store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A run's page content as of one journal length.
#[derive(Debug)]
pub struct Rendered {
    pub title: String,
    /// `<main>` for a viewer without the token.
    pub plain: String,
    /// `<main>` with the gate buttons, for a viewer with the token (None when the
    /// server is read-only).
    pub buttons: Option<String>,
}

impl Rendered {
    pub fn main_for(&self, allowed: bool) -> &str {
        match (&self.buttons, allowed) {
            (Some(buttons), true) => buttons,
            _ => &self.plain,
        }
    }
}

type Slot = watch::Sender<Option<Arc<Rendered>>>;
pub type Follower = watch::Receiver<Option<Arc<Rendered>>>;

/// The watchers of the runs being followed.
#[derive(Debug)]
pub struct Hub {
    store: Store,
    /// The local state folder, where kept simulations are (`pony simulate --save`).
    state_dir: PathBuf,
    access: Access,
    runs: Mutex<HashMap<String, Slot>>,
    /// How often a watcher looks at its journal's length.
    every: Duration,
}

/// How long a run page stays unrendered at most while its journal does not grow (a
/// controller that died changes the run's state without a journal record).
const REFRESH: Duration = Duration::from_secs(5);

impl Hub {
    pub fn new(store: Store, state_dir: PathBuf, access: Access, every: Duration) -> Hub {
        Hub {
            store,
            state_dir,
            access,
            runs: Mutex::new(HashMap::new()),
            every,
        }
    }

    /// Follows run `id` (an exact id): the receiver holds its first rendering when this
    /// returns.
    pub async fn follow(self: &Arc<Self>, id: &str) -> anyhow::Result<Follower> {
        let mut follower = {
            let mut runs = self.runs.lock().expect("hub lock");
            match runs.get(id) {
                Some(slot) => slot.subscribe(),
                None => {
                    let (slot, follower) = watch::channel(None);
                    runs.insert(id.to_string(), slot.clone());
                    tokio::spawn(self.clone().watch(id.to_string(), slot));
                    follower
                }
            }
        };
        follower.wait_for(|r| r.is_some()).await?;
        Ok(follower)
    }

    /// Renders the run whenever its journal grows, until nobody follows it.
    async fn watch(self: Arc<Self>, id: String, slot: Slot) {
        let mut plan: Option<Result<Arc<Plan>, String>> = None;
        let mut path: Option<PathBuf> = None;
        let mut seen: Option<(i64, u64)> = None;
        let mut rendered_at = Instant::now();
        loop {
            let store = self.store.clone();
            let (run, known) = (id.clone(), path.clone());
            let version = tokio::task::spawn_blocking(move || version(&store, &run, known))
                .await
                .ok();
            if seen.is_none() || version != seen || rendered_at.elapsed() >= REFRESH {
                let store = self.store.clone();
                let access = self.access.clone();
                let state_dir = self.state_dir.clone();
                let run = id.clone();
                let mut cached = plan.take();
                let done = tokio::task::spawn_blocking(move || {
                    let (rendered, path) = render(&store, &state_dir, &run, &mut cached, &access);
                    (rendered, path, cached)
                })
                .await;
                match done {
                    Ok((rendered, run_path, cached)) => {
                        slot.send_replace(Some(Arc::new(rendered)));
                        path = Some(run_path);
                        plan = cached;
                    }
                    Err(error) => tracing::warn!("rendering run {id}: {error}"),
                }
                seen = version;
                rendered_at = Instant::now();
            }
            {
                let mut runs = self.runs.lock().expect("hub lock");
                if slot.receiver_count() == 0 {
                    runs.remove(&id);
                    return;
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }
}

/// What changes when the journal grows: the database's last `seq` (0 for a folder) and
/// the local journal file's length.
fn version(store: &Store, id: &str, path: Option<PathBuf>) -> (i64, u64) {
    let seq = store.last_seq(id).unwrap_or(-1);
    let len = path.map(|p| journal_len(&p)).unwrap_or_default();
    (seq, len)
}

fn journal_len(run_path: &Path) -> u64 {
    std::fs::metadata(run_path.join("journal.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The run's page content now; the plan is rebuilt from the snapshot only the first
/// time (it does not change during a run).
fn render(
    store: &Store,
    state_dir: &Path,
    id: &str,
    plan: &mut Option<Result<Arc<Plan>, String>>,
    access: &Access,
) -> (Rendered, PathBuf) {
    // The snapshot (copied from a database the first time) is needed only to rebuild
    // the plan.
    let detail = if plan.is_none() {
        store.read(id)
    } else {
        store.read_summary(id)
    };
    let plan = plan.get_or_insert_with(|| {
        runs::snapshot_plan(&detail.summary.path)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    });
    let plan_ref = plan.as_ref().map(|p| &**p).map_err(String::as_str);
    let report = Report::new(&detail, plan_ref);
    let hosts = plan_ref.ok().map(|p| HostsView::of(&detail, p));
    let plan_error = plan_ref.err();
    let timelines = plan_ref
        .ok()
        .map(|plan| timelines(state_dir, &detail, plan))
        .unwrap_or_default();
    let plain = html::run_main(&report, hosts.as_ref(), plan_error, None) + &timelines;
    let buttons = access.csrf().map(|csrf| {
        html::run_main(
            &report,
            hosts.as_ref(),
            plan_error,
            Some(Buttons { csrf: &csrf }),
        ) + &timelines
    });
    let rendered = Rendered {
        title: format!("pony run {id}"),
        plain,
        buttons,
    };
    (rendered, detail.summary.path.clone())
}

/// The real timeline drawn from the journal, and the kept simulation of the run's files
/// beside it when there is one (`pony simulate --save`).
fn timelines(state_dir: &Path, detail: &runs::RunDetail, plan: &Plan) -> String {
    let real = runs::timing::Timing::read(&detail.summary.path).map(|timing| {
        let sim = crate::sim::journal::timeline(plan, &timing);
        let running = detail.summary.state == runs::RunState::Running;
        crate::sim::svg::render_run(&sim, &detail.summary.run_id, running)
    });
    let simulated = crate::sim::saved::for_run(state_dir, &detail.summary.path).is_some();
    html::timelines(&detail.summary.run_id, real.as_deref(), simulated)
}
