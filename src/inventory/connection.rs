//! How to reach one inventory host over SSH, resolved from its merged variables the way
//! Ansible's ssh connection plugin reads them, plus Kubespray's bastion convention, then the
//! ssh config (`~/.ssh/config`, or `-F`) for what neither sets, as OpenSSH would.
//!
//! Precedence, as Ansible builds the ssh command line and OpenSSH reads it (first value wins):
//! inventory variables, then `ansible.cfg` (`remote_user`, `private_key_file`, `ssh_args`, which
//! Ansible passes as `-o` options only when set), then the ssh config's block for the
//! destination (`ansible_host`, else the inventory name). Flags are applied over all of this by
//! the transport.

use std::path::PathBuf;

use super::host_vars::HostVars;
use super::ssh_args::{self, Jump, JumpConfig, JumpSetting, SshArgs};
use super::{Inventory, InventoryError};
use crate::ssh::config::{Proxy, Setting, SshConfig};
use crate::ssh::{Become, Hop, Host, Source, StrictHostKeyChecking, parse_port};

/// What applies to every host whose inventory variables do not say otherwise.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `remote_user` (`ansible.cfg`, `ANSIBLE_REMOTE_USER`).
    pub user: Option<String>,
    /// `private_key_file` (`ansible.cfg`, `ANSIBLE_PRIVATE_KEY_FILE`).
    pub private_key: Option<PathBuf>,
    /// `[ssh_connection] ssh_args` (`ANSIBLE_SSH_ARGS`), before the inventory's ssh arguments.
    pub ssh_args: Option<String>,
    /// `host_key_checking = False`: `StrictHostKeyChecking=no` (honoured only with
    /// `--insecure-ignore-host-keys`).
    pub no_host_key_checking: bool,
    /// The ssh config of hosts whose ssh arguments name no `-F`: `~/.ssh/config` and
    /// `/etc/ssh/ssh_config`, or dropship's `-F FILE`.
    pub ssh_config: SshConfig,
}

/// The host acting as Kubespray's bastion: first host of group `bastion`, else a host named
/// `bastion`.
pub fn bastion_host(inventory: &Inventory) -> Option<String> {
    inventory
        .group_hosts("bastion")
        .into_iter()
        .next()
        .or_else(|| inventory.has_host("bastion").then(|| "bastion".to_string()))
}

/// `ansible_connection=local`: the machine running dropship, never reached over SSH.
pub fn is_local(inventory: &Inventory, host: &str) -> Result<bool, InventoryError> {
    Ok(HostVars::new(inventory, host)
        .string(&["ansible_connection"])?
        .is_some_and(|c| c == "local"))
}

/// How to reach `host`: its own login, and the jump host in front of it.
///
/// The jump comes from `ansible_ssh_common_args` / `ansible_ssh_extra_args` when they name one
/// (`ProxyCommand="ssh -W %h:%p ..."`, `ProxyJump=`, `-J`), else from Kubespray's bastion
/// convention, else from the ssh config's `ProxyJump`/`ProxyCommand`; the bastion itself and
/// `ansible_connection=local` hosts have none from the convention.
pub fn resolve(
    inventory: &Inventory,
    host: &str,
    defaults: &Defaults,
) -> Result<Host, InventoryError> {
    let mut login = login(inventory, host, defaults)?;
    let jump = match std::mem::replace(&mut login.jump, JumpSetting::Unset) {
        JumpSetting::Explicit(jump) => Some(jump_login(inventory, host, *jump, &login, defaults)?),
        JumpSetting::Disabled => None,
        JumpSetting::Unset if is_local(inventory, host)? => None,
        JumpSetting::Unset => match bastion_host(inventory) {
            Some(bastion) if bastion != host => Some(login_of(inventory, &bastion, defaults)?),
            _ => match &login.config_proxy {
                None => None,
                Some(proxy) => {
                    let from_config = |e: String| InventoryError::Host {
                        host: host.to_string(),
                        message: format!("{}: {e}", proxy.at),
                    };
                    let setting = match &proxy.value {
                        Proxy::Jump(spec) => ssh_args::proxy_jump(spec),
                        Proxy::Command(command) => ssh_args::proxy_command(command),
                    }
                    .map_err(from_config)?;
                    match setting {
                        JumpSetting::Explicit(jump) => {
                            Some(jump_login(inventory, host, *jump, &login, defaults)?)
                        }
                        _ => None,
                    }
                }
            },
        },
    };
    let vars = HostVars::new(inventory, host);
    let become_ = match vars.bool("ansible_become")? {
        Some(true) => Some(Become {
            user: vars.string(&["ansible_become_user"])?,
        }),
        _ => None,
    };
    Ok(Host {
        hop: login.hop,
        jump,
        become_,
    })
}

