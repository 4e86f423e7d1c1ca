//! The host pool: one connection per host, opened lazily on the host's first task with
//! retries and backoff, shared by all its tasks (at most `sessions_per_host` at once),
//! and dropped (closing the SSH master) when the scheduler says the host is done. At most
//! `handshakes` connections are being opened at once through one jump host, or to one
//! sshd directly, so that the MaxStartups of the sshd that sees them never drops us.

use crate::inventory::{ConnectionKind, HostId};
use crate::plan::Plan;
use crate::transport::local::LocalConnection;
use crate::transport::ssh::{SshConnection, SshOptions};
use crate::transport::{Connection, TransportError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// How often and how patiently a connection is retried.
const CONNECT_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

struct Slot {
    connection: Mutex<Option<Arc<dyn Connection>>>,
    sessions: Arc<Semaphore>,
}

pub struct HostPool {
    plan: Arc<Plan>,
    slots: Vec<Slot>,
    /// One gate per sshd that sees the handshakes: the jump host, or the destination.
    handshakes: HashMap<String, Arc<Semaphore>>,
    handshake_limit: usize,
    ssh: SshOptions,
    local_root: PathBuf,
}

impl HostPool {
    pub fn new(plan: Arc<Plan>, ssh: SshOptions, local_root: PathBuf) -> Self {
        let strategy = &plan.playbook.strategy;
        let slots = (0..plan.inventory.hosts.len())
            .map(|_| Slot {
                connection: Mutex::new(None),
                sessions: Arc::new(Semaphore::new(strategy.sessions_per_host)),
            })
            .collect();
        HostPool {
            handshake_limit: strategy.handshakes,
            plan,
            slots,
            handshakes: HashMap::new(),
            ssh,
            local_root,
        }
    }

    /// Which sshd sees a host's handshake: its first jump host, else the host itself.
    fn handshake_key(&self, host: HostId) -> String {
        let spec = &self.plan.inventory.hosts[host];
        match &spec.ssh.jump {
            Some(jump) => format!("jump {}", jump.split(',').next().unwrap_or_default().trim()),
            None => format!(
                "direct {}:{}",
                spec.destination(),
                spec.ssh.port.unwrap_or(22)
            ),
        }
    }

    fn handshake_gate(&mut self, host: HostId) -> Arc<Semaphore> {
        let key = self.handshake_key(host);
        let limit = self.handshake_limit;
        self.handshakes
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone()
    }

    /// Precomputes the handshake semaphores; call before sharing the pool.
    pub fn prepare(mut self) -> Arc<Self> {
        for host in 0..self.plan.inventory.hosts.len() {
            self.handshake_gate(host);
        }
        Arc::new(self)
    }

    /// The host's connection, opening it if needed (retrying connection failures).
    pub async fn connection(&self, host: HostId) -> Result<Arc<dyn Connection>, TransportError> {
        let mut slot = self.slots[host].connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let spec = &self.plan.inventory.hosts[host];
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let opened: Result<Arc<dyn Connection>, TransportError> = match spec.connection {
                ConnectionKind::Local => LocalConnection::open(self.local_root.join(&spec.name))
                    .map(|c| Arc::new(c) as Arc<dyn Connection>),
                ConnectionKind::Ssh => {
                    let gate = self
                        .handshakes
                        .get(&self.handshake_key(host))
                        .cloned()
                        .expect("prepared");
                    let _permit = gate.acquire_owned().await.expect("never closed");
                    SshConnection::open(spec, &self.ssh)
                        .await
                        .map(|c| Arc::new(c) as Arc<dyn Connection>)
                }
            };
            match opened {
                Ok(connection) => {
                    *slot = Some(connection.clone());
                    return Ok(connection);
                }
                Err(e) if attempt < CONNECT_ATTEMPTS && retryable(&e) => {
                    tracing::info!(host = %spec.name, attempt, "connect failed, retrying in {:?}: {e}", backoff);
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
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

    /// Closes the host's connection; in-flight users keep theirs until they finish.
    pub fn close(&self, host: HostId) {
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

/// Host-key and authentication failures need a person; everything else may be transient.
fn retryable(error: &TransportError) -> bool {
    let text = error.to_string();
    error.is_connection_failure()
        && !text.contains("Host key verification failed")
        && !text.contains("Permission denied")
        && !text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
}
