//! One host's variables as typed settings: templates rendered, Ansible's booleans, errors that
//! name the host and the variable. Every reader of a setting (connection, download settings,
//! dropship's own variables) goes through here, so all of them read a value the same way.

use std::path::PathBuf;

use serde_json::Value;

use super::{Inventory, InventoryError, jinja};

/// The merged variables of one host, read as settings.
pub struct HostVars<'a> {
    inventory: &'a Inventory,
    host: &'a str,
}

impl<'a> HostVars<'a> {
    /// `host` must be an inventory host; a variable of an unknown host reads as unset.
    pub fn new(inventory: &'a Inventory, host: &'a str) -> Self {
        HostVars { inventory, host }
    }

    pub fn host(&self) -> &str {
        self.host
    }

    /// An error about variable `name` of this host.
    pub fn error(&self, name: &str, message: impl std::fmt::Display) -> InventoryError {
        InventoryError::Host {
            host: self.host.to_string(),
            message: format!("{name}: {message}"),
        }
    }

    /// The variable as Ansible would use it: strings rendered (also inside lists and maps),
    /// `!unsafe` text kept as written, `!vault` values decrypted.
    pub fn get(&self, name: &str) -> Result<Option<Value>, InventoryError> {
        match self.inventory.host_var(self.host, name) {
            None => Ok(None),
            Some(value) => self
                .render(&value)
                .map(Some)
                .map_err(|e| self.error(name, e)),
        }
    }

    fn render(&self, value: &Value) -> Result<Value, String> {
        if let Some(text) = self
            .inventory
            .plain_text(value)
            .map_err(|e| e.to_string())?
        {
            return Ok(Value::String(text));
        }
        Ok(match value {
            Value::String(s) => Value::String(jinja::render(self.inventory, self.host, s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.render(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The first of `names` that is set (earlier names take precedence), rendered, with the
    /// name it was found under.
    pub fn first<'n>(&self, names: &[&'n str]) -> Result<Option<(&'n str, Value)>, InventoryError> {
        for name in names {
            if let Some(value) = self.get(name)? {
                return Ok(Some((name, value)));
            }
        }
        Ok(None)
    }

    /// A scalar as text (numbers too, as Ansible's string conversion gives them).
    pub fn string(&self, names: &[&str]) -> Result<Option<String>, InventoryError> {
        match self.first(names)? {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((_, Value::Number(n))) => Ok(Some(n.to_string())),
            Some((name, other)) => Err(self.error(name, format!("must be a string, got {other}"))),
        }
    }

    /// A path (`~/` expanded); an empty string reads as unset.
    pub fn path(&self, names: &[&str]) -> Result<Option<PathBuf>, InventoryError> {
        Ok(self
            .string(names)?
            .filter(|s| !s.is_empty())
            .map(|s| expand_home(&s)))
    }

    /// A boolean as Ansible's `| bool` reads it.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, InventoryError> {
        match self.get(name)? {
            None | Some(Value::Null) => Ok(None),
            Some(value) => ansible_bool(&value).map(Some).ok_or_else(|| {
                self.error(
                    name,
                    format!("must be a boolean (true/false, yes/no), got {value}"),
                )
            }),
        }
    }

    /// A non-negative integer (a number, or a string holding one).
    pub fn uint(&self, name: &str) -> Result<Option<u32>, InventoryError> {
        let Some(value) = self.get(name)?.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let n = match &value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.error(name, format!("must be a non-negative integer, got {value}")))
    }
}

/// Ansible's boolean reading (`| bool`): yes/no, true/false, on/off, 1/0, y/n, t/f.
pub fn ansible_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `~/x` under the home directory, as OpenSSH and Ansible expand key and file paths.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::{
        VAULTED_CACHE_DIR, VAULTED_DEPLOY, VAULTED_YES, fixture_secrets, load_files as load,
        load_files_with, vault_yaml,
    };

    #[test]
    fn values_are_rendered_typed_and_errors_name_host_and_variable() {
        let (_d, inv) = load(&[
            (
                "hosts.ini",
                "[all]\nh1 flag=yes n='7' port=22 bad=many\n[all:vars]\nbase=/opt\n",
            ),
            (
                "group_vars/all.yml",
                "dir: '{{ base }}/rel'\nlist: ['{{ base }}/a', {k: '{{ base }}'}]\nraw: !unsafe '{{ base }}'\nempty: ''\n",
            ),
        ]);
        let vars = HostVars::new(&inv, "h1");
        assert_eq!(vars.bool("flag").unwrap(), Some(true));
        assert_eq!(vars.uint("n").unwrap(), Some(7));
        assert_eq!(vars.string(&["port"]).unwrap().as_deref(), Some("22"));
        assert_eq!(
            vars.path(&["dir"]).unwrap(),
            Some(PathBuf::from("/opt/rel"))
        );
        assert_eq!(vars.path(&["empty"]).unwrap(), None);
        assert_eq!(
            vars.get("list").unwrap(),
            Some(serde_json::json!(["/opt/a", {"k": "/opt"}]))
        );
        assert_eq!(
            vars.string(&["raw"]).unwrap().as_deref(),
            Some("{{ base }}")
        );
        assert_eq!(
            vars.first(&["nope", "n"]).unwrap().map(|(name, _)| name),
            Some("n")
        );
        let err = vars.uint("bad").unwrap_err().to_string();
        assert!(
            err.contains("h1") && err.contains("bad") && err.contains("many"),
            "{err}"
        );
        let err = vars.bool("bad").unwrap_err().to_string();
        assert!(err.contains("boolean"), "{err}");
    }

    #[test]
    fn ansible_booleans() {
        for yes in ["yes", "True", " on ", "1", "t", "y"] {
            assert_eq!(
                ansible_bool(&Value::String(yes.into())),
                Some(true),
                "{yes}"
            );
        }
        assert_eq!(ansible_bool(&serde_json::json!(0)), Some(false));
        assert_eq!(ansible_bool(&serde_json::json!("maybe")), None);
        assert_eq!(ansible_bool(&serde_json::json!([])), None);
    }

    #[test]
    fn vaulted_values_are_decrypted_only_with_the_password() {
        let vars = vault_yaml("vault_user", VAULTED_DEPLOY)
            + &vault_yaml("flag", VAULTED_YES)
            + &vault_yaml("cache_dir", VAULTED_CACHE_DIR);
        let files = [
            ("hosts.ini", "[all]\nh1 user='{{ vault_user }}'\n"),
            ("group_vars/all.yml", vars.as_str()),
        ];
        let (_d, inv) = load_files_with(&files, fixture_secrets());
        let h1 = HostVars::new(&inv, "h1");
        assert_eq!(h1.string(&["user"]).unwrap().as_deref(), Some("deploy"));
        assert_eq!(h1.bool("flag").unwrap(), Some(true));
        assert_eq!(
            h1.path(&["cache_dir"]).unwrap(),
            Some(PathBuf::from("/var/cache/vaulted"))
        );
        let (_d, inv) = load(&files);
        let err = HostVars::new(&inv, "h1")
            .string(&["user"])
            .unwrap_err()
            .to_string();
        for part in [
            "host 'h1'",
            "user: 'vault_user' of host 'h1': encrypted with Ansible Vault in ",
            "group_vars/all.yml",
            "no vault password given",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
