//! Registry credentials the way the docker CLI finds them: `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`), `auths` entries (base64 `user:password`), and credential helpers
//! (`credHelpers` per registry, `credsStore` for all) run as `docker-credential-<name> get`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// Docker Hub's key in config.json, for historical reasons.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A username and secret for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, secret: <hidden> }}",
            self.username
        )
    }
}

#[derive(Debug, thiserror::Error)]
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

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The docker CLI's config file location.
pub fn default_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => dirs::home_dir().map(|home| home.join(".docker/config.json")),
    }
}

/// Credentials for `registry` (a `host[:port]` as in an image reference; `docker.io` for Docker
/// Hub), or `None` for anonymous pulls. A missing config file means anonymous.
pub fn lookup(config_path: &Path, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let text = match std::fs::read_to_string(config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(config_path, e.to_string())),
    };
    let config: ConfigFile =
        serde_json::from_str(&text).map_err(|e| config_error(config_path, e.to_string()))?;
    let key = if registry == "docker.io" {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    if let Some(helper) = config.cred_helpers.get(key).or(config.creds_store.as_ref()) {
        return run_helper(helper, key);
    }
    let entry = config
        .auths
        .iter()
        .find(|(name, _)| registry_of_auth_key(name) == registry_of_auth_key(key));
    match entry.and_then(|(_, entry)| entry.auth.as_deref()) {
        Some(auth) => decode_auth(auth)
            .map(Some)
            .map_err(|message| config_error(config_path, message)),
        None => Ok(None),
    }
}

/// `https://reg:5000/v1/` and `reg:5000` name the same registry.
fn registry_of_auth_key(key: &str) -> &str {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    if host == "index.docker.io" || host == "registry-1.docker.io" {
        "docker.io"
    } else {
        host
    }
}

fn decode_auth(auth: &str) -> Result<Credential, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "an `auth` entry is not valid base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "an `auth` entry is not UTF-8".to_string())?;
    let (username, secret) = text
        .split_once(':')
        .ok_or("an `auth` entry is not user:password")?;
    Ok(Credential {
        username: username.to_string(),
        secret: secret.to_string(),
    })
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let fail = |message: String| CredentialError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(registry.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // Helpers say "credentials not found in native keychain": that means anonymous.
        if stdout.contains("not found")
            || String::from_utf8_lossy(&output.stderr).contains("not found")
        {
            return Ok(None);
        }
        return Err(fail(format!("exit status {}", output.status)));
    }
    let answer: HelperAnswer =
        serde_json::from_str(&stdout).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    Ok(Some(Credential {
        username: answer.username,
        secret: answer.secret,
    }))
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

    #[test]
    fn auths_entries_decode_and_match_by_host() {
        // "alice:s3cret" and "bob:pw"
        let (_dir, path) = config(
            r#"{"auths":{"reg.example:5000":{"auth":"YWxpY2U6czNjcmV0"},"https://index.docker.io/v1/":{"auth":"Ym9iOnB3"}}}"#,
        );
        let alice = lookup(&path, "reg.example:5000").unwrap().unwrap();
        assert_eq!(
            (alice.username.as_str(), alice.secret.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!(lookup(&path, "docker.io").unwrap().unwrap().username, "bob");
        assert_eq!(lookup(&path, "other.example").unwrap(), None);
        assert!(!format!("{alice:?}").contains("s3cret"));
    }

    #[test]
    fn missing_file_is_anonymous_and_broken_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            lookup(&dir.path().join("none.json"), "docker.io").unwrap(),
            None
        );
        let (_dir, path) = config("{not json");
        let err = lookup(&path, "docker.io").unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let (_dir, path) = config(r#"{"credsStore":"dropship-test-none"}"#);
        let err = lookup(&path, "reg.example").unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-dropship-test-none"),
            "{err}"
        );
    }
}
