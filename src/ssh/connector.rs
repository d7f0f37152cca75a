//! Opening authenticated SSH sessions, directly or tunnelled through a pooled bastion connection.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client::{self, Handle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::auth::{self, KeyStore};
use super::bastion::{BastionLease, BastionPool};
use super::host::{Hop, Host, Source};
use super::host_keys::{Client, ClientError, HostKeyCheck};
use super::options::{ConnectOptions, current_user};
use super::session::Session;
use super::{SshError, Step};
use crate::retry::Retry;

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

/// One host to log in to: its address, credentials and host-key rule, with the flags applied.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) check: HostKeyCheck,
    user: String,
    private_key: Option<PathBuf>,
}

/// Which end of a tunnel a hop is: the flags that name a user apply to targets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Target,
    Bastion,
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
                keys: KeyStore::new(options.key_passphrase.clone()),
                options,
                bastions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The jump host `host` goes through: `--bastion`, else the inventory's, else none.
    /// A `--bastion` names no key or known_hosts file, so it uses the target's.
    pub fn jump_for(&self, host: &Host) -> Option<Hop> {
        match &self.inner.options.bastion {
            Some(bastion) => {
                let mut jump = bastion.clone();
                if jump.private_key.is_none() {
                    jump.private_key = host.hop.private_key.clone();
                    jump.sources.private_key = host.hop.sources.private_key.clone();
                }
                if jump.known_hosts.is_none() {
                    jump.known_hosts = host.hop.known_hosts.clone();
                }
                Some(jump)
            }
            None => host.jump.clone(),
        }
    }

    /// The user `connect` logs in to `host` as: `--user`, else ansible_user, else the local user.
    pub fn login_user(&self, host: &Host) -> String {
        self.endpoint(&host.hop, Role::Target).user
    }

    /// An authenticated session to `host`, through its bastion when it has one.
    pub async fn connect(&self, host: &Host) -> Result<Session, SshError> {
        let name = host.name();
        let endpoint = self.endpoint(&host.hop, Role::Target);
        match self.jump_for(host) {
            None => {
                let handle = self.connect_direct(name, &endpoint).await?;
                Ok(Session::new(
                    name.to_string(),
                    handle,
                    None,
                    self.inner.options.connect_timeout,
                ))
            }
            Some(jump) => {
                let pool = self.bastion_pool(&jump);
                let through_bastion = |source| SshError::Bastion {
                    host: name.to_string(),
                    bastion: jump.name.clone(),
                    source: Box::new(source),
                };
                let lease = pool.lease(self).await.map_err(through_bastion)?;
                let handle = self
                    .connect_tunnelled(name, &endpoint, &lease, &pool.handshakes)
                    .await?;
                Ok(Session::new(
                    name.to_string(),
                    handle,
                    Some(lease),
                    self.inner.options.connect_timeout,
                ))
            }
        }
    }

    /// Connect (or reuse the connection) to the bastion of `host`, to report its reachability.
    pub async fn check_bastion(&self, jump: &Hop) -> Result<(), SshError> {
        self.bastion_pool(jump).lease(self).await.map(drop)
    }

    /// A hop with the flags applied: `--private-key` and `--known-hosts` replace the
    /// inventory's everywhere; `--user` replaces a target's user, and is a bastion's only when
    /// the bastion names none.
    fn with_flags(&self, hop: &Hop, role: Role) -> Hop {
        let options = &self.inner.options;
        let mut hop = hop.clone();
        let flag_user = match role {
            Role::Target => options.user.is_some(),
            Role::Bastion => hop.user.is_none() && options.user.is_some(),
        };
        if flag_user {
            (hop.user, hop.sources.user) = (options.user.clone(), Source::Flag);
        }
        if let Some(key) = &options.private_key {
            (hop.private_key, hop.sources.private_key) = (Some(key.clone()), Source::Flag);
        }
        if let Some(known_hosts) = &options.known_hosts {
            hop.known_hosts = Some(known_hosts.clone());
        }
        hop
    }

    fn endpoint(&self, hop: &Hop, role: Role) -> Endpoint {
        let options = &self.inner.options;
        let hop = self.with_flags(hop, role);
        Endpoint {
            check: HostKeyCheck {
                host: hop.name.clone(),
                address: hop.address.clone(),
                port: hop.port(),
                known_hosts: (hop.known_hosts.clone())
                    .unwrap_or_else(super::known_hosts::default_path),
                unknown: options.unknown_host_policy(&hop.name, hop.strict_host_key_checking),
            },
            user: hop.user.unwrap_or_else(current_user),
            private_key: hop.private_key,
        }
    }

    /// One line for `-v`: where `host` is reached, as whom, through which jump host, and where
    /// each of those came from (flag, inventory, ansible.cfg, ssh_config file:line, default).
    pub fn describe(&self, host: &Host) -> String {
        let mut line = describe_hop(&self.with_flags(&host.hop, Role::Target));
        match self.jump_for(host) {
            Some(jump) => {
                line.push_str(" via ");
                line.push_str(&describe_hop(&self.with_flags(&jump, Role::Bastion)));
            }
            None => line.push_str(" direct"),
        }
        line
    }

    fn bastion_pool(&self, jump: &Hop) -> Arc<BastionPool> {
        let endpoint = self.endpoint(jump, Role::Bastion);
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

    pub(super) async fn connect_direct(
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
                retry: match reason {
                    russh::ChannelOpenFailure::AdministrativelyProhibited => Retry::Never,
                    russh::ChannelOpenFailure::ConnectFailed => Retry::Once,
                    _ => Retry::Staggered,
                },
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
            // channel_buffer_size stays russh's 100 messages. russh's session task awaits room
            // in a channel's queue for each packet it receives (it grants window on receipt,
            // not on reading), so a bastion connection stalls while a tunnel's queue is full,
            // and the session inside that tunnel may be waiting to write through that same
            // connection: a deadlock. While a node's session is blocked writing, what arrives
            // for its tunnel is mostly the node's window adjustments for data in flight (about
            // 20 for OpenSSH's 2 MiB window), so 100 leaves room; 16 deadlocked a 100-node
            // push at -f 50 (both bastion connections unread, every node timing out).
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

/// `name user@address:port key FILE (address: inventory, port: default, ...)`.
fn describe_hop(hop: &Hop) -> String {
    let user = hop.user.clone().unwrap_or_else(current_user);
    let key = match &hop.private_key {
        Some(path) => path.display().to_string(),
        None => "ssh-agent, ~/.ssh/id_*".to_string(),
    };
    let s = &hop.sources;
    format!(
        "{} {user}@{}:{} key {key} (address: {}, port: {}, user: {}, key: {})",
        hop.name,
        hop.address,
        hop.port(),
        s.address,
        s.port,
        s.user,
        s.private_key
    )
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
