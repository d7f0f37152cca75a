//! Where vault passwords come from, gathered as Ansible's CLI does (`setup_vault_secrets`): each
//! `--vault-id [LABEL@]SOURCE`, then each `--vault-password-file FILE` and
//! `ANSIBLE_VAULT_PASSWORD_FILE`, then `--ask-vault-pass`.
//! A SOURCE is `prompt`, a file holding the password, or an executable printing it on stdout
//! (one named `*-client` is asked with `--vault-id LABEL`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{DEFAULT_VAULT_ID, VaultSecrets, is_encrypted};
use crate::inventory::InventoryError;
use crate::inventory::vars_files::python_extension;

/// Ansible's `vault_password_file` setting, one more password file.
pub const PASSWORD_FILE_ENV: &str = "ANSIBLE_VAULT_PASSWORD_FILE";
/// What Python's `bytes.strip()` removes.
const WHITESPACE: &[u8] = b" \t\n\r\x0b\x0c";
/// A client script's exit code for "no password for that vault id".
const CLIENT_UNKNOWN_ID: i32 = 2;

enum Source {
    /// Ask on the terminal with this prompt.
    Prompt(String),
    File(PathBuf),
}

impl VaultSecrets {
    /// Reads (or asks for) every password the flags and `ANSIBLE_VAULT_PASSWORD_FILE` name, in
    /// Ansible's order. Files are read, scripts run and the prompt shown now, whether or not a
    /// vaulted value is needed later.
    pub fn load(
        vault_ids: &[String],
        password_files: &[PathBuf],
        ask_vault_pass: bool,
    ) -> Result<VaultSecrets, InventoryError> {
        let from_env = std::env::var_os(PASSWORD_FILE_ENV)
            .filter(|file| !file.is_empty())
            .map(PathBuf::from);
        let files: Vec<PathBuf> = password_files.iter().cloned().chain(from_env).collect();
        VaultSecrets::gather(vault_ids, &files, ask_vault_pass)
    }

    fn gather(
        vault_ids: &[String],
        password_files: &[PathBuf],
        ask_vault_pass: bool,
    ) -> Result<VaultSecrets, InventoryError> {
        let mut sources: Vec<(String, Source)> =
            vault_ids.iter().map(|id| parse_vault_id(id)).collect();
        sources.extend(
            password_files
                .iter()
                .map(|file| (DEFAULT_VAULT_ID.to_string(), Source::File(file.clone()))),
        );
        if ask_vault_pass {
            let prompt = Source::Prompt("Vault password: ".into());
            sources.push((DEFAULT_VAULT_ID.to_string(), prompt));
        }
        let mut secrets = VaultSecrets::default();
        for (label, source) in sources {
            let password = match &source {
                Source::Prompt(prompt) => ask(prompt)?,
                Source::File(path) => read_password_file(path, &label, &secrets)?,
            };
            secrets.add(label, password);
        }
        Ok(secrets)
    }
}

/// `[LABEL@]SOURCE` like Ansible's `split_vault_id`; no label (or an empty one) is `default`.
fn parse_vault_id(id: &str) -> (String, Source) {
    let (label, source) = match id.split_once('@') {
        Some((label, source)) if !label.is_empty() => (label, source),
        Some((_, source)) => (DEFAULT_VAULT_ID, source),
        None => (DEFAULT_VAULT_ID, id),
    };
    let source = match source {
        "prompt" => Source::Prompt(format!("Vault password ({label}): ")),
        "prompt_ask_vault_pass" => Source::Prompt("Vault password: ".into()),
        path => Source::File(PathBuf::from(path)),
    };
    (label.to_string(), source)
}

fn failure(from: String, message: impl Into<String>) -> InventoryError {
    InventoryError::VaultPassword {
        from,
        message: message.into(),
    }
}

fn ask(prompt: &str) -> Result<Vec<u8>, InventoryError> {
    let from = || "the terminal".to_string();
    let answer = crate::tty::prompt_hidden(prompt)
        .map_err(|e| failure(from(), format!("cannot ask for it ({e})")))?;
    non_empty(strip(answer.as_bytes(), WHITESPACE), from())
}

/// A password file (surrounding whitespace dropped), or the output of an executable one.
fn read_password_file(
    path: &Path,
    label: &str,
    known: &VaultSecrets,
) -> Result<Vec<u8>, InventoryError> {
    // Absolute, so that a bare `pw.sh` runs from here rather than from $PATH.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let from = || format!("file {}", path.display());
    let metadata = std::fs::metadata(&path).map_err(|e| failure(from(), e.to_string()))?;
    if metadata.is_dir() {
        return Err(failure(from(), "is a directory"));
    }
    if metadata.permissions().mode() & 0o111 != 0 {
        return run_script(&path, label);
    }
    let data = std::fs::read(&path).map_err(|e| failure(from(), e.to_string()))?;
    let data = strip(&data, WHITESPACE);
    // Like Ansible, a password file may itself be vaulted with a password given before it.
    let data = if is_encrypted(data) {
        known
            .decrypt(data)
            .map_err(|e| failure(from(), e.to_string()))?
    } else {
        data.to_vec()
    };
    non_empty(strip(&data, b"\r\n"), from())
}

