//! Public-key authentication as OpenSSH users expect: the configured key, then ssh-agent, then
//! ~/.ssh/id_ed25519, id_ecdsa, id_rsa. Key files are decrypted once per run and shared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::SshError;
use super::host_keys::Client;
use super::known_hosts::fingerprint;

/// Environment variable holding the passphrase of encrypted keys (for runs without a TTY).
pub const PASSPHRASE_ENV: &str = "DROPSHIP_SSH_PASSPHRASE";

const DEFAULT_KEY_NAMES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

/// Decrypted private keys by path, loaded at most once (one passphrase prompt per key per run).
pub(crate) struct KeyStore {
    loaded: tokio::sync::Mutex<HashMap<PathBuf, Result<Arc<PrivateKey>, String>>>,
    /// For encrypted keys; `None`: ask on the terminal.
    passphrase: Option<Passphrase>,
}

/// A key file to offer, or the reason it cannot be offered.
pub(crate) struct KeyFile {
    path: PathBuf,
    key: Result<Arc<PrivateKey>, String>,
    explicit: bool,
}

impl KeyStore {
    pub(crate) fn new(passphrase: Option<Passphrase>) -> Self {
        KeyStore {
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            passphrase,
        }
    }

    /// The key files to offer, in order: `explicit` first, then the default ones that exist.
    /// Runs before the authentication timeout starts, since it may prompt for a passphrase.
    pub(crate) async fn key_files(
        &self,
        explicit: Option<&Path>,
        default_dir: Option<&Path>,
    ) -> Vec<KeyFile> {
        let defaults = default_dir
            .iter()
            .flat_map(|dir| DEFAULT_KEY_NAMES.iter().map(move |name| dir.join(name)))
            .filter(|path| path.exists() && Some(path.as_path()) != explicit);
        // Collected first: no iterator of closures may live across the `.await` below.
        let candidates: Vec<(PathBuf, bool)> = explicit
            .map(|p| (p.to_path_buf(), true))
            .into_iter()
            .chain(defaults.map(|p| (p, false)))
            .collect();
        let mut files = Vec::new();
        for (path, is_explicit) in candidates {
            let key = self.load(&path).await;
            files.push(KeyFile {
                path,
                key,
                explicit: is_explicit,
            });
        }
        files
    }

    async fn load(&self, path: &Path) -> Result<Arc<PrivateKey>, String> {
        let mut loaded = self.loaded.lock().await;
        if let Some(result) = loaded.get(path) {
            return result.clone();
        }
        let owned = path.to_path_buf();
        let passphrase = self.passphrase.clone();
        let result = tokio::task::spawn_blocking(move || load_key_file(&owned, passphrase))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        loaded.insert(path.to_path_buf(), result.clone());
        result
    }
}

