//! Ansible inventories read exactly as Ansible reads them.
//!
//! `Inventory::load` takes the `-i` sources (INI or YAML files, directories of them) and gives
//! the hosts in Ansible's order, group membership, each host's merged variables with Ansible's
//! precedence, and `--limit` pattern selection. `host_vars` reads one host's variables as typed
//! settings, and `connection` turns them into how to reach the host over SSH.
//!
//! Ansible Vault: inline `!vault` values load without a password and stay opaque, as
//! `ansible-inventory` shows them; `Inventory::plain_text` decrypts one only when a setting
//! dropship uses needs it. Whole vault-encrypted files need the password while loading
//! (`Inventory::load_with`), as in Ansible.

pub mod connection;
pub mod extra_vars;
pub mod host_vars;
mod hostpattern;
mod ini;
mod jinja;
mod model;
mod pattern;
mod pyliteral;
pub mod render;
mod shlex;
mod sources;
mod ssh_args;
#[cfg(test)]
pub(crate) mod testing;
mod vars_files;
pub mod vault;
mod yaml_inventory;
mod yaml_load;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use model::InventoryData;
pub use model::Vars;
use vault::{InlineValues, VaultError, VaultSecrets, VaultedValueError};
use yaml_load::{LoadError, Yaml};

/// Everything that can be wrong with an inventory source or a question asked of it.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}: encrypted with Ansible Vault: {reason}", path.display())]
    Vault { path: PathBuf, reason: VaultError },
    #[error("vault password from {from}: {message}")]
    VaultPassword { from: String, message: String },
    #[error("{}: inventory source does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no inventory given: pass one with -i PATH (a file or a directory)")]
    NoSources,
    #[error("host pattern '{pattern}': {message}")]
    Pattern { pattern: String, message: String },
    #[error("host '{host}': {message}")]
    Host { host: String, message: String },
    #[error("-e '{value}': {message}")]
    ExtraVars { value: String, message: String },
}

/// Variables Ansible never shows in `ansible-inventory` output (its INTERNAL_STATIC_VARS).
const INTERNAL_VARS: &[&str] = &[
    "ansible_async_path",
    "ansible_collection_name",
    "ansible_config_file",
    "ansible_dependent_role_names",
    "ansible_diff_mode",
    "ansible_facts",
    "ansible_forks",
    "ansible_inventory_sources",
    "ansible_limit",
    "ansible_play_batch",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_role_names",
    "ansible_playbook_python",
    "ansible_role_name",
    "ansible_role_names",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "inventory_dir",
    "inventory_file",
    "inventory_hostname",
    "inventory_hostname_short",
    "groups",
    "group_names",
    "hostvars",
    "playbook_dir",
    "play_hosts",
    "role_name",
    "role_names",
    "role_path",
    "role_uuid",
];

/// Variables from `group_vars/` and `host_vars/` next to one `-i` source.
#[derive(Debug, Default)]
struct SourceVars {
    groups: HashMap<String, Vars>,
    hosts: HashMap<String, Vars>,
}

/// A loaded inventory: the group graph plus the variable files found next to its sources.
#[derive(Debug)]
pub struct Inventory {
    data: InventoryData,
    source_vars: Vec<SourceVars>,
    vaulted: InlineValues,
    /// `-e`: above everything else, as in Ansible.
    extra_vars: Vars,
}

impl Inventory {
    /// Reads every source in order (files, or directories of files) like `ansible -i a -i b`,
    /// without vault passwords: a vault-encrypted file is an error, inline `!vault` values
    /// stay opaque.
    pub fn load(sources: &[PathBuf]) -> Result<Inventory, InventoryError> {
        Inventory::load_with(sources, VaultSecrets::default())
    }

