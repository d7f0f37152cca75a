//! Registry credentials the way the docker CLI finds them: `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`), its `auths` entries (base64 `auth`, `username` and
//! `password`, `identitytoken`), `credHelpers` per registry and `credsStore` for all, a helper
//! being run as `docker-credential-<name> get`.
//!
//! The reading and the helper protocol are the `docker_credential` crate's. This module adds
//! what it leaves to its caller: which key names a registry (Docker Hub's is the historical
//! `https://index.docker.io/v1/`, as the CLI uses for `credHelpers` and the helper's question;
//! `auths` keys also match by host, so `https://reg:5000/v1/` names `reg:5000`), a missing
//! file or a helper's "not found" meaning anonymous, and errors that never quote the file or a
//! helper's output (either may hold a secret). One difference from the CLI: an `auths` entry
//! with a password wins over `credsStore`, where the CLI would ask the store.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};

/// Docker Hub's key in config.json and for credential helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// What to log in to a registry with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A username and password (or a personal access token used as one).
    Basic { username: String, password: String },
    /// A refresh token from `docker login` against an OAuth2 registry: it is exchanged for an
    /// access token at the registry's token endpoint (`grant_type=refresh_token`).
    IdentityToken(String),
}

impl Credential {
    /// The secret part, to scrub from any text a registry sends back.
    pub fn secret(&self) -> &str {
        match self {
            Credential::Basic { password, .. } => password,
            Credential::IdentityToken(token) => token,
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <hidden> }}")
            }
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<hidden>)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
}

/// The docker CLI's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_config_path() -> Option<PathBuf> {
    config_path_from(std::env::var_os("DOCKER_CONFIG"), dirs::home_dir())
}

fn config_path_from(
    docker_config: Option<std::ffi::OsString>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    match docker_config {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => home.map(|home| home.join(".docker/config.json")),
    }
}

/// The key the docker CLI looks `registry` up by (`host[:port]`; Docker Hub by any name).
fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY,
        other => other,
    }
}

/// Credentials for `registry` (a `host[:port]`, as in an image reference or a mirror's URL),
/// or `None` for anonymous access. A missing config file means anonymous. Blocking: it may run
/// a credential helper.
pub fn lookup(config_path: &Path, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let file = match std::fs::File::open(config_path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(config_path, e.to_string())),
    };
    let key = config_key(registry);
    let found = docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key);
    match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(Credential::IdentityToken(token))),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        Err(CredentialRetrievalError::HelperFailure {
            helper,
            stdout,
            stderr,
        }) => {
            // Helpers answer "credentials not found in native keychain" for an unknown registry.
            if stdout.contains("not found") || stderr.contains("not found") {
                return Ok(None);
            }
            Err(helper_error(&helper, key, "it exited with an error"))
        }
        Err(CredentialRetrievalError::HelperCommunicationError) => {
            let helper = configured_helper(config_path, key);
            Err(helper_error(
                &helper,
                key,
                "it could not be run (is it on PATH?)",
            ))
        }
        Err(CredentialRetrievalError::MalformedHelperResponse) => {
            let helper = configured_helper(config_path, key);
            Err(helper_error(
                &helper,
                key,
                "its answer is not JSON with Username and Secret",
            ))
        }
        Err(CredentialRetrievalError::CredentialDecodingError) => Err(config_error(
            config_path,
            format!("the `auth` entry for {key} is not base64 of user:password"),
        )),
        Err(CredentialRetrievalError::CredentialMismatchError) => Err(config_error(
            config_path,
            format!("the `auth` entry for {key} disagrees with its username and password"),
        )),
        Err(
            CredentialRetrievalError::ConfigReadError | CredentialRetrievalError::ConfigNotFound,
        ) => {
            // No detail on purpose: serde's message can quote a value from the file.
            Err(config_error(
                config_path,
                "not a valid docker config file".into(),
            ))
        }
    }
}

/// The helper's name for an error message (the crate reports it only for some failures).
fn configured_helper(config_path: &Path, key: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Helpers {
        #[serde(default, rename = "credHelpers")]
        cred_helpers: std::collections::HashMap<String, String>,
        #[serde(default, rename = "credsStore")]
        creds_store: Option<String>,
    }
    std::fs::read(config_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Helpers>(&bytes).ok())
        .and_then(|h| h.cred_helpers.get(key).cloned().or(h.creds_store))
        .unwrap_or_else(|| "?".into())
}

fn helper_error(helper: &str, registry: &str, message: &str) -> CredentialError {
    CredentialError::Helper {
        helper: helper
            .strip_prefix("docker-credential-")
            .unwrap_or(helper)
            .to_string(),
        registry: registry.to_string(),
        message: message.to_string(),
    }
}

fn config_error(path: &Path, message: String) -> CredentialError {
    CredentialError::Config {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    fn basic(username: &str, password: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: username.into(),
            password: password.into(),
        })
    }

    #[test]
    fn auths_entries_decode_and_match_by_host() {
        // "alice:s3cret" and "bob:pw"
        let (_dir, path) = config(
            r#"{"auths":{
                "reg.example:5000":{"auth":"YWxpY2U6czNjcmV0"},
                "https://index.docker.io/v1/":{"auth":"Ym9iOnB3"},
                "https://other.example/v1/":{"username":"carol","password":"pw2"},
                "tokens.example":{"identitytoken":"refresh-me"}
            }}"#,
        );
        let alice = lookup(&path, "reg.example:5000").unwrap();
        assert_eq!(alice, basic("alice", "s3cret"));
        assert!(!format!("{alice:?}").contains("s3cret"));
        assert_eq!(lookup(&path, "docker.io").unwrap(), basic("bob", "pw"));
        assert_eq!(
            lookup(&path, "registry-1.docker.io").unwrap(),
            basic("bob", "pw")
        );
        assert_eq!(
            lookup(&path, "other.example").unwrap(),
            basic("carol", "pw2")
        );
        let token = lookup(&path, "tokens.example").unwrap().unwrap();
        assert_eq!(token, Credential::IdentityToken("refresh-me".into()));
        assert!(!format!("{token:?}").contains("refresh-me"));
        assert_eq!(lookup(&path, "unknown.example").unwrap(), None);
    }

    #[test]
    fn missing_file_is_anonymous_and_broken_file_names_itself_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            lookup(&dir.path().join("none.json"), "docker.io").unwrap(),
            None
        );
        let (_dir, path) = config(r#"{"auths": "hunter2"}"#);
        let err = lookup(&path, "docker.io").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let (_dir, path) = config(r#"{"auths":{"r.example":{"auth":"%%%"}}}"#);
        let err = lookup(&path, "r.example").unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let (_dir, path) = config(r#"{"credsStore":"dropship-test-none"}"#);
        let err = lookup(&path, "reg.example").unwrap_err();
        assert_eq!(
            err,
            CredentialError::Helper {
                helper: "dropship-test-none".into(),
                registry: "reg.example".into(),
                message: "it could not be run (is it on PATH?)".into(),
            }
        );
        assert!(
            err.to_string()
                .contains("docker-credential-dropship-test-none"),
            "{err}"
        );
    }

    #[test]
    fn docker_config_variable_wins_over_home() {
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(
            config_path_from(Some("/etc/dc".into()), home.clone()),
            Some(PathBuf::from("/etc/dc/config.json"))
        );
        assert_eq!(
            config_path_from(None, home.clone()),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(
            config_path_from(Some("".into()), home),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
    }
}