/// A host's login as the inventory, the defaults and its ssh config give it.
struct Login {
    hop: Hop,
    jump: JumpSetting,
    /// The ssh config it read (its own `-F`, else the default), for a jump host behind it.
    config: SshConfig,
    /// The config's ProxyJump or ProxyCommand, used when nothing else names a jump host.
    config_proxy: Option<Setting<Proxy>>,
}

fn login_of(inventory: &Inventory, host: &str, defaults: &Defaults) -> Result<Hop, InventoryError> {
    Ok(login(inventory, host, defaults)?.hop)
}

/// The host's own address, port, user, key and host-key settings, and its ssh arguments.
fn login(inventory: &Inventory, host: &str, defaults: &Defaults) -> Result<Login, InventoryError> {
    let vars = HostVars::new(inventory, host);
    if !inventory.has_host(host) {
        return Err(InventoryError::Host {
            host: host.to_string(),
            message: "not in the inventory".into(),
        });
    }
    let mut hop = Hop::named(host);
    hop.sources.address = Source::Inventory;
    if let Some(address) = vars.string(&["ansible_ssh_host", "ansible_host"])? {
        hop.address = address;
    }
    if let Some((name, value)) = vars.first(&["ansible_ssh_port", "ansible_port"])? {
        let text = vars.string(&[name])?.unwrap_or_default();
        hop.port = Some(
            parse_port(&text)
                .ok_or_else(|| vars.error(name, format!("must be a port number, got {value}")))?,
        );
        hop.sources.port = Source::Inventory;
    }
    let mut args = SshArgs::new();
    if let Some(text) = &defaults.ssh_args {
        args.read(text).map_err(|e| InventoryError::Host {
            host: host.to_string(),
            message: format!("ssh_args from ansible.cfg: {e}"),
        })?;
    }
    for name in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
        if let Some(text) = vars.string(&[name])? {
            args.read(&text).map_err(|e| vars.error(name, e))?;
        }
    }
    if let Some(user) = vars.string(&["ansible_ssh_user", "ansible_user"])? {
        (hop.user, hop.sources.user) = (Some(user), Source::Inventory);
    } else if let Some(user) = &defaults.user {
        (hop.user, hop.sources.user) = (Some(user.clone()), Source::AnsibleCfg);
    }
    let key_vars = ["ansible_ssh_private_key_file", "ansible_private_key_file"];
    if let Some(key) = vars.path(&key_vars)? {
        (hop.private_key, hop.sources.private_key) = (Some(key), Source::Inventory);
    } else if let Some(key) = &defaults.private_key {
        (hop.private_key, hop.sources.private_key) = (Some(key.clone()), Source::AnsibleCfg);
    }
    hop.known_hosts = args.known_hosts.clone();
    hop.strict_host_key_checking = if defaults.no_host_key_checking {
        Some(StrictHostKeyChecking::No)
    } else {
        args.strict_host_key_checking
    };
    let config = match &args.config_file {
        Some(file) => load_config(host, file)?,
        None => defaults.ssh_config.clone(),
    };
    let found = config.lookup(&hop.address);
    let config_proxy = found.proxy.clone();
    found.fill(&mut hop);
    Ok(Login {
        hop,
        jump: args.jump,
        config,
        config_proxy,
    })
}

/// A jump host named by ssh arguments or the ssh config, with its own ssh config applied.
fn jump_login(
    inventory: &Inventory,
    host: &str,
    jump: Jump,
    target: &Login,
    defaults: &Defaults,
) -> Result<Hop, InventoryError> {
    let mut hop = identify(inventory, jump.hop, defaults);
    if hop.port.is_some() {
        hop.sources.port = Source::Inventory;
    }
    if hop.user.is_some() {
        hop.sources.user = Source::Inventory;
    }
    if hop.private_key.is_some() {
        hop.sources.private_key = Source::Inventory;
    }
    let config = match jump.config {
        JumpConfig::SameAsTarget => target.config.clone(),
        JumpConfig::Default => defaults.ssh_config.clone(),
        JumpConfig::File(file) => load_config(host, &file)?,
    };
    config.apply(&mut hop);
    Ok(hop)
}

fn load_config(host: &str, file: &std::path::Path) -> Result<SshConfig, InventoryError> {
    SshConfig::load_file(file).map_err(|e| InventoryError::Host {
        host: host.to_string(),
        message: format!("ssh config (-F): {e}"),
    })
}

