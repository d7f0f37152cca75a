//! Where and how to log in: the hosts the transport connects to, as plain data.
//!
//! The inventory builds these from host variables and the CLI from its flags; the transport
//! reads them and knows nothing of either.

use std::path::PathBuf;

/// OpenSSH's StrictHostKeyChecking values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes`: unknown hosts are refused.
    Yes,
    /// `accept-new`: unknown hosts are learned, changed keys refused.
    AcceptNew,
    /// `no` / `off`: only honoured with `--insecure-ignore-host-keys`.
    No,
}

impl StrictHostKeyChecking {
    /// OpenSSH's spellings (`ask` is `yes` without a terminal to ask on).
    pub fn parse(value: &str) -> Option<StrictHostKeyChecking> {
        match value.to_ascii_lowercase().as_str() {
            "yes" | "ask" => Some(StrictHostKeyChecking::Yes),
            "accept-new" => Some(StrictHostKeyChecking::AcceptNew),
            "no" | "off" => Some(StrictHostKeyChecking::No),
            _ => None,
        }
    }
}

/// Where a hop's setting came from, for `-v`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// Nothing set it: OpenSSH's default (port 22, the local user, the default keys).
    #[default]
    Default,
    /// A dropship flag.
    Flag,
    /// An inventory variable (or `-e`), or the ssh arguments it holds.
    Inventory,
    /// `ansible.cfg` or its `ANSIBLE_*` environment variable.
    AnsibleCfg,
    /// A line of an ssh config file (`file:line`).
    SshConfig(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Flag => f.write_str("flag"),
            Source::Inventory => f.write_str("inventory"),
            Source::AnsibleCfg => f.write_str("ansible.cfg"),
            Source::SshConfig(at) => write!(f, "ssh_config {at}"),
        }
    }
}

/// Where a hop's address, port, user and key came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    pub address: Source,
    pub port: Source,
    pub user: Source,
    pub private_key: Source,
}

/// Privilege escalation for remote commands (`ansible_become`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Become {
    /// `ansible_become_user`; `None` means root.
    pub user: Option<String>,
}

/// One SSH login: where, as whom, with which key, checked against which known_hosts. A target
/// is one hop, and so is the jump host (bastion) in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Inventory name, or the address when the hop is not an inventory host: what messages say.
    pub name: String,
    pub address: String,
    /// `None` means OpenSSH's default, 22.
    pub port: Option<u16>,
    /// `None` means the current user (for a jump host: the target's `--user`, then that).
    pub user: Option<String>,
    pub private_key: Option<PathBuf>,
    /// `UserKnownHostsFile`; `None` means `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    pub sources: Sources,
}

/// OpenSSH's port when nothing names one.
pub const DEFAULT_PORT: u16 = 22;

impl Hop {
    /// A hop named after its address, with nothing else set but its port and user.
    pub fn to(address: &str, port: u16, user: Option<String>) -> Hop {
        Hop {
            port: Some(port),
            user,
            ..Hop::named(address)
        }
    }

    /// A hop named after its address, with nothing else set.
    pub fn named(address: &str) -> Hop {
        Hop {
            name: address.to_string(),
            address: address.to_string(),
            port: None,
            user: None,
            private_key: None,
            known_hosts: None,
            strict_host_key_checking: None,
            sources: Sources::default(),
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// A host to run commands on: its own login, the jump host in front of it, and become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub hop: Hop,
    pub jump: Option<Hop>,
    pub become_: Option<Become>,
}

impl Host {
    /// The inventory name.
    pub fn name(&self) -> &str {
        &self.hop.name
    }
}

/// `[user@]host[:port]`, as `ssh -J`, ProxyJump and a ProxyCommand's destination write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    /// IPv6 addresses as `[addr]:port`, or bare when there is no port (a bare address with
    /// several colons is all host, as OpenSSH reads it).
    pub fn parse(text: &str) -> Result<Destination, String> {
        let (user, rest) = match text.rsplit_once('@') {
            Some(("", _)) => return Err(format!("empty user in '{text}'")),
            Some((user, rest)) => (Some(user.to_string()), rest),
            None => (None, text),
        };
        let bad_port = |p: &str| format!("'{p}' in '{text}' is not a port number");
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in '{text}'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p).ok_or_else(|| bad_port(p))?),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected '{after}' in '{text}'")),
            };
            (host.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((host, p)) if !p.contains(':') => (
                    host.to_string(),
                    Some(parse_port(p).ok_or_else(|| bad_port(p))?),
                ),
                _ => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in '{text}'"));
        }
        Ok(Destination { user, host, port })
    }

    /// The hop this destination names; the port and user stay unset unless it says.
    pub fn hop(self) -> Hop {
        Hop {
            port: self.port,
            user: self.user,
            ..Hop::named(&self.host)
        }
    }
}

/// A TCP port: 1 to 65535.
pub fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(user: Option<&str>, host: &str, port: Option<u16>) -> Destination {
        Destination {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn destinations_as_openssh_writes_them() {
        let cases = [
            (
                "ops@bastion.example:2200",
                dest(Some("ops"), "bastion.example", Some(2200)),
            ),
            ("198.18.0.2", dest(None, "198.18.0.2", None)),
            ("root@[::1]:2222", dest(Some("root"), "::1", Some(2222))),
            ("fe80::1", dest(None, "fe80::1", None)),
            // The last @ separates the user.
            ("a@b@gw", dest(Some("a@b"), "gw", None)),
        ];
        for (text, expected) in cases {
            assert_eq!(Destination::parse(text).unwrap(), expected, "{text}");
        }
        for bad in [
            "@host",
            "host:notaport",
            "host:0",
            "[::1",
            "[::1]x",
            "ops@",
            "",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?}");
        }
    }
}
