//! Everything that can go wrong talking to one host, with the host named in every case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::retry::Retry;

/// The step of a connection that was under way when something failed or timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    TcpConnect,
    Handshake,
    Authentication,
    ChannelOpen,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::TcpConnect => "TCP connect",
            Step::Handshake => "SSH handshake",
            Step::Authentication => "authentication",
            Step::ChannelOpen => "channel open",
        })
    }
}

/// A failure of the SSH layer. `retry()` tells a retry policy whether trying again can help,
/// `unreachable()` whether the host was out of reach or something else failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}: cannot connect to {address}: {source}")]
    Connect {
        host: String,
        address: String,
        source: std::io::Error,
    },

    #[error("{host}: {step} to {address} timed out after {}s", after.as_secs())]
    Timeout {
        host: String,
        address: String,
        step: Step,
        after: Duration,
    },

    /// `source` names the bastion (its inventory name or address) first.
    #[error("{host}: through bastion {source}")]
    Bastion {
        host: String,
        bastion: String,
        source: Box<SshError>,
    },

    #[error("{host}: the bastion could not open a tunnel to {target}: {reason}")]
    Tunnel {
        host: String,
        target: String,
        reason: String,
        /// Never when the bastion forbids forwarding; once when it could not connect (what
        /// OpenSSH answers for a refused connection).
        retry: Retry,
    },

    #[error("{host}: SSH failure during {step}: {source}")]
    Protocol {
        host: String,
        step: Step,
        source: Box<russh::Error>,
    },

    #[error(
        "{host}: authentication as {user:?} failed; tried: {}. \
         Check the user (--user / ansible_user) and the key (--private-key / ansible_ssh_private_key_file / ssh-agent)",
        if tried.is_empty() { "nothing (no key file found and no agent)".to_string() } else { tried.join(", ") }
    )]
    Auth {
        host: String,
        user: String,
        tried: Vec<String>,
    },

    #[error("{host}: cannot use private key {}: {reason}", path.display())]
    Key {
        host: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "{host}: host key of {address} is not known in {}; refusing to connect. \
         Check the fingerprint {fingerprint} and add this line to that file, or pass --accept-new:\n{line}",
        known_hosts.display()
    )]
    UnknownHostKey {
        host: String,
        address: String,
        known_hosts: Box<Path>,
        fingerprint: String,
        line: String,
    },

    #[error(
        "{host}: HOST KEY CHANGED for {address}: it sent {fingerprint}, which does not match {} line(s) {}. \
         This may be a man-in-the-middle attack; refusing whatever the flags. \
         If the host was really reinstalled, remove the old entry with `ssh-keygen -R {address} -f {}`",
        known_hosts.display(),
        lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(","),
        known_hosts.display()
    )]
    HostKeyChanged {
        host: String,
        address: String,
        known_hosts: Box<Path>,
        fingerprint: String,
        lines: Box<[usize]>,
    },

    #[error("{host}: host key {fingerprint} of {address} is marked @revoked in {}; refusing", known_hosts.display())]
    HostKeyRevoked {
        host: String,
        address: String,
        known_hosts: Box<Path>,
        fingerprint: String,
    },

    #[error("{host}: known_hosts file {}: {source}", path.display())]
    KnownHostsFile {
        host: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{host}: connection lost while running `{command}`")]
    ConnectionLost { host: String, command: String },

    #[error("{host}: reading the data to send to `{command}`: {source}")]
    Stdin {
        host: String,
        command: String,
        source: std::io::Error,
    },

    #[error("{host}: writing the output of `{command}`: {source}")]
    Stdout {
        host: String,
        command: String,
        source: std::io::Error,
    },

    #[error(
        "{host}: `{command}` printed more than {limit} bytes; stream its output instead of capturing it"
    )]
    OutputTooLarge {
        host: String,
        command: String,
        limit: usize,
    },

    #[error("{host}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        host: String,
        command: String,
        status: super::ExitStatus,
        stderr: String,
    },
}

impl SshError {
    /// Whether trying again later can succeed (see [`SshError::retry`]).
    pub fn is_transient(&self) -> bool {
        self.retry() != Retry::Never
    }

    /// Lost, reset or timed-out connections may come back: the whole schedule. A refused one
    /// (nothing listens: sshd stopped, or restarting) is tried once more. Refused credentials,
    /// host keys and local file problems would fail the same way again.
    pub fn retry(&self) -> Retry {
        match self {
            SshError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                Retry::Once
            }
            SshError::Connect { .. }
            | SshError::Timeout { .. }
            | SshError::ConnectionLost { .. } => Retry::Staggered,
            SshError::Tunnel { retry, .. } => *retry,
            SshError::Bastion { source, .. } => source.retry(),
            SshError::Protocol { source, .. } if is_transient_russh(source) => Retry::Staggered,
            SshError::Protocol { .. }
            | SshError::Auth { .. }
            | SshError::Key { .. }
            | SshError::UnknownHostKey { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::KnownHostsFile { .. }
            | SshError::Stdin { .. }
            | SshError::Stdout { .. }
            | SshError::OutputTooLarge { .. }
            | SshError::CommandFailed { .. } => Retry::Never,
        }
    }