/// Names a jump host after the inventory host with that name, or after Kubespray's bastion
/// when the addresses agree (the usual ProxyCommand); else the address stays its name.
fn identify(inventory: &Inventory, mut jump: Hop, defaults: &Defaults) -> Hop {
    if inventory.has_host(&jump.address) {
        jump.name = jump.address.clone();
    } else if let Some(bastion) = bastion_host(inventory)
        && login_of(inventory, &bastion, defaults).is_ok_and(|hop| hop.address == jump.address)
    {
        jump.name = bastion;
    }
    jump
}

/// The hosts an operation acts on: those the limit `pattern` selects, less the bastion and
/// `ansible_connection=local` hosts, in inventory order (not resolved: nothing is read but the
/// inventory, as `--list-hosts` wants).
pub fn target_names(inventory: &Inventory, pattern: &str) -> Result<Vec<String>, InventoryError> {
    let bastion = bastion_host(inventory);
    let mut targets = Vec::new();
    for name in inventory.limit(pattern)? {
        if Some(&name) == bastion.as_ref() || is_local(inventory, &name)? {
            continue;
        }
        targets.push(name);
    }
    Ok(targets)
}

/// The target hosts of `pattern` (see `target_names`), resolved.
pub fn targets(
    inventory: &Inventory,
    pattern: &str,
    defaults: &Defaults,
) -> Result<Vec<Host>, InventoryError> {
    target_names(inventory, pattern)?
        .iter()
        .map(|name| resolve(inventory, name, defaults))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::{
        VAULTED_DEPLOY, VAULTED_DEPLOY_AGAIN, VAULTED_YES, fixture_secrets, load_files,
        load_files_with, load_ini as inventory, vault_yaml,
    };
    use crate::ssh::StrictHostKeyChecking;
    use std::path::PathBuf;

    #[test]
    fn kubespray_proxy_command_string() {
        let (_dir, inv) = inventory(concat!(
            "[kube_node]\nnode1 ansible_host=10.0.0.5 ansible_user=core\n[all:vars]\n",
            "ansible_ssh_common_args='-o ProxyCommand=\"ssh -o UserKnownHostsFile=/tmp/kh -o StrictHostKeyChecking=no ",
            "-W %h:%p -p 2222 -i /keys/b admin@198.18.0.1\" -o UserKnownHostsFile=/tmp/nodes -o StrictHostKeyChecking=accept-new'\n",
        ));
        let c = resolve(&inv, "node1", &Defaults::default()).unwrap();
        assert_eq!(
            (c.hop.address.as_str(), c.hop.port(), c.hop.user.as_deref()),
            ("10.0.0.5", 22, Some("core"))
        );
        assert_eq!(c.hop.known_hosts, Some(PathBuf::from("/tmp/nodes")));
        assert_eq!(
            c.hop.strict_host_key_checking,
            Some(StrictHostKeyChecking::AcceptNew)
        );
        let jump = c.jump.unwrap();
        assert_eq!(
            (jump.address.as_str(), jump.port(), jump.user.as_deref()),
            ("198.18.0.1", 2222, Some("admin"))
        );
        assert_eq!(jump.private_key, Some(PathBuf::from("/keys/b")));
        assert_eq!(jump.known_hosts, Some(PathBuf::from("/tmp/kh")));
        assert_eq!(
            jump.strict_host_key_checking,
            Some(StrictHostKeyChecking::No)
        );
    }

    #[test]
    fn kubespray_bastion_role_form_with_config_and_key() {
        let (_dir, inv) = inventory(concat!(
            "[kube_node]\nn1 ansible_ssh_private_key_file=/k/id\n[all:vars]\n",
            r#"ansible_ssh_common_args="-o ProxyCommand='ssh -F /dev/null -o UserKnownHostsFile=/dev/null "#,
            r#"-o StrictHostKeyChecking=no -W %h:%p -p 22 -q ops@198.18.0.1 "#,
            r#"{% if ansible_ssh_private_key_file is defined %}-i {{ ansible_ssh_private_key_file }}{% endif %}'""#,
            "\n",
        ));
        let jump = resolve(&inv, "n1", &Defaults::default())
            .unwrap()
            .jump
            .unwrap();
        assert_eq!(
            (jump.address.as_str(), jump.user.as_deref()),
            ("198.18.0.1", Some("ops"))
        );
        assert_eq!(jump.private_key, Some(PathBuf::from("/k/id")));
        assert_eq!(
            jump.strict_host_key_checking,
            Some(StrictHostKeyChecking::No)
        );
    }

    #[test]
    fn proxy_jump_and_dash_j() {
        let (_dir, inv) = inventory(
            "a ansible_ssh_common_args='-o ProxyJump=ops@gw:2200'\nb ansible_ssh_extra_args='-J [::1]:2201 -o ServerAliveInterval=5'\ngw\n",
        );
        let a = resolve(&inv, "a", &Defaults::default())
            .unwrap()
            .jump
            .unwrap();
        assert_eq!(
            (a.name.as_str(), a.port(), a.user.as_deref()),
            ("gw", 2200, Some("ops"))
        );
        let b = resolve(&inv, "b", &Defaults::default())
            .unwrap()
            .jump
            .unwrap();
        assert_eq!((b.address.as_str(), b.port()), ("::1", 2201));
    }

    #[test]
    fn kubespray_bastion_group() {
        let (_dir, inv) = inventory(concat!(
            "[bastion]\nbastion ansible_host=198.18.0.1 ansible_user=ops ansible_port=2222\n",
            "[kube_node]\nnode1 ansible_host=10.0.0.5 ansible_port=22\nlocal1 ansible_connection=local\n",
        ));
        let node = resolve(&inv, "node1", &Defaults::default()).unwrap();
        let jump = node.jump.unwrap();
        assert_eq!(
            (jump.name.as_str(), jump.address.as_str(), jump.port()),
            ("bastion", "198.18.0.1", 2222)
        );
        assert!(
            resolve(&inv, "bastion", &Defaults::default())
                .unwrap()
                .jump
                .is_none()
        );
        assert!(is_local(&inv, "local1").unwrap());
        assert!(
            resolve(&inv, "local1", &Defaults::default())
                .unwrap()
                .jump
                .is_none()
        );
        let names: Vec<String> = targets(&inv, "all", &Defaults::default())
            .unwrap()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(
            names,
            ["node1"],
            "neither the bastion nor a local host is a target"
        );
    }

    #[test]
    fn templates_and_become() {
        let (_dir, inv) = inventory(concat!(
            "bastion ansible_host=198.18.0.9 ansible_user=ops\n",
            r#"n1 ansible_become=yes ansible_become_user=deploy ansible_ssh_common_args="-o ProxyCommand='ssh -W %h:%p "#,
            r#"{{ hostvars[\"bastion\"][\"ansible_user\"] }}@{{ hostvars[\"bastion\"][\"ansible_host\"] }} "#,
            r#"{% if ansible_ssh_private_key_file is defined %}-i {{ ansible_ssh_private_key_file }}{% endif %}'""#,
            "\n",
        ));
        let n1 = resolve(&inv, "n1", &Defaults::default()).unwrap();
        assert_eq!(
            n1.become_,
            Some(Become {
                user: Some("deploy".into())
            })
        );
        let jump = n1.jump.unwrap();
        assert_eq!(
            (jump.name.as_str(), jump.user.as_deref()),
            ("bastion", Some("ops"))
        );
    }

    #[test]
    fn unknown_options_are_errors_naming_host_and_option() {
        let (_dir, inv) = inventory(
            "n1 ansible_ssh_common_args='-o ForwardX11=yes'\nn2 ansible_ssh_extra_args='-R 80:x:80'\nn3 ansible_user='{{ lookup(\"env\", \"U\") }}'\n",
        );
        let err = resolve(&inv, "n1", &Defaults::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n1") && err.contains("ForwardX11=yes"),
            "{err}"
        );
        let err = resolve(&inv, "n2", &Defaults::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("n2") && err.contains("-R"), "{err}");
        let err = resolve(&inv, "n3", &Defaults::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("n3") && err.contains("lookup"), "{err}");
    }

    #[test]
    fn vaulted_settings_are_decrypted_with_the_password_and_named_without_it() {
        let group_vars =
            vault_yaml("vault_user", VAULTED_DEPLOY) + &vault_yaml("ansible_become", VAULTED_YES);
        let host_vars = vault_yaml("ansible_user", VAULTED_DEPLOY_AGAIN);
        let files = [
            (
                "hosts.ini",
                "[kube_node]\nn1 ansible_user='{{ vault_user }}'\nn2\n",
            ),
            ("group_vars/all.yml", group_vars.as_str()),
            ("host_vars/n2.yml", host_vars.as_str()),
        ];
        let (_dir, inv) = load_files_with(&files, fixture_secrets());
        for host in ["n1", "n2"] {
            let c = resolve(&inv, host, &Defaults::default()).unwrap();
            assert_eq!(c.hop.user.as_deref(), Some("deploy"), "{host}");
            assert_eq!(c.become_, Some(Become { user: None }), "{host}");
        }
        let (dir, inv) = load_files(&files);
        let err = resolve(&inv, "n2", &Defaults::default())
            .unwrap_err()
            .to_string();
        let file = dir.path().canonicalize().unwrap().join("host_vars/n2.yml");
        for part in [
            "host 'n2'",
            "ansible_user",
            &format!("encrypted with Ansible Vault in {}", file.display()),
            "--vault-password-file",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