    /// Like `load`, decrypting vault-encrypted files with `secrets`; the inventory keeps them to
    /// decrypt the inline `!vault` values that `plain_text` is asked for.
    pub fn load_with(
        sources: &[PathBuf],
        secrets: VaultSecrets,
    ) -> Result<Inventory, InventoryError> {
        if sources.is_empty() {
            return Err(InventoryError::NoSources);
        }
        let mut reader = Reader {
            secrets: &secrets,
            vault_origins: HashMap::new(),
        };
        let mut data = InventoryData::default();
        for source in sources {
            sources::parse_source(&mut reader, &mut data, source)?;
        }
        data.reconcile().map_err(|e| InventoryError::Invalid {
            path: sources[0].clone(),
            message: e.to_string(),
        })?;
        for host in data.hosts.keys().filter(|h| data.groups.contains_key(*h)) {
            // Ansible's words; in an INI file such a host's inline variables became the group's,
            // which group_vars/all then overrides (inventory/sample's bastion).
            crate::logging::warn_once(format!("Found both group and host with same name: {host}"));
        }
        let mut source_vars = Vec::new();
        for source in sources {
            // Ansible looks next to a file source, and inside a directory source.
            let dir = if source.is_dir() {
                source.clone()
            } else {
                source.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let mut found = SourceVars::default();
            for group in data.groups.keys() {
                if let Some(vars) = vars_files::load(&mut reader, &dir, "group_vars", group)? {
                    found.groups.insert(group.clone(), vars);
                }
            }
            for host in data.hosts.keys() {
                if let Some(vars) = vars_files::load(&mut reader, &dir, "host_vars", host)? {
                    found.hosts.insert(host.clone(), vars);
                }
            }
            source_vars.push(found);
        }
        let origins = reader.vault_origins;
        let vaulted = InlineValues::new(secrets, origins);
        Ok(Inventory {
            data,
            source_vars,
            vaulted,
            extra_vars: Vars::new(),
        })
    }

    /// The inventory with `-e` extra variables over every host's own (see `extra_vars`).
    pub fn with_extra_vars(mut self, vars: Vars) -> Inventory {
        self.extra_vars = vars;
        self
    }

    /// All host names in inventory order (the order hosts were first defined).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.data.hosts.keys().map(String::as_str)
    }

    pub fn has_host(&self, name: &str) -> bool {
        self.data.hosts.contains_key(name)
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.data.groups.contains_key(name)
    }