    /// Whether the host is *unreachable* in Ansible's sense: the connection could not be made
    /// or broke (TCP, the bastion or its tunnel, the handshake, host keys, authentication, a
    /// connection lost mid-command). Ansible reports a host unreachable whenever its
    /// connection plugin fails (`AnsibleConnectionFailure`: ssh exiting 255, including a
    /// session cut mid-task) and failed when the remote command ran and failed; so here: a
    /// command that failed, or a local stream problem, is not.
    pub fn unreachable(&self) -> bool {
        !matches!(
            self,
            SshError::Stdin { .. }
                | SshError::Stdout { .. }
                | SshError::OutputTooLarge { .. }
                | SshError::CommandFailed { .. }
        )
    }

    /// The inventory host this error is about.
    pub fn host(&self) -> &str {
        match self {
            SshError::Connect { host, .. }
            | SshError::Timeout { host, .. }
            | SshError::Bastion { host, .. }
            | SshError::Tunnel { host, .. }
            | SshError::Protocol { host, .. }
            | SshError::Auth { host, .. }
            | SshError::Key { host, .. }
            | SshError::UnknownHostKey { host, .. }
            | SshError::HostKeyChanged { host, .. }
            | SshError::HostKeyRevoked { host, .. }
            | SshError::KnownHostsFile { host, .. }
            | SshError::ConnectionLost { host, .. }
            | SshError::Stdin { host, .. }
            | SshError::Stdout { host, .. }
            | SshError::OutputTooLarge { host, .. }
            | SshError::CommandFailed { host, .. } => host,
        }
    }
}

/// Connection-level russh failures (the peer went away, I/O broke, keepalives unanswered) are
/// worth retrying; protocol disagreements (no common algorithm, bad signature) are not.
fn is_transient_russh(error: &russh::Error) -> bool {
    matches!(
        error,
        russh::Error::HUP
            | russh::Error::Disconnect
            | russh::Error::IO(_)
            | russh::Error::ConnectionTimeout
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout
            | russh::Error::SendError
            | russh::Error::RecvError
            | russh::Error::Elapsed(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_refused_ones_retried_once_and_refusals_never() {
        let host = || "node1".to_string();
        let refused = SshError::Connect {
            host: host(),
            address: "198.18.1.2:22".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.retry(), Retry::Once);
        assert!(refused.is_transient() && refused.unreachable());
        let reset = SshError::Connect {
            host: host(),
            address: "198.18.1.2:22".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(reset.retry(), Retry::Staggered);
        let via_bastion = SshError::Bastion {
            host: host(),
            bastion: "bastion".into(),
            source: Box::new(refused),
        };
        assert_eq!(via_bastion.retry(), Retry::Once);
        assert!(via_bastion.unreachable());
        let lost = SshError::ConnectionLost {
            host: host(),
            command: "docker load".into(),
        };
        assert_eq!(lost.retry(), Retry::Staggered);
        assert!(
            lost.unreachable(),
            "a session cut mid-command: Ansible says UNREACHABLE"
        );
        let exited = SshError::CommandFailed {
            host: host(),
            command: "sh".into(),
            status: crate::ssh::ExitStatus::Code(3),
            stderr: String::new(),
        };
        assert!(!exited.unreachable() && !exited.is_transient());
        assert!(
            SshError::Protocol {
                host: host(),
                step: Step::Handshake,
                source: russh::Error::HUP.into()
            }
            .is_transient()
        );
        assert!(
            !SshError::Protocol {
                host: host(),
                step: Step::Handshake,
                source: russh::Error::Kex.into()
            }
            .is_transient()
        );
        let auth = SshError::Auth {
            host: host(),
            user: "root".into(),
            tried: vec!["agent".into()],
        };
        assert!(!auth.is_transient());
        assert!(auth.unreachable());
        assert!(auth.to_string().contains("node1") && auth.to_string().contains("\"root\""));
        let changed = SshError::HostKeyChanged {
            host: host(),
            address: "198.18.1.2".into(),
            known_hosts: Path::new("/k").into(),
            fingerprint: "SHA256:x".into(),
            lines: Box::new([3]),
        };
        assert!(!changed.is_transient());
        assert!(changed.unreachable());
        assert_eq!(changed.host(), "node1");
    }
}
