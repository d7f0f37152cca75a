//! Opening authenticated SSH sessions, directly or tunnelled through a pooled bastion connection.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client::{self, Handle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::inventory::connection::{HostConnection, JumpHost, StrictHostKeyChecking};

use super::auth::{self, KeyStore};
use super::host_keys::{Client, ClientError, HostKeyCheck};
use super::options::{ConnectOptions, current_user};
use super::session::Session;
use super::{SshError, Step};

/// Opens sessions to hosts. Cheap to clone; every clone shares the bastion connections,
/// the handshake limits and the decrypted keys.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    options: ConnectOptions,
    keys: KeyStore,
    bastions: Mutex<HashMap<(String, u16, String), Arc<BastionPool>>>,
}

/// One host to log in to: its address, credentials and host-key rule.
#[derive(Debug, Clone)]
struct Endpoint {
    check: HostKeyCheck,
    user: String,
    private_key: Option<PathBuf>,
}

impl Endpoint {
    /// `address:port`, IPv6 in brackets, as `TcpStream::connect` and messages want it.
    fn target(&self) -> String {
        if self.check.address.contains(':') {
            format!("[{}]:{}", self.check.address, self.check.port)
        } else {
            format!("{}:{}", self.check.address, self.check.port)
        }
    }
}

impl Connector {
    pub fn new(options: ConnectOptions) -> Self {
        Connector {
            inner: Arc::new(Inner {
                options,
                keys: KeyStore::default(),
                bastions: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// The jump host `host` goes through: `--bastion`, else the inventory's, else none.
    /// A `--bastion` names no key or known_hosts file, so it uses the target's.
    pub fn jump_for(&self, host: &HostConnection) -> Option<JumpHost> {
        match &self.inner.options.bastion {
            Some(bastion) => Some(JumpHost {
                private_key: bastion
                    .private_key
                    .clone()
                    .or_else(|| host.private_key.clone()),
                known_hosts: bastion
                    .known_hosts
                    .clone()
                    .or_else(|| host.known_hosts.clone()),
                ..bastion.clone()
            }),
            None => host.jump.clone(),
        }
    }

    /// The user `connect` logs in to `host` as: `--user`, else ansible_user, else the local user.
    pub fn login_user(&self, host: &HostConnection) -> String {
        self.target_endpoint(host).user
    }

    /// An authenticated session to `host`, through its bastion when it has one.
    pub async fn connect(&self, host: &HostConnection) -> Result<Session, SshError> {
        let endpoint = self.target_endpoint(host);
        match self.jump_for(host) {
            None => {
                let handle = self.connect_direct(&host.name, &endpoint).await?;
                Ok(Session::new(
                    host.name.clone(),
                    handle,
                    None,
                    self.inner.options.connect_timeout,
                ))
            }
            Some(jump) => {
                let pool = self.bastion_pool(&jump);
                let through_bastion = |source| SshError::Bastion {
                    host: host.name.clone(),
                    bastion: jump.name.clone(),
                    source: Box::new(source),
                };
                let lease = pool.lease(self).await.map_err(through_bastion)?;
                let handle = self
                    .connect_tunnelled(&host.name, &endpoint, &lease, &pool.handshakes)
                    .await?;
                Ok(Session::new(
                    host.name.clone(),
                    handle,
                    Some(lease),
                    self.inner.options.connect_timeout,
                ))
            }
        }
    }

    /// Connect (or reuse the connection) to the bastion of `host`, to report its reachability.
    pub async fn check_bastion(&self, jump: &JumpHost) -> Result<(), SshError> {
        self.bastion_pool(jump).lease(self).await.map(drop)
    }

    fn target_endpoint(&self, host: &HostConnection) -> Endpoint {
        let options = &self.inner.options;
        self.endpoint(
            &host.name,
            &host.address,
            host.port,
            options.user.clone().or_else(|| host.user.clone()),
            options
                .private_key
                .clone()
                .or_else(|| host.private_key.clone()),
            host.known_hosts.clone(),
            host.strict_host_key_checking,
        )
    }

    fn bastion_endpoint(&self, jump: &JumpHost) -> Endpoint {
        let options = &self.inner.options;
        self.endpoint(
            &jump.name,
            &jump.address,
            jump.port,
            jump.user.clone().or_else(|| options.user.clone()),
            options
                .private_key
                .clone()
                .or_else(|| jump.private_key.clone()),
            jump.known_hosts.clone(),
            jump.strict_host_key_checking,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        &self,
        name: &str,
        address: &str,
        port: u16,
        user: Option<String>,
        private_key: Option<PathBuf>,
        known_hosts: Option<PathBuf>,
        strict: Option<StrictHostKeyChecking>,
    ) -> Endpoint {
        let options = &self.inner.options;
        Endpoint {
            check: HostKeyCheck {
                host: name.to_string(),
                address: address.to_string(),
                port,
                known_hosts: options
                    .known_hosts
                    .clone()
                    .or(known_hosts)
                    .unwrap_or_else(super::known_hosts::default_path),
                unknown: options.unknown_host_policy(name, strict),
            },
            user: user.unwrap_or_else(current_user),
            private_key,
        }
    }

    fn bastion_pool(&self, jump: &JumpHost) -> Arc<BastionPool> {
        let endpoint = self.bastion_endpoint(jump);
        let key = (
            endpoint.check.address.clone(),
            endpoint.check.port,
            endpoint.user.clone(),
        );
        let mut bastions = self
            .inner
            .bastions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        bastions
            .entry(key)
            .or_insert_with(|| Arc::new(BastionPool::new(endpoint, &self.inner.options)))
            .clone()
    }

    async fn connect_direct(
        &self,
        host: &str,
        endpoint: &Endpoint,
    ) -> Result<Handle<Client>, SshError> {
        let address = endpoint.target();
        let stream = self
            .timed(
                host,
                &address,
                Step::TcpConnect,
                tokio::net::TcpStream::connect(address.as_str()),
            )
            .await?
            .map_err(|source| SshError::Connect {
                host: host.to_string(),
                address: address.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        self.handshake_and_auth(host, endpoint, stream).await
    }

    async fn connect_tunnelled(
        &self,
        host: &str,
        endpoint: &Endpoint,
        bastion: &BastionLease,
        handshakes: &Semaphore,
    ) -> Result<Handle<Client>, SshError> {
        let address = endpoint.target();
        let _permit = handshakes
            .acquire()
            .await
            .expect("the handshake semaphore is never closed");
        let opened = self
            .timed(
                host,
                &address,
                Step::ChannelOpen,
                bastion.handle.channel_open_direct_tcpip(
                    endpoint.check.address.as_str(),
                    u32::from(endpoint.check.port),
                    "127.0.0.1",
                    0,
                ),
            )
            .await?;
        let channel = opened.map_err(|e| match e {
            russh::Error::ChannelOpenFailure(reason) => SshError::Tunnel {
                host: host.to_string(),
                target: address.clone(),
                reason: tunnel_refusal(&reason),
                transient: reason != russh::ChannelOpenFailure::AdministrativelyProhibited,
            },
            source => SshError::Protocol {
                host: host.to_string(),
                step: Step::ChannelOpen,
                source: source.into(),
            },
        })?;
        self.handshake_and_auth(host, endpoint, channel.into_stream())
            .await
    }

    /// SSH handshake (with host key verification) then authentication, each under the timeout.
    async fn handshake_and_auth<S>(
        &self,
        host: &str,
        endpoint: &Endpoint,
        stream: S,
    ) -> Result<Handle<Client>, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let address = endpoint.target();
        let config = Arc::new(self.client_config(endpoint.check.preferred_algorithms()));
        let handler = Client {
            check: endpoint.check.clone(),
        };
        let mut handle = self
            .timed(
                host,
                &address,
                Step::Handshake,
                client::connect_stream(config, stream, handler),
            )
            .await?
            .map_err(|e| match e {
                ClientError::HostKey(refusal) => refusal,
                ClientError::Russh(source) => SshError::Protocol {
                    host: host.to_string(),
                    step: Step::Handshake,
                    source: source.into(),
                },
            })?;
        let options = &self.inner.options;
        let key_files = self
            .inner
            .keys
            .key_files(
                endpoint.private_key.as_deref(),
                options.default_key_dir.as_deref(),
            )
            .await;
        self.timed(
            host,
            &address,
            Step::Authentication,
            auth::authenticate(
                &mut handle,
                host,
                &endpoint.user,
                &key_files,
                options.agent_socket.as_deref(),
            ),
        )
        .await??;
        Ok(handle)
    }

    /// The configured cipher names that russh supports, in order (others are skipped).
    fn ciphers(&self) -> std::borrow::Cow<'static, [russh::cipher::Name]> {
        let chosen: Vec<russh::cipher::Name> = (self.inner.options.ciphers.iter())
            .filter_map(|wanted| russh::cipher::Name::try_from(wanted.as_str()).ok())
            .collect();
        if chosen.is_empty() {
            russh::Preferred::DEFAULT.cipher
        } else {
            chosen.into()
        }
    }

    fn client_config(&self, preferred_keys: Vec<russh::keys::Algorithm>) -> client::Config {
        let keepalive = self.inner.options.keepalive_interval;
        client::Config {
            preferred: russh::Preferred {
                key: preferred_keys.into(),
                cipher: self.ciphers(),
                ..russh::Preferred::DEFAULT
            },
            keepalive_interval: Some(keepalive),
            keepalive_max: 3,
            // Never reached while keepalives are answered; ends a connection whose peer vanished.
            inactivity_timeout: Some(keepalive * 5),
            nodelay: true,
            ..client::Config::default()
        }
    }

    async fn timed<T>(
        &self,
        host: &str,
        address: &str,
        step: Step,
        future: impl Future<Output = T>,
    ) -> Result<T, SshError> {
        let after = self.inner.options.connect_timeout;
        tokio::time::timeout(after, future)
            .await
            .map_err(|_| SshError::Timeout {
                host: host.to_string(),
                address: address.to_string(),
                step,
                after,
            })
    }
}

/// A few SSH connections to one bastion, each carrying many tunnels.
struct BastionPool {
    endpoint: Endpoint,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Handle<Client>>>>>,
    /// Sessions currently using each slot.
    loads: Arc<Mutex<Vec<usize>>>,
    handshakes: Semaphore,
}

/// A session's claim on one bastion connection: keeps it open, counts towards its load.
pub(crate) struct BastionLease {
    handle: Arc<Handle<Client>>,
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
    fn new(endpoint: Endpoint, options: &ConnectOptions) -> Self {
        let size = options.bastion_connections.max(1);
        BastionPool {
            endpoint,
            slots: (0..size).map(|_| tokio::sync::Mutex::new(None)).collect(),
            loads: Arc::new(Mutex::new(vec![0; size])),
            handshakes: Semaphore::new(options.handshakes_per_bastion.max(1)),
        }
    }

    /// The least loaded connection, opened (or reopened after a loss) on demand.
    async fn lease(&self, connector: &Connector) -> Result<BastionLease, SshError> {
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

/// Why the bastion would not open a tunnel, in words.
fn tunnel_refusal(reason: &russh::ChannelOpenFailure) -> String {
    match reason {
        russh::ChannelOpenFailure::ConnectFailed => {
            "it cannot connect there (sshd down, wrong address or port?)".to_string()
        }
        russh::ChannelOpenFailure::AdministrativelyProhibited => {
            "forwarding is prohibited (AllowTcpForwarding on the bastion?)".to_string()
        }
        russh::ChannelOpenFailure::ResourceShortage => {
            "the bastion is short of resources".to_string()
        }
        other => format!("{other:?}"),
    }
}