fn run_script(path: &Path, label: &str) -> Result<Vec<u8>, InventoryError> {
    let from = || format!("script {}", path.display());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let client = name[..name.len() - python_extension(name).len()].ends_with("-client");
    let mut command = Command::new(path);
    // A plain script keeps the terminal (stdin, stderr) so that it can prompt; a client
    // script's stderr explains a failure.
    command.stdin(Stdio::inherit()).stdout(Stdio::piped());
    if client {
        command.args(["--vault-id", label]).stderr(Stdio::piped());
    } else {
        command.stderr(Stdio::inherit());
    }
    let output = command
        .output()
        .map_err(|e| failure(from(), format!("cannot run it ({e})")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    match output.status.code() {
        Some(0) => non_empty(strip(&output.stdout, b"\r\n"), from()),
        Some(CLIENT_UNKNOWN_ID) if client => Err(failure(
            from(),
            format!("has no password for vault id '{label}': {stderr}"),
        )),
        _ if client => Err(failure(
            from(),
            format!("failed ({}): {stderr}", output.status),
        )),
        _ => Err(failure(from(), format!("failed ({})", output.status))),
    }
}

fn non_empty(password: &[u8], from: String) -> Result<Vec<u8>, InventoryError> {
    if password.is_empty() {
        return Err(failure(from, "the password is empty"));
    }
    Ok(password.to_vec())
}

/// Python's `bytes.strip(chars)`.
fn strip<'a>(data: &'a [u8], chars: &[u8]) -> &'a [u8] {
    let start = data
        .iter()
        .position(|b| !chars.contains(b))
        .unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !chars.contains(b))
        .map_or(start, |i| i + 1);
    &data[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords(secrets: &VaultSecrets) -> Vec<(String, String)> {
        secrets
            .secrets
            .iter()
            .map(|s| {
                let password = String::from_utf8(s.password.clone()).unwrap();
                (s.label.clone(), password)
            })
            .collect()
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn files_scripts_and_client_scripts_in_ansible_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "pw.txt", "  fixture-password \r\n\n", 0o600);
        let script = write(
            dir.path(),
            "pw.sh",
            "#!/bin/sh\necho ' from-script'\n",
            0o700,
        );
        let client = write(
            dir.path(),
            "vault-client.sh",
            "#!/bin/sh\n[ \"$1 $2\" = '--vault-id prod' ] && echo \"for-$2\"\n",
            0o700,
        );
        let ids = [
            format!("prod@{}", client.display()),
            format!("@{}", script.display()),
        ];
        let secrets = VaultSecrets::gather(&ids, &[file], false).unwrap();
        assert_eq!(
            passwords(&secrets),
            [
                ("prod".into(), "for-prod".into()),
                ("default".into(), " from-script".into()),
                ("default".into(), "fixture-password".into()),
            ]
        );
    }

    #[test]
    fn a_vaulted_password_file_is_opened_with_an_earlier_password() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "pw.txt", "fixture-password\n", 0o600);
        // "prod-secret", encrypted with "fixture-password" by ansible-vault encrypt_string.
        let vaulted = write(
            dir.path(),
            "prod.vault",
            "$ANSIBLE_VAULT;1.1;AES256
63356534613066346262666461306166353733626462316637356439353536316165666232653939
3032626539643630626264636565313035653334373631370a303435336265333433336463313563
35383634383030363732363462323633313931646239653830313661336332643562336633663738
6335303133356133370a623964356532353464653965626633306236343361626630306433336337
3064
",
            0o600,
        );
        let ids = [
            format!("{}", first.display()),
            format!("prod@{}", vaulted.display()),
        ];
        let secrets = VaultSecrets::gather(&ids, &[], false).unwrap();
        assert_eq!(
            passwords(&secrets)[1],
            ("prod".into(), "prod-secret".into())
        );
    }

    #[test]
    fn unusable_sources_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let load = |files: &[PathBuf]| {
            VaultSecrets::gather(&[], files, false)
                .unwrap_err()
                .to_string()
        };
        let missing = dir.path().join("absent");
        let err = load(std::slice::from_ref(&missing));
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("No such file"),
            "{err}"
        );
        let empty = write(dir.path(), "empty", " \n", 0o600);
        assert!(load(&[empty]).contains("empty"));
        let failing = write(dir.path(), "fail.sh", "#!/bin/sh\nexit 3\n", 0o700);
        let err = load(std::slice::from_ref(&failing));
        assert!(
            err.contains(&format!("script {}", failing.display())) && err.contains("3"),
            "{err}"
        );
        let client = write(
            dir.path(),
            "my-client",
            "#!/bin/sh\necho 'no such id' >&2\nexit 2\n",
            0o700,
        );
        let err = load(&[client]);
        assert!(
            err.contains("no password for vault id 'default'") && err.contains("no such id"),
            "{err}"
        );
        assert!(load(&[dir.path().to_path_buf()]).contains("is a directory"));
    }
}
