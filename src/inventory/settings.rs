//! Kubespray's download variables, as our users already write them in their inventories.

use std::path::PathBuf;

use serde_json::Value;

use super::{Inventory, InventoryError, connection, jinja};

/// The download role's settings with Kubespray's defaults; CLI flags override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSettings {
    /// `download_run_once` (default false).
    pub run_once: bool,
    /// `download_localhost` (default false): pull on the machine running dropship.
    pub localhost: bool,
    /// `download_force_cache` (default false).
    pub force_cache: bool,
    /// `download_always_pull` (default false): pull even when the delegate holds the image.
    pub always_pull: bool,
    /// `download_cache_dir` (default /tmp/kubespray_cache); `None` when the inventory does not set it.
    pub cache_dir: Option<PathBuf>,
    /// `download_keep_remote_cache` (default false).
    pub keep_remote_cache: bool,
    /// `download_compress` gzip level 1-9 (default 1).
    pub compress: u32,
    /// `download_retries` attempts (default 4).
    pub retries: u32,
    /// `retry_stagger` seconds (default 5): between attempts sleep rand(0..stagger) + 3 s.
    pub retry_stagger: u64,
    /// `local_release_dir` on nodes (default /tmp/releases).
    pub local_release_dir: PathBuf,
    /// The download delegate: first host of `kube_control_plane` (legacy `kube-master`),
    /// `None` when `download_localhost` is set or no such group exists.
    pub delegate: Option<String>,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            run_once: false,
            localhost: false,
            force_cache: false,
            always_pull: false,
            cache_dir: None,
            keep_remote_cache: false,
            compress: 1,
            retries: 4,
            retry_stagger: 5,
            local_release_dir: PathBuf::from("/tmp/releases"),
            delegate: None,
        }
    }
}

impl DownloadSettings {
    /// Kubespray's download variables as the first host of the play sees them (the first host of
    /// `all` that is neither the bastion nor `ansible_connection=local`), with its defaults.
    pub fn from_inventory(inventory: &Inventory) -> Result<DownloadSettings, InventoryError> {
        let defaults = DownloadSettings::default();
        let Some(host) = play_host(inventory)? else {
            return Ok(defaults);
        };
        let vars = TypedVars {
            inventory,
            host: &host,
        };
        let localhost = vars
            .bool("download_localhost")?
            .unwrap_or(defaults.localhost);
        let delegate = if localhost {
            None
        } else {
            ["kube_control_plane", "kube-master"]
                .iter()
                .find_map(|group| inventory.group_hosts(group).into_iter().next())
        };
        Ok(DownloadSettings {
            run_once: vars.bool("download_run_once")?.unwrap_or(defaults.run_once),
            localhost,
            force_cache: vars
                .bool("download_force_cache")?
                .unwrap_or(defaults.force_cache),
            always_pull: vars
                .bool("download_always_pull")?
                .unwrap_or(defaults.always_pull),
            cache_dir: vars.string("download_cache_dir")?.map(PathBuf::from),
            keep_remote_cache: vars
                .bool("download_keep_remote_cache")?
                .unwrap_or(defaults.keep_remote_cache),
            compress: vars.int("download_compress")?.unwrap_or(defaults.compress),
            retries: vars.int("download_retries")?.unwrap_or(defaults.retries),
            retry_stagger: vars
                .int("retry_stagger")?
                .map(u64::from)
                .unwrap_or(defaults.retry_stagger),
            local_release_dir: vars
                .string("local_release_dir")?
                .map(PathBuf::from)
                .unwrap_or(defaults.local_release_dir),
            delegate,
        })
    }
}

/// The `dropship_images` list of the play's first host (empty when unset).
pub fn images_from_inventory(inventory: &Inventory) -> Result<Vec<String>, InventoryError> {
    let Some(host) = play_host(inventory)? else {
        return Ok(Vec::new());
    };
    let vars = TypedVars {
        inventory,
        host: &host,
    };
    match inventory.host_var(&host, "dropship_images") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => {
                    jinja::render(inventory, &host, s).map_err(|e| vars.error("dropship_images", e))
                }
                other => Err(vars.error(
                    "dropship_images",
                    format!("entries must be image references, got {other}"),
                )),
            })
            .collect(),
        Some(other) => Err(vars.error(
            "dropship_images",
            format!("must be a list of image references, got {other}"),
        )),
    }
}

