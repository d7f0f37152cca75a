//! How to reach one host over SSH, resolved from its merged inventory variables.
//!
//! These are plain data: the SSH layer consumes them and knows nothing of inventories.

use std::path::PathBuf;

/// OpenSSH's StrictHostKeyChecking values, as found in `ansible_ssh_common_args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes`: unknown hosts are refused.
    Yes,
    /// `accept-new`: unknown hosts are learned, changed keys refused.
    AcceptNew,
    /// `no` / `off`: only honoured with `--insecure-ignore-host-keys`.
    No,
}

/// Privilege escalation for remote commands (`ansible_become`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Become {
    /// `ansible_become_user`; `None` means root.
    pub user: Option<String>,
}

/// The jump host in front of a target (Kubespray's bastion, ProxyCommand `-W`, ProxyJump, `-J`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Inventory name when the jump host is an inventory host, else the address.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub private_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
}

/// Everything needed to open an SSH session to one inventory host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConnection {
    /// Inventory hostname.
    pub name: String,
    /// `ansible_host`, else the inventory hostname.
    pub address: String,
    /// `ansible_port` / `ansible_ssh_port` / `host:port`, else 22.
    pub port: u16,
    /// `ansible_user` / `ansible_ssh_user`; `None` means the current user.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file` / `ansible_private_key_file`.
    pub private_key: Option<PathBuf>,
    /// `ansible_become` (and `ansible_become_user`).
    pub become_: Option<Become>,
    /// The bastion or jump host to go through, if any.
    pub jump: Option<JumpHost>,
    /// `UserKnownHostsFile` from the host's ssh args.
    pub known_hosts: Option<PathBuf>,
    /// `StrictHostKeyChecking` from the host's ssh args.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `ansible_connection=local`: never a push target.
    pub local: bool,
}
