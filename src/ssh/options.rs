//! Settings for every connection of a run: CLI overrides, timeouts, pool sizes.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{PASSPHRASE_ENV, Passphrase};
use super::host::{Hop, StrictHostKeyChecking};
use super::host_keys::UnknownHostPolicy;

/// How the [`Connector`](super::Connector) connects. CLI flags override inventory values.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `--user`: overrides ansible_user for targets.
    pub user: Option<String>,
    /// `--private-key`: overrides ansible_ssh_private_key_file.
    pub private_key: Option<PathBuf>,
    /// `--known-hosts`: overrides UserKnownHostsFile.
    pub known_hosts: Option<PathBuf>,
    /// `--bastion`: replaces the inventory's jump host for every target.
    pub bastion: Option<Hop>,
    /// `--accept-new`: learn unknown host keys.
    pub accept_new: bool,
    /// `--insecure-ignore-host-keys`: honour StrictHostKeyChecking=no from the inventory.
    pub insecure_ignore_host_keys: bool,
    /// Bound on each of TCP connect, handshake, authentication and channel open.
    pub connect_timeout: Duration,
    /// Keepalive period; a peer silent for 3 periods is declared dead.
    pub keepalive_interval: Duration,
    /// SSH connections kept to each bastion; tunnels go to the least loaded one.
    pub bastion_connections: usize,
    /// Handshakes through one bastion at once (OpenSSH's MaxStartups starts dropping at 10).
    pub handshakes_per_bastion: usize,
    /// ssh-agent socket (default: `SSH_AUTH_SOCK`); `None` means no agent.
    pub agent_socket: Option<PathBuf>,
    /// Where the default keys id_ed25519, id_ecdsa, id_rsa are looked for (default: ~/.ssh).
    pub default_key_dir: Option<PathBuf>,
    /// For encrypted keys (default: `DROPSHIP_SSH_PASSPHRASE`); `None`: asked on the terminal.
    pub key_passphrase: Option<Passphrase>,
    /// Ciphers to offer, most preferred first, by SSH name (e.g. `aes256-gcm@openssh.com`).
    pub ciphers: Vec<String>,
}

/// Cipher preference. AES-GCM first: with AES instructions (x86-64 AES-NI, ARMv8 crypto) it
/// ran 1.1–1.8× faster than chacha20-poly1305 here (docs/ssh.md); OpenSSH servers
/// accept all of these by default.
pub const DEFAULT_CIPHERS: [&str; 6] = [
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// Connections per bastion by default: see docs/ssh.md for the measurement.
pub const DEFAULT_BASTION_CONNECTIONS: usize = 2;

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            user: None,
            private_key: None,
            known_hosts: None,
            bastion: None,
            accept_new: false,
            insecure_ignore_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            bastion_connections: DEFAULT_BASTION_CONNECTIONS,
            handshakes_per_bastion: 8,
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            default_key_dir: dirs::home_dir().map(|home| home.join(".ssh")),
            key_passphrase: std::env::var(PASSPHRASE_ENV).ok().map(Passphrase),
            ciphers: DEFAULT_CIPHERS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl ConnectOptions {
    /// The unknown-host policy for a host whose inventory says `strict`.
    pub(crate) fn unknown_host_policy(
        &self,
        host: &str,
        strict: Option<StrictHostKeyChecking>,
    ) -> UnknownHostPolicy {
        match strict {
            _ if self.accept_new => UnknownHostPolicy::Learn,
            Some(StrictHostKeyChecking::AcceptNew) => UnknownHostPolicy::Learn,
            Some(StrictHostKeyChecking::No) if self.insecure_ignore_host_keys => {
                UnknownHostPolicy::Ignore
            }
            Some(StrictHostKeyChecking::No) => {
                tracing::info!(
                    "{host}: inventory says StrictHostKeyChecking=no; verifying host keys anyway \
                     (pass --insecure-ignore-host-keys to skip unknown hosts' verification)"
                );
                UnknownHostPolicy::Refuse
            }
            Some(StrictHostKeyChecking::Yes) | None => UnknownHostPolicy::Refuse,
        }
    }
}

/// The user to log in as when nothing names one: the local user, like OpenSSH.
pub(crate) fn current_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "root".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_new_and_insecure_are_explicit_choices() {
        let strict = ConnectOptions::default();
        assert_eq!(
            strict.unknown_host_policy("h", Some(StrictHostKeyChecking::No)),
            UnknownHostPolicy::Refuse
        );
        assert_eq!(
            strict.unknown_host_policy("h", Some(StrictHostKeyChecking::AcceptNew)),
            UnknownHostPolicy::Learn
        );
        let insecure = ConnectOptions {
            insecure_ignore_host_keys: true,
            ..ConnectOptions::default()
        };
        assert_eq!(
            insecure.unknown_host_policy("h", Some(StrictHostKeyChecking::No)),
            UnknownHostPolicy::Ignore
        );
        assert_eq!(
            insecure.unknown_host_policy("h", None),
            UnknownHostPolicy::Refuse
        );
        let learn = ConnectOptions {
            accept_new: true,
            ..ConnectOptions::default()
        };
        assert_eq!(
            learn.unknown_host_policy("h", Some(StrictHostKeyChecking::Yes)),
            UnknownHostPolicy::Learn
        );
    }
}