/// The host whose variables Kubespray's download role sees first.
fn play_host(inventory: &Inventory) -> Result<Option<String>, InventoryError> {
    let bastion = connection::bastion_host(inventory);
    for host in inventory.group_hosts("all") {
        if Some(&host) == bastion.as_ref() {
            continue;
        }
        let local = match inventory.host_var(&host, "ansible_connection") {
            Some(Value::String(c)) => c == "local",
            _ => false,
        };
        if !local {
            return Ok(Some(host));
        }
    }
    Ok(None)
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

/// One host's variables read as typed settings; errors name the variable and the host.
struct TypedVars<'a> {
    inventory: &'a Inventory,
    host: &'a str,
}

impl TypedVars<'_> {
    fn error(&self, name: &str, message: String) -> InventoryError {
        InventoryError::Host {
            host: self.host.to_string(),
            message: format!("{name}: {message}"),
        }
    }

    /// The variable with its templates rendered when it is a string.
    fn get(&self, name: &str) -> Result<Option<Value>, InventoryError> {
        let value = self.inventory.host_var(self.host, name);
        if let Some(text) = value.as_ref().and_then(super::unsafe_text) {
            return Ok(Some(Value::String(text.to_string())));
        }
        match value {
            Some(Value::String(s)) => jinja::render(self.inventory, self.host, &s)
                .map(|s| Some(Value::String(s)))
                .map_err(|e| self.error(name, e)),
            other => Ok(other),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, InventoryError> {
        self.get(name)?
            .map(|v| {
                ansible_bool(&v).ok_or_else(|| {
                    self.error(
                        name,
                        format!("must be a boolean (true/false, yes/no), got {v}"),
                    )
                })
            })
            .transpose()
    }

    fn int(&self, name: &str) -> Result<Option<u32>, InventoryError> {
        self.get(name)?
            .map(|v| {
                let n = match &v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                    self.error(name, format!("must be a non-negative integer, got {v}"))
                })
            })
            .transpose()
    }

    fn string(&self, name: &str) -> Result<Option<String>, InventoryError> {
        match self.get(name)? {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(other) => Err(self.error(name, format!("must be a path, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Inventory) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let inventory = Inventory::load(&[dir.path().join(files[0].0)]).unwrap();
        (dir, inventory)
    }

    #[test]
    fn kubespray_defaults_and_delegate() {
        let (_d, inv) = load(&[(
            "hosts.ini",
            "[kube_control_plane]\ncp1\ncp2\n[kube_node]\nn1\n",
        )]);
        let s = DownloadSettings::from_inventory(&inv).unwrap();
        assert_eq!(
            s,
            DownloadSettings {
                delegate: Some("cp1".into()),
                ..DownloadSettings::default()
            }
        );
    }

    #[test]
    fn typed_from_group_vars_with_legacy_group() {
        let (_d, inv) = load(&[
            (
                "hosts.ini",
                "[bastion]\nbastion\n[kube-master]\nm1\n[k8s-cluster:children]\nkube-master\n",
            ),
            (
                "group_vars/k8s-cluster.yml",
                "download_run_once: 'yes'\ndownload_retries: '7'\nretry_stagger: 2\ndownload_cache_dir: /var/cache/ks\nlocal_release_dir: '{{ base }}/rel'\nbase: /opt\ndropship_images: [a:1, 'b:{{ base }}']\n",
            ),
        ]);
        let s = DownloadSettings::from_inventory(&inv).unwrap();
        assert!(s.run_once);
        assert_eq!((s.retries, s.retry_stagger), (7, 2));
        assert_eq!(s.cache_dir, Some(PathBuf::from("/var/cache/ks")));
        assert_eq!(s.local_release_dir, PathBuf::from("/opt/rel"));
        assert_eq!(s.delegate.as_deref(), Some("m1"));
        assert_eq!(images_from_inventory(&inv).unwrap(), ["a:1", "b:/opt"]);
    }

    #[test]
    fn localhost_means_no_delegate_and_bad_types_name_variable_and_host() {
        let (_d, inv) = load(&[(
            "hosts.ini",
            "[kube_control_plane]\ncp1 download_localhost=true\n",
        )]);
        assert_eq!(
            DownloadSettings::from_inventory(&inv).unwrap().delegate,
            None
        );
        let (_d, inv) = load(&[(
            "hosts.ini",
            "[kube_control_plane]\ncp1 download_retries=many\n",
        )]);
        let err = DownloadSettings::from_inventory(&inv)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cp1") && err.contains("download_retries") && err.contains("many"),
            "{err}"
        );
    }
}