fn load_key_file(path: &Path, passphrase: Option<Passphrase>) -> Result<Arc<PrivateKey>, String> {
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => Ok(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let passphrase = match passphrase {
                Some(Passphrase(known)) => known,
                None => ask_passphrase(path)?,
            };
            russh::keys::load_secret_key(path, Some(&passphrase))
                .map(Arc::new)
                .map_err(|_| "cannot decrypt it: wrong passphrase".to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A key passphrase: kept out of `Debug` output, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(pub String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Asked on the terminal with echo off.
fn ask_passphrase(path: &Path) -> Result<String, String> {
    crate::tty::prompt_hidden(&format!("Enter passphrase for key '{}': ", path.display())).map_err(
        |e| format!("it is encrypted, {PASSPHRASE_ENV} is not set and no terminal to ask on ({e})"),
    )
}

/// Try each method until the server accepts one. `tried` names every method for the error.
pub(crate) async fn authenticate(
    handle: &mut Handle<Client>,
    host: &str,
    user: &str,
    key_files: &[KeyFile],
    agent_socket: Option<&Path>,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut rsa_hash: Option<Option<HashAlg>> = None;
    let protocol = |source: russh::Error| SshError::Protocol {
        host: host.to_string(),
        step: super::Step::Authentication,
        source: source.into(),
    };

    let mut offered: Vec<PublicKey> = Vec::new();
    for file in key_files.iter().filter(|f| f.explicit) {
        if try_key_file(handle, user, file, &mut rsa_hash, &mut tried, &mut offered)
            .await
            .map_err(protocol)?
        {
            accepted(host, user, &tried);
            return Ok(());
        }
        if let Err(reason) = &file.key {
            return Err(SshError::Key {
                host: host.to_string(),
                path: file.path.clone(),
                reason: reason.clone(),
            });
        }
    }
    if let Some(socket) = agent_socket
        && try_agent(
            handle,
            socket,
            user,
            &mut rsa_hash,
            &mut tried,
            &mut offered,
        )
        .await
        .map_err(protocol)?
    {
        accepted(host, user, &tried);
        return Ok(());
    }
    for file in key_files.iter().filter(|f| !f.explicit) {
        if try_key_file(handle, user, file, &mut rsa_hash, &mut tried, &mut offered)
            .await
            .map_err(protocol)?
        {
            accepted(host, user, &tried);
            return Ok(());
        }
    }
    Err(SshError::Auth {
        host: host.to_string(),
        user: user.to_string(),
        tried,
    })
}

/// `-vv`: which method got in (a key file's path or an agent key's fingerprint, never a key).
fn accepted(host: &str, user: &str, tried: &[String]) {
    let method = tried.last().map(String::as_str).unwrap_or("none");
    tracing::debug!("{host}: authenticated as {user} with publickey: {method}");
}

/// The RSA signature hash the server accepts (rsa-sha2-512/256), asked once per connection;
/// without it russh signs with SHA-1, which current OpenSSH rejects.
async fn rsa_hash_for(
    handle: &Handle<Client>,
    cached: &mut Option<Option<HashAlg>>,
) -> Option<HashAlg> {
    if cached.is_none() {
        let best = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .unwrap_or(Some(HashAlg::Sha256));
        *cached = Some(best);
    }
    cached.flatten()
}

async fn try_key_file(
    handle: &mut Handle<Client>,
    user: &str,
    file: &KeyFile,
    rsa_hash: &mut Option<Option<HashAlg>>,
    tried: &mut Vec<String>,
    offered: &mut Vec<PublicKey>,
) -> Result<bool, russh::Error> {
    let key = match &file.key {
        Ok(key) => key,
        Err(reason) => {
            tried.push(format!("key {} (unusable: {reason})", file.path.display()));
            return Ok(false);
        }
    };
    let hash = if key.algorithm().is_rsa() {
        rsa_hash_for(handle, rsa_hash).await
    } else {
        None
    };
    tried.push(format!("key {}", file.path.display()));
    offered.push(key.public_key().clone());
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
        .await?;
    Ok(matches!(result, AuthResult::Success))
}

async fn try_agent(
    handle: &mut Handle<Client>,
    socket: &Path,
    user: &str,
    rsa_hash: &mut Option<Option<HashAlg>>,
    tried: &mut Vec<String>,
    offered: &mut Vec<PublicKey>,
) -> Result<bool, russh::Error> {
    let mut agent = match AgentClient::connect_uds(socket).await {
        Ok(agent) => agent,
        Err(e) => {
            tried.push(format!("ssh-agent (unreachable: {e})"));
            return Ok(false);
        }
    };
    let identities = match agent.request_identities().await {
        Ok(identities) => identities,
        Err(e) => {
            tried.push(format!("ssh-agent (no identities: {e})"));
            return Ok(false);
        }
    };
    if identities.is_empty() {
        tried.push("ssh-agent (holds no keys)".to_string());
    }
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        if offered.iter().any(|o| o.key_data() == key.key_data()) {
            continue;
        }
        let hash = if key.algorithm().is_rsa() {
            rsa_hash_for(handle, rsa_hash).await
        } else {
            None
        };
        tried.push(format!("ssh-agent key {}", fingerprint(&key)));
        offered.push(key.clone());
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return Ok(true),
            Ok(AuthResult::Failure { .. }) => {}
            Err(russh::AgentAuthError::Send(_)) => return Err(russh::Error::SendError),
            Err(russh::AgentAuthError::Key(e)) => {
                if let Some(last) = tried.last_mut() {
                    last.push_str(&format!(" (agent refused to sign: {e})"));
                }
            }
        }
    }
    Ok(false)
}
