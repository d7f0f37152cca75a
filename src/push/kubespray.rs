//! Kubespray's download variables, as our users already write them in their inventories.
//!
//! They are push configuration (where images come from, retries, what is kept on nodes), read
//! from the inventory like everything a push decides before contacting anything.

use std::path::PathBuf;

use serde_json::Value;

use crate::inventory::host_vars::HostVars;
use crate::inventory::{Inventory, InventoryError, connection};

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
        let vars = HostVars::new(inventory, &host);
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
            cache_dir: vars.path(&["download_cache_dir"])?,
            keep_remote_cache: vars
                .bool("download_keep_remote_cache")?
                .unwrap_or(defaults.keep_remote_cache),
            compress: vars.uint("download_compress")?.unwrap_or(defaults.compress),
            retries: vars.uint("download_retries")?.unwrap_or(defaults.retries),
            retry_stagger: vars
                .uint("retry_stagger")?
                .map(u64::from)
                .unwrap_or(defaults.retry_stagger),
            local_release_dir: vars
                .path(&["local_release_dir"])?
                .unwrap_or(defaults.local_release_dir),
            delegate,
        })
    }
}

/// How to reach registries, from the variables Kubespray (and dropship) already use, as the
/// play's first host sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `containerd_registries_mirrors`, as written.
    pub mirrors: Value,
    /// Plain-HTTP registries: `docker_insecure_registries` (a list of `host:port`) and the
    /// `http://` ones of `containerd_insecure_registries` (a map of `host:port` to a URL).
    pub plain_http: Vec<String>,
    /// `dropship_registry_ca_files`.
    pub ca_files: Vec<PathBuf>,
}

impl RegistrySettings {
    pub fn from_inventory(inventory: &Inventory) -> Result<RegistrySettings, InventoryError> {
        let Some(host) = play_host(inventory)? else {
            return Ok(RegistrySettings::default());
        };
        let vars = HostVars::new(inventory, &host);
        let strings = |name: &str, value: Option<Value>| -> Result<Vec<String>, InventoryError> {
            match value {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s),
                        other => {
                            Err(vars.error(name, format!("entries must be strings, got {other}")))
                        }
                    })
                    .collect(),
                Some(other) => Err(vars.error(name, format!("must be a list, got {other}"))),
            }
        };
        let mut plain_http = strings(
            "docker_insecure_registries",
            vars.get("docker_insecure_registries")?,
        )?;
        match vars.get("containerd_insecure_registries")? {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => plain_http.extend(
                map.into_iter()
                    .filter(|(_, url)| url.as_str().is_some_and(|u| u.starts_with("http://")))
                    .map(|(host, _)| host),
            ),
            Some(other) => {
                return Err(vars.error(
                    "containerd_insecure_registries",
                    format!("must be a map of registry to URL, got {other}"),
                ));
            }
        }
        let ca_files = strings(
            "dropship_registry_ca_files",
            vars.get("dropship_registry_ca_files")?,
        )?
        .iter()
        .map(|path| crate::inventory::host_vars::expand_home(path))
        .collect();
        Ok(RegistrySettings {
            mirrors: vars
                .get("containerd_registries_mirrors")?
                .unwrap_or(Value::Null),
            plain_http,
            ca_files,
        })
    }
}

/// The `dropship_images` list of the play's first host (empty when unset).
pub fn images_from_inventory(inventory: &Inventory) -> Result<Vec<String>, InventoryError> {
    let Some(host) = play_host(inventory)? else {
        return Ok(Vec::new());
    };
    let vars = HostVars::new(inventory, &host);
    match vars.get("dropship_images")? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
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

/// The host whose variables Kubespray's download role sees first: the first host of `all`
/// that is neither the bastion nor `ansible_connection=local`.
pub(crate) fn play_host(inventory: &Inventory) -> Result<Option<String>, InventoryError> {
    let bastion = connection::bastion_host(inventory);
    for host in inventory.group_hosts("all") {
        if Some(&host) != bastion.as_ref() && !connection::is_local(inventory, &host)? {
            return Ok(Some(host));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::load_files as load;

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
