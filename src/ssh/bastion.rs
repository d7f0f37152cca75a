//! The connections to one bastion: a small pool, each connection carrying many tunnels, and
//! the leases that keep a connection open while a session tunnelled through it lives.
//!
//! All channels of one russh connection share one task (one core for its crypto), so a couple
//! of connections carry a fleet faster than one; more would only cost the bastion handshakes.

use std::sync::{Arc, Mutex};

use russh::client::Handle;
use tokio::sync::Semaphore;

use super::SshError;
use super::connector::{Connector, Endpoint};
use super::host_keys::Client;
use super::options::ConnectOptions;

/// A few SSH connections to one bastion, each carrying many tunnels.
pub(super) struct BastionPool {
    endpoint: Endpoint,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Handle<Client>>>>>,
    /// Sessions currently using each slot.
    loads: Arc<Mutex<Vec<usize>>>,
    /// Handshakes under way through this bastion (its own, and those tunnelled through it).
    pub(super) handshakes: Semaphore,
}

/// A session's claim on one bastion connection: keeps it open, counts towards its load.
pub(crate) struct BastionLease {
    pub(super) handle: Arc<Handle<Client>>,
    _claim: LoadClaim,
}

/// One unit of load on a pool slot, released on drop (also when connecting fails).
struct LoadClaim {
    loads: Arc<Mutex<Vec<usize>>>,
    slot: usize,
}

impl LoadClaim {
    /// Claim the least loaded slot.
    fn least_loaded(loads: &Arc<Mutex<Vec<usize>>>) -> Self {
        let mut counts = loads.lock().unwrap_or_else(|e| e.into_inner());
        let (slot, _) = counts
            .iter()
            .enumerate()
            .min_by_key(|(_, load)| **load)
            .expect("a pool has slots");
        counts[slot] += 1;
        LoadClaim {
            loads: loads.clone(),
            slot,
        }
    }
}

impl Drop for LoadClaim {
    fn drop(&mut self) {
        let mut counts = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        counts[self.slot] -= 1;
    }
}

impl BastionPool {
    pub(super) fn new(endpoint: Endpoint, options: &ConnectOptions) -> Self {
        let size = options.bastion_connections.max(1);
        BastionPool {
            endpoint,
            slots: (0..size).map(|_| tokio::sync::Mutex::new(None)).collect(),
            loads: Arc::new(Mutex::new(vec![0; size])),
            handshakes: Semaphore::new(options.handshakes_per_bastion.max(1)),
        }
    }

    /// The least loaded connection, opened (or reopened after a loss) on demand.
    pub(super) async fn lease(&self, connector: &Connector) -> Result<BastionLease, SshError> {
        let claim = LoadClaim::least_loaded(&self.loads);
        let mut connection = self.slots[claim.slot].lock().await;
        let reusable = connection.as_ref().filter(|h| !h.is_closed()).cloned();
        let handle = match reusable {
            Some(handle) => handle,
            None => {
                let handle = Arc::new(self.connect(connector).await?);
                *connection = Some(handle.clone());
                handle
            }
        };
        Ok(BastionLease {
            handle,
            _claim: claim,
        })
    }

    async fn connect(&self, connector: &Connector) -> Result<Handle<Client>, SshError> {
        let _permit = self
            .handshakes
            .acquire()
            .await
            .expect("the handshake semaphore is never closed");
        connector
            .connect_direct(&self.endpoint.check.host, &self.endpoint)
            .await
    }
}
