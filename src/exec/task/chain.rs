//! A host's chain of tasks run in one round trip: the tasks' commands go to the host's
//! shell as one script ([`crate::transport::chain`]), and each task's result is handed
//! back the moment its frame arrives, so that the scheduler journals it before the next
//! frame. Where the connection runs no chains, or broke in the middle of one, the tasks
//! left run one by one as tasks alone do (reconnects included), still stopping at the
//! first failure.

use super::{execute, RenderedAction, TaskRun, TaskSpec, Work, WORK};
use crate::exec::hosts::HostPool;
use crate::inventory::HostId;
use crate::plan::RunsOn;
use crate::transport::chain::ChainLink;
use crate::transport::{TaskMark, MARK};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a task of a chain did not start on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// A task before it in the chain failed.
    AfterFailure,
    /// The run stopped (a halt, a stopped region, an interrupt): its chain was cut.
    Stopped,
}

/// One task of a chain, rendered, with where its result goes.
pub struct Link {
    pub spec: TaskSpec,
    pub mark: TaskMark,
    pub work: Work,
    pub done: oneshot::Sender<TaskRun>,
}

/// The chain's cut: the name of its cut file on the host, and the flag the scheduler
/// sets when it wrote it (read by the one-by-one fallback).
#[derive(Clone)]
pub struct Cut {
    pub name: String,
    pub stopped: Arc<AtomicBool>,
}

impl TaskRun {
    /// A task of a chain that did not start on its host.
    pub fn not_run(why: NotRun) -> Self {
        TaskRun {
            changed: false,
            not_run: Some(why),
            ..TaskRun::new()
        }
    }
}

/// Runs `links` on `host` in order, stopping at the first failure; each link's result
/// goes to its `done` as soon as it is known, the links that did not start get
/// [`TaskRun::not_run`].
pub async fn execute_chain(pool: &HostPool, host: HostId, links: Vec<Link>, cut: Cut) {
    let mut links: VecDeque<Link> = links.into();
    let connection = match pool.connection(host).await {
        Ok(connection) => connection,
        Err(_) => return one_by_one(pool, host, links, &cut).await,
    };
    let session = pool.session(host).await;
    if cut.stopped.load(Ordering::SeqCst) {
        return not_run(links, NotRun::Stopped);
    }
    let chain: Vec<ChainLink> = links
        .iter()
        .map(|link| ChainLink {
            command: command_of(&link.spec).to_string(),
            timeout: link.spec.timeout,
            mark: link.mark.clone(),
        })
        .collect();
    let (frames, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let Some(running) = connection.run_chain(&chain, &cut.name, frames) else {
        drop(session);
        return one_by_one(pool, host, links, &cut).await;
    };
    let mut failed = false;
    let deliver = async {
        let mut since = Instant::now();
        while let Some((i, output)) = arrived.recv().await {
            let Some(link) = links.pop_front() else { break };
            debug_assert_eq!(i, chain.len() - links.len() - 1);
            let mut run = TaskRun::new();
            run.reached = true;
            run.attempts = 1;
            run.commands.push(chain[i].command.clone());
            run = match output {
                Ok(output) => run.with_output(output),
                Err(e) => run.failed(&e),
            };
            if run.ok {
                if let Some(name) = &link.spec.capture {
                    let value = String::from_utf8_lossy(&run.stdout).trim().to_string();
                    run.captured = Some((name.clone(), value));
                }
            }
            // Measured on the controller as a task alone is: from the previous frame.
            let now = Instant::now();
            run.duration = now - since;
            since = now;
            failed |= !run.ok;
            let _ = link.done.send(run);
        }
    };
    let (ended, ()) = tokio::join!(running, deliver);
    drop(session);
    match ended {
        Err(e) if e.is_connection_failure() && !failed => {
            tracing::info!("connection lost in the middle of a chain, going on task by task: {e}");
            one_by_one(pool, host, links, &cut).await
        }
        Err(e) if !failed => {
            if let Some(link) = links.pop_front() {
                let mut run = TaskRun::new();
                run.reached = true;
                run.attempts = 1;
                let _ = link.done.send(run.failed(&e));
            }
            not_run(links, NotRun::AfterFailure)
        }
        _ if failed => not_run(links, NotRun::AfterFailure),
        _ => not_run(links, NotRun::Stopped),
    }
}

fn command_of(spec: &TaskSpec) -> &str {
    match &spec.action {
        RenderedAction::Run(command) => command,
        // A chain holds `run` steps only (the scheduler's rule).
        _ => unreachable!("only `run` tasks are chained"),
    }
}

/// The links that will not start.
fn not_run(links: VecDeque<Link>, why: NotRun) {
    for link in links {
        let _ = link.done.send(TaskRun::not_run(why));
    }
}

/// The links run one at a time, each as a task alone (its own mark and work scope).
async fn one_by_one(pool: &HostPool, host: HostId, mut links: VecDeque<Link>, cut: &Cut) {
    while let Some(link) = links.pop_front() {
        if cut.stopped.load(Ordering::SeqCst) {
            let _ = link.done.send(TaskRun::not_run(NotRun::Stopped));
            return not_run(links, NotRun::Stopped);
        }
        let run = MARK
            .scope(
                link.mark,
                WORK.scope(link.work, execute(pool, RunsOn::Host(host), &link.spec)),
            )
            .await;
        let ok = run.ok;
        let _ = link.done.send(run);
        if !ok {
            return not_run(links, NotRun::AfterFailure);
        }
    }
}
