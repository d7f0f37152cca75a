//! Host key verification during the handshake, as the russh client handler.

use std::path::PathBuf;

use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};

use super::SshError;
use super::known_hosts::{self, KnownHosts, Verdict};

/// What to do with a host that known_hosts does not list. A changed key is refused under all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHostPolicy {
    /// Refuse, printing the line to add (StrictHostKeyChecking=yes, the default).
    Refuse,
    /// Learn the key into known_hosts (StrictHostKeyChecking=accept-new, `--accept-new`).
    Learn,
    /// Accept without recording (StrictHostKeyChecking=no, honoured only with
    /// `--insecure-ignore-host-keys`).
    Ignore,
}

/// Which key one host must present, and what to do when known_hosts does not say.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    /// Inventory name, for messages.
    pub host: String,
    /// The name known_hosts entries use (ansible_host), and the port.
    pub address: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub unknown: UnknownHostPolicy,
}

impl HostKeyCheck {
    /// Host key algorithms to offer: those recorded for this host first (RSA in its SHA-2
    /// variants), then russh's defaults. Without this an RSA-only entry looks like an unknown
    /// host, because the server would sign with the ed25519 key russh prefers.
    pub fn preferred_algorithms(&self) -> Vec<Algorithm> {
        let recorded = KnownHosts::read(&self.known_hosts)
            .map(|kh| kh.recorded_algorithms(&self.address, self.port))
            .unwrap_or_default();
        let mut preferred: Vec<Algorithm> = Vec::new();
        for algorithm in recorded {
            let variants = if algorithm.clone().is_rsa() {
                vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                    Algorithm::Rsa { hash: None },
                ]
            } else {
                vec![algorithm]
            };
            preferred.extend(variants);
        }
        for algorithm in russh::Preferred::DEFAULT.key.iter() {
            if !preferred.contains(algorithm) {
                preferred.push(algorithm.clone());
            }
        }
        preferred
    }

    fn host_key_error(&self, key: &PublicKey, verdict: Verdict) -> SshError {
        let (host, address, known_hosts) = (
            self.host.clone(),
            self.address.clone(),
            self.known_hosts.clone().into_boxed_path(),
        );
        let fingerprint = known_hosts::fingerprint(key);
        match verdict {
            Verdict::Revoked => SshError::HostKeyRevoked {
                host,
                address,
                known_hosts,
                fingerprint,
            },
            Verdict::Changed { lines } => SshError::HostKeyChanged {
                host,
                address,
                known_hosts,
                fingerprint,
                lines: lines.into(),
            },
            Verdict::Known | Verdict::Unknown => SshError::UnknownHostKey {
                line: known_hosts::entry_line(&self.address, self.port, key),
                host,
                address,
                known_hosts,
                fingerprint,
            },
        }
    }

    async fn check(&self, key: &PublicKey) -> Result<(), SshError> {
        let file_error = |source| SshError::KnownHostsFile {
            host: self.host.clone(),
            path: self.known_hosts.clone(),
            source,
        };
        let verdict = KnownHosts::read(&self.known_hosts)
            .map_err(file_error)?
            .verdict(&self.address, self.port, key);
        match (verdict, self.unknown) {
            (Verdict::Known, _) => Ok(()),
            (Verdict::Unknown, UnknownHostPolicy::Ignore) => {
                tracing::warn!(
                    "{}: host key {} NOT VERIFIED (StrictHostKeyChecking=no with --insecure-ignore-host-keys)",
                    self.host,
                    known_hosts::fingerprint(key)
                );
                Ok(())
            }
            (Verdict::Unknown, UnknownHostPolicy::Learn) => {
                let (path, address, port, owned_key) = (
                    self.known_hosts.clone(),
                    self.address.clone(),
                    self.port,
                    key.clone(),
                );
                let learned = tokio::task::spawn_blocking(move || {
                    known_hosts::learn(&path, &address, port, &owned_key)
                })
                .await
                .map_err(|e| file_error(std::io::Error::other(e)))?
                .map_err(file_error)?;
                match learned {
                    Verdict::Unknown | Verdict::Known => {
                        tracing::info!(
                            "{}: learned host key {} into {}",
                            self.host,
                            known_hosts::fingerprint(key),
                            self.known_hosts.display()
                        );
                        Ok(())
                    }
                    other => Err(self.host_key_error(key, other)),
                }
            }
            (verdict, _) => Err(self.host_key_error(key, verdict)),
        }
    }
}

/// The russh client handler: verifies the host key and keeps the precise refusal reason.
pub(crate) struct Client {
    pub(crate) check: HostKeyCheck,
}

#[derive(Debug)]
pub(crate) enum ClientError {
    Russh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for ClientError {
    fn from(error: russh::Error) -> Self {
        ClientError::Russh(error)
    }
}

impl russh::client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.check.check(key).await.map_err(ClientError::HostKey)?;
                Ok(true)
            }
            // We never advertise certificate host-key algorithms, so a server cannot pick one.
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_rsa_comes_first_with_sha2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let rsa = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDNADwmxCT2RjASm2U1iMuLEiqHg35L4NUDHnPyhM+MwGordXchvPm9Jr6k4A+FqTmOL3Fv6ogjvSDQg5r+eS0DjnNwXO/3vCN8idZdZopAnnFgh4kWX6ELLMKRF75smsflTXrSSHRi8IvADhffEZBfITnQhk1sSs/qwi5flr1wCQ==";
        std::fs::write(&path, format!("[n1]:2222 ssh-rsa {rsa}\n")).unwrap();
        let check = HostKeyCheck {
            host: "n1".into(),
            address: "n1".into(),
            port: 2222,
            known_hosts: path,
            unknown: UnknownHostPolicy::Refuse,
        };
        let preferred = check.preferred_algorithms();
        assert_eq!(
            preferred[0],
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512)
            }
        );
        assert_eq!(preferred[3], Algorithm::Ed25519);
        assert_eq!(preferred.len(), russh::Preferred::DEFAULT.key.len());
    }
}
