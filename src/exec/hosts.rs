//! The host pool: one connection per host, opened lazily on the host's first task (by the
//! shared [`Connector`]: handshake gates per sshd, the host's connect timeout and retries
//! with backoff), shared by all its tasks (at most `sessions_per_host` at once), and
//! dropped (closing the SSH master) when the scheduler says the host is done. It also
//! keeps the turns of delegate hosts: tasks run on a delegate on another host's behalf
//! take one of its `delegate_parallel` turns for as long as they run. Closing a host
//! tells its dead man's switches ([`super::dead_man`]) that its tasks ended.

use super::dead_man::{DeadMen, SwitchHosts};
use crate::inventory::HostId;
use crate::plan::Plan;
use crate::transport::connect::Connector;
use crate::transport::ssh::SshOptions;
use crate::transport::{BoxFuture, Connection, TransportError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

struct Slot {
    connection: Mutex<Option<Arc<dyn Connection>>>,
    sessions: Arc<Semaphore>,
}

pub struct HostPool {
    plan: Arc<Plan>,
    slots: Vec<Slot>,
    connector: Connector,
    /// Per delegate host, its turns (`delegate_parallel` permits).
    delegate_turns: std::collections::BTreeMap<HostId, Arc<Semaphore>>,
    dead_men: DeadMen,
}

impl HostPool {
    pub fn new(plan: Arc<Plan>, ssh: SshOptions, local_root: PathBuf) -> Self {
        let strategy = &plan.playbook.strategy;
        let connector = Connector::new(ssh, local_root, &plan.inventory.hosts, strategy.handshakes);
        HostPool::with_connector(plan, connector)
    }

    /// A pool whose connections `connector` opens (a simulation's opens none).
    pub fn with_connector(plan: Arc<Plan>, connector: Connector) -> Self {
        let strategy = &plan.playbook.strategy;
        let slots = (0..plan.inventory.hosts.len())
            .map(|_| Slot {
                connection: Mutex::new(None),
                sessions: Arc::new(Semaphore::new(strategy.sessions_per_host)),
            })
            .collect();
        let delegate_turns = crate::plan::delegate_parallelism(&plan)
            .into_iter()
            .map(|(host, turns)| (host, Arc::new(Semaphore::new(turns))))
            .collect();
        HostPool {
            plan,
            slots,
            connector,
            delegate_turns,
            dead_men: Default::default(),
        }
    }

    /// Ready to share.
    pub fn prepare(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// The host's connection, opening it if needed (retrying connection failures; the
    /// error then says how many attempts were made).
    pub async fn connection(&self, host: HostId) -> Result<Arc<dyn Connection>, TransportError> {
        let mut slot = self.slots[host].connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self
            .connector
            .open(&self.plan.inventory.hosts[host])
            .await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The host's connection if one is open (never opens one).
    pub async fn open_connection(&self, host: HostId) -> Option<Arc<dyn Connection>> {
        self.slots[host].connection.lock().await.clone()
    }

    /// A connection of its own (not shared, not kept), e.g. to disarm a host's dead
    /// man's switch after the host's shared connection was closed.
    pub async fn fresh_connection(
        &self,
        host: HostId,
    ) -> Result<Arc<dyn Connection>, TransportError> {
        self.connector.open(&self.plan.inventory.hosts[host]).await
    }

    /// The dead man's switches armed on hosts of this run.
    pub fn dead_men(&self) -> &DeadMen {
        &self.dead_men
    }

    /// Forgets a broken connection so that the next use reconnects.
    pub async fn reset(&self, host: HostId) {
        self.slots[host].connection.lock().await.take();
    }

    /// A channel slot on the host's connection (at most `sessions_per_host`).
    pub async fn session(&self, host: HostId) -> OwnedSemaphorePermit {
        self.slots[host]
            .sessions
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    /// Whether the host's connection runs a chain of tasks in one round trip.
    pub fn runs_chains(&self, host: HostId) -> bool {
        self.connector.runs_chains(&self.plan.inventory.hosts[host])
    }

    pub fn host_name(&self, host: HostId) -> &str {
        &self.plan.inventory.hosts[host].name
    }

    /// A turn on a delegate host, held while a delegated task runs there. Waiting for it
    /// is inside the task (its host keeps its slot meanwhile), so the scheduler needs no
    /// notion of delegates.
    pub async fn delegate_turn(&self, delegate: HostId) -> Option<OwnedSemaphorePermit> {
        let turns = self.delegate_turns.get(&delegate)?.clone();
        Some(turns.acquire_owned().await.expect("never closed"))
    }

    /// Closes the host's connection (in-flight users keep theirs until they finish): its
    /// tasks ended, so its dead man's switches are disarmed (through that connection).
    pub fn close(&self, host: HostId) {
        let connection = match self.slots[host].connection.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        self.dead_men.host_ended(host, connection);
    }

    /// Closes the connection of a host a stopping run leaves part-way: its dead man's
    /// switches stay armed, as no controller watches the host any more.
    pub fn close_in_flight(&self, host: HostId) {
        if let Ok(mut slot) = self.slots[host].connection.try_lock() {
            slot.take();
        }
    }

    /// Whether a connection is open now.
    pub fn is_open(&self, host: HostId) -> bool {
        self.slots[host]
            .connection
            .try_lock()
            .map(|s| s.is_some())
            .unwrap_or(true)
    }
}

impl SwitchHosts for HostPool {
    fn dead_men(&self) -> &DeadMen {
        &self.dead_men
    }

    fn connection(
        &self,
        host: HostId,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(HostPool::connection(self, host))
    }

    fn fresh_connection(
        &self,
        host: HostId,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(HostPool::fresh_connection(self, host))
    }

    fn host_name(&self, host: HostId) -> &str {
        HostPool::host_name(self, host)
    }
}