    /// The hosts of `group` and its descendant groups in Ansible's order; empty if no such group.
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        self.data.group_hosts(group)
    }

    /// The merged variables of `host`, as `ansible-inventory --host` shows them.
    ///
    /// Precedence, lowest first: `all` inventory vars, other groups' inventory vars (by depth,
    /// `ansible_group_priority`, name), `group_vars/all`, `group_vars/<group>` (each source in
    /// `-i` order), the host's inventory vars, `host_vars/<host>`.
    pub fn host_vars(&self, host: &str) -> Option<Vars> {
        let mut vars = Vars::new();
        for layer in self.var_layers(host)? {
            for (k, v) in layer {
                vars.insert(k.clone(), v.clone());
            }
        }
        vars.retain(|k, _| !INTERNAL_VARS.contains(&k.as_str()));
        Some(vars)
    }

    /// One merged variable of `host`, without merging the others.
    pub fn host_var(&self, host: &str, name: &str) -> Option<Value> {
        if INTERNAL_VARS.contains(&name) {
            return None;
        }
        self.var_layers(host)?
            .iter()
            .rev()
            .find_map(|layer| layer.get(name).cloned())
    }

    /// The variable sets that apply to `host`, lowest precedence first.
    fn var_layers(&self, host: &str) -> Option<Vec<&Vars>> {
        let entry = self.data.hosts.get(host)?;
        let groups = self.data.sorted_host_groups(host);
        let mut layers = vec![&self.data.groups["all"].vars];
        layers.extend(groups.iter().map(|g| &g.vars));
        layers.extend(self.source_vars.iter().filter_map(|s| s.groups.get("all")));
        for source in &self.source_vars {
            layers.extend(groups.iter().filter_map(|g| source.groups.get(&g.name)));
        }
        layers.push(&entry.vars);
        layers.extend(self.source_vars.iter().filter_map(|s| s.hosts.get(host)));
        layers.push(&self.extra_vars);
        Some(layers)
    }

    /// The hosts matching an Ansible host pattern (`--limit`), in Ansible's order.
    /// A part of the pattern that matches no host or group is an error naming it.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, InventoryError> {
        pattern::select(&self.data, pattern)
    }

    /// The hosts of a `--limit`: a pattern, whose `@FILE` parts read a pattern per line of
    /// FILE (Ansible's retry files).
    pub fn limit(&self, subset: &str) -> Result<Vec<String>, InventoryError> {
        pattern::limit(&self.data, subset)
    }

    /// The text of a value Ansible never templates: an `!unsafe` string as written, an inline
    /// `!vault` value decrypted (with the secrets given to `load_with`). `None` for any other
    /// value, which the caller reads (and renders) itself.
    pub fn plain_text(&self, value: &Value) -> Result<Option<String>, VaultedValueError> {
        if let Some(text) = unsafe_text(value) {
            return Ok(Some(text.to_string()));
        }
        match vault_text(value) {
            Some(ciphertext) => self.vaulted.plaintext(ciphertext).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn data(&self) -> &InventoryData {
        &self.data
    }
}

/// How Ansible shows a string it will never template (`!unsafe`, bytes literals).
const UNSAFE_KEY: &str = "__ansible_unsafe";

fn unsafe_value(text: &str) -> Value {
    serde_json::json!({ UNSAFE_KEY: text })
}

/// The text of an `!unsafe` value (`{"__ansible_unsafe": text}`), which must not be templated.
pub fn unsafe_text(value: &Value) -> Option<&str> {
    match value.as_object()? {
        map if map.len() == 1 => map.get(UNSAFE_KEY)?.as_str(),
        _ => None,
    }
}

/// How Ansible shows an inline `!vault` value it has not decrypted.
const VAULT_KEY: &str = "__ansible_vault";

fn vault_value(ciphertext: &str) -> Value {
    serde_json::json!({ VAULT_KEY: ciphertext })
}

/// The ciphertext of an inline `!vault` value (`{"__ansible_vault": ciphertext}`).
fn vault_text(value: &Value) -> Option<&str> {
    match value.as_object()? {
        map if map.len() == 1 => map.get(VAULT_KEY)?.as_str(),
        _ => None,
    }
}

/// Reads the files of an inventory: decrypts whole vault-encrypted files, and notes the file
/// of each inline `!vault` value for messages.
struct Reader<'a> {
    secrets: &'a VaultSecrets,
    vault_origins: HashMap<String, PathBuf>,
}

impl Reader<'_> {
    /// A source or vars file as text, decrypted when it is vault-encrypted.
    fn text(&self, path: &Path) -> Result<String, InventoryError> {
        let bytes = std::fs::read(path).map_err(|source| InventoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = if vault::is_encrypted(&bytes) {
            self.secrets
                .decrypt(&bytes)
                .map_err(|reason| InventoryError::Vault {
                    path: path.to_path_buf(),
                    reason,
                })?
        } else {
            bytes
        };
        utf8(path, bytes)
    }

    /// The YAML (or JSON) document of `text`, read from `path`.
    fn yaml(&mut self, path: &Path, text: &str) -> Result<Option<Yaml>, LoadError> {
        let document = yaml_load::load(text)?;
        if let Some(document) = &document {
            document.for_each_vaulted(&mut |ciphertext| {
                self.vault_origins
                    .entry(ciphertext.to_string())
                    .or_insert_with(|| path.to_path_buf());
            });
        }
        Ok(document)
    }
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, InventoryError> {
    String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        InventoryError::Parse {
            path: path.to_path_buf(),
            line: Some(line),
            message: "not valid UTF-8".into(),
        }
    })
}
