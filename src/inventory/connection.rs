//! How to reach one host over SSH, resolved from its merged inventory variables.
//!
//! These are plain data: the SSH layer consumes them and knows nothing of inventories.

use std::path::PathBuf;

use serde_json::Value;

use super::{Inventory, InventoryError, jinja, shlex};

/// OpenSSH's StrictHostKeyChecking values, as found in `ansible_ssh_common_args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes`: unknown hosts are refused.
    Yes,
    /// `accept-new`: unknown hosts are learned, changed keys refused.
    AcceptNew,
    /// `no` / `off`: only honoured with `--insecure-ignore-host-keys`.
    No,
}

/// Privilege escalation for remote commands (`ansible_become`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Become {
    /// `ansible_become_user`; `None` means root.
    pub user: Option<String>,
}

/// The jump host in front of a target (Kubespray's bastion, ProxyCommand `-W`, ProxyJump, `-J`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Inventory name when the jump host is an inventory host, else the address.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub private_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
}

/// Everything needed to open an SSH session to one inventory host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConnection {
    /// Inventory hostname.
    pub name: String,
    /// `ansible_ssh_host`, else `ansible_host`, else the inventory hostname (ssh plugin order).
    pub address: String,
    /// `ansible_port` / `ansible_ssh_port` / `host:port`, else 22.
    pub port: u16,
    /// `ansible_user` / `ansible_ssh_user`; `None` means the current user.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file` / `ansible_private_key_file`.
    pub private_key: Option<PathBuf>,
    /// `ansible_become` (and `ansible_become_user`).
    pub become_: Option<Become>,
    /// The bastion or jump host to go through, if any.
    pub jump: Option<JumpHost>,
    /// `UserKnownHostsFile` from the host's ssh args.
    pub known_hosts: Option<PathBuf>,
    /// `StrictHostKeyChecking` from the host's ssh args.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `ansible_connection=local`: never a push target.
    pub local: bool,
}

/// SSH options that change nothing dropship relies on; accepted and ignored.
const HARMLESS_OPTIONS: &[&str] = &[
    "controlmaster",
    "controlpersist",
    "controlpath",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "identitiesonly",
    "loglevel",
    "compression",
    "forwardagent",
    "preferredauthentications",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "pubkeyauthentication",
    "gssapiauthentication",
    "tcpkeepalive",
    "addressfamily",
    "batchmode",
];

/// ssh flags without a value that change nothing dropship relies on.
const HARMLESS_FLAGS: &[&str] = &["-q", "-C", "-T", "-A", "-a", "-x"];

/// The host acting as Kubespray's bastion: first host of group `bastion`, else a host named
/// `bastion`.
pub fn bastion_host(inventory: &Inventory) -> Option<String> {
    inventory
        .group_hosts("bastion")
        .into_iter()
        .next()
        .or_else(|| inventory.has_host("bastion").then(|| "bastion".to_string()))
}

/// How to reach `host`: its own settings, and the jump host in front of it.
///
/// The jump comes from `ansible_ssh_common_args` / `ansible_ssh_extra_args` when they name one
/// (`ProxyCommand="ssh -W %h:%p ..."`, `ProxyJump=`, `-J`), else from Kubespray's bastion
/// convention; the bastion itself and `ansible_connection=local` hosts have none.
pub fn resolve(inventory: &Inventory, host: &str) -> Result<HostConnection, InventoryError> {
    let mut connection = direct(inventory, host)?;
    let args = ssh_args(inventory, host)?;
    connection.known_hosts = args.known_hosts;
    connection.strict_host_key_checking = args.strict_host_key_checking;
    connection.jump = match args.jump {
        JumpSetting::Explicit(jump) => Some(identify(inventory, *jump)),
        JumpSetting::Disabled => None,
        JumpSetting::Unset if connection.local => None,
        JumpSetting::Unset => match bastion_host(inventory) {
            Some(bastion) if bastion != host => Some(bastion_jump(inventory, &bastion)?),
            _ => None,
        },
    };
    Ok(connection)
}

/// The host's own address, port, user, key and become, without any jump.
fn direct(inventory: &Inventory, host: &str) -> Result<HostConnection, InventoryError> {
    let vars = Vars { inventory, host };
    if !inventory.has_host(host) {
        return Err(vars.error(format!("'{host}' is not in the inventory")));
    }
    let address = vars
        .first_string(&["ansible_ssh_host", "ansible_host"])?
        .unwrap_or_else(|| host.to_string());
    let port = match vars.first(&["ansible_ssh_port", "ansible_port"]) {
        Some((name, value)) => parse_port(&vars.text(name, &value)?)
            .ok_or_else(|| vars.error(format!("{name} must be a port number, got {value}")))?,
        None => 22,
    };
    let user = vars.first_string(&["ansible_ssh_user", "ansible_user"])?;
    let private_key = vars
        .first_string(&["ansible_ssh_private_key_file", "ansible_private_key_file"])?
        .map(|p| expand_home(&p));
    let become_ = match vars.first(&["ansible_become"]) {
        Some((name, value)) if vars.truthy(name, &value)? => Some(Become {
            user: vars.first_string(&["ansible_become_user"])?,
        }),
        _ => None,
    };
    let local = vars
        .first_string(&["ansible_connection"])?
        .is_some_and(|c| c == "local");
    Ok(HostConnection {
        name: host.to_string(),
        address,
        port,
        user,
        private_key,
        become_,
        jump: None,
        known_hosts: None,
        strict_host_key_checking: None,
        local,
    })
}

fn bastion_jump(inventory: &Inventory, bastion: &str) -> Result<JumpHost, InventoryError> {
    let own = direct(inventory, bastion)?;
    let args = ssh_args(inventory, bastion)?;
    Ok(JumpHost {
        name: bastion.to_string(),
        address: own.address,
        port: own.port,
        user: own.user,
        private_key: own.private_key,
        known_hosts: args.known_hosts,
        strict_host_key_checking: args.strict_host_key_checking,
    })
}

/// Names a jump host after the inventory host with that name, or after Kubespray's bastion
/// when the addresses agree (the usual ProxyCommand); else the address stays its name.
fn identify(inventory: &Inventory, mut jump: JumpHost) -> JumpHost {
    if inventory.has_host(&jump.address) {
        jump.name = jump.address.clone();
    } else if let Some(bastion) = bastion_host(inventory)
        && direct(inventory, &bastion).is_ok_and(|c| c.address == jump.address)
    {
        jump.name = bastion;
    }
    jump
}

enum JumpSetting {
    Unset,
    Disabled,
    Explicit(Box<JumpHost>),
}

struct SshArgs {
    jump: JumpSetting,
    known_hosts: Option<PathBuf>,
    strict_host_key_checking: Option<StrictHostKeyChecking>,
}

/// Reads `ansible_ssh_common_args` then `ansible_ssh_extra_args` of `host`.
fn ssh_args(inventory: &Inventory, host: &str) -> Result<SshArgs, InventoryError> {
    let vars = Vars { inventory, host };
    let mut args = SshArgs {
        jump: JumpSetting::Unset,
        known_hosts: None,
        strict_host_key_checking: None,
    };
    for name in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
        let Some(text) = vars.first_string(&[name])? else {
            continue;
        };
        let tokens = shlex::split(&text, false).map_err(|e| vars.error(format!("{name}: {e}")))?;
        parse_outer_args(&tokens, &mut args).map_err(|e| vars.error(format!("{name}: {e}")))?;
    }
    Ok(args)
}

/// `-o Key=value`, `-oKey=value` and `-o "Key value"` options, `-J spec`, harmless flags.
fn parse_outer_args(tokens: &[String], args: &mut SshArgs) -> Result<(), String> {
    let mut tokens = tokens.iter();
    while let Some(token) = tokens.next() {
        if let Some(option) = flag_value(token, "-o", &mut tokens)? {
            let (key, value) = split_option(&option)?;
            match key.as_str() {
                "proxycommand" => args.jump = proxy_command(&value)?,
                "proxyjump" => args.jump = proxy_jump(&value)?,
                "userknownhostsfile" => args.known_hosts = Some(expand_home(&value)),
                "stricthostkeychecking" => args.strict_host_key_checking = Some(strict(&value)?),
                k if HARMLESS_OPTIONS.contains(&k) => {}
                _ => {
                    return Err(format!(
                        "unsupported ssh option '{option}' (dropship would silently ignore it)"
                    ));
                }
            }
        } else if let Some(spec) = flag_value(token, "-J", &mut tokens)? {
            args.jump = proxy_jump(&spec)?;
        } else if !HARMLESS_FLAGS.contains(&token.as_str()) {
            return Err(format!("unsupported ssh argument '{token}'"));
        }
    }
    Ok(())
}

/// The value of `-X value` or `-Xvalue` when `token` is flag `flag`.
fn flag_value<'a>(
    token: &str,
    flag: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<Option<String>, String> {
    if token == flag {
        return rest
            .next()
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("'{flag}' needs a value"));
    }
    Ok(token
        .strip_prefix(flag)
        .filter(|v| !v.is_empty())
        .map(str::to_string))
}

/// `Key=value` or `Key value`, key lowercased (ssh keywords are case-insensitive).
fn split_option(option: &str) -> Result<(String, String), String> {
    let split = option
        .split_once('=')
        .or_else(|| option.split_once([' ', '\t']));
    let (key, value) = split.ok_or_else(|| format!("ssh option '{option}' has no value"))?;
    Ok((key.trim().to_ascii_lowercase(), value.trim().to_string()))
}

fn strict(value: &str) -> Result<StrictHostKeyChecking, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "ask" => Ok(StrictHostKeyChecking::Yes),
        "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
        "no" | "off" => Ok(StrictHostKeyChecking::No),
        other => Err(format!(
            "StrictHostKeyChecking={other} is not yes, accept-new or no"
        )),
    }
}

/// `ssh -W %h:%p [-p P] [-i KEY] [-l USER] [-o Opt=val ...] [user@]host`, Kubespray's form.
fn proxy_command(command: &str) -> Result<JumpSetting, String> {
    if command.eq_ignore_ascii_case("none") {
        return Ok(JumpSetting::Disabled);
    }
    let unsupported = || {
        format!(
            "unsupported ProxyCommand '{command}': expected `ssh -W %h:%p [options] [user@]host`"
        )
    };
    let tokens = shlex::split(command, false).map_err(|e| format!("ProxyCommand: {e}"))?;
    let mut tokens = tokens.iter();
    if !tokens
        .next()
        .is_some_and(|program| program == "ssh" || program.ends_with("/ssh"))
    {
        return Err(unsupported());
    }
    let mut forward = false;
    let (mut port, mut user, mut key, mut destination) = (None, None, None, None);
    let (mut known_hosts, mut strict_checking) = (None, None);
    while let Some(token) = tokens.next() {
        if let Some(target) = flag_value(token, "-W", &mut tokens)? {
            if target != "%h:%p" && target != "[%h]:%p" {
                return Err(format!(
                    "ProxyCommand forwards to '{target}', expected %h:%p"
                ));
            }
            forward = true;
        } else if let Some(p) = flag_value(token, "-p", &mut tokens)? {
            port = Some(
                parse_port(&p)
                    .ok_or_else(|| format!("ProxyCommand port '{p}' is not a port number"))?,
            );
        } else if let Some(k) = flag_value(token, "-i", &mut tokens)? {
            key = Some(expand_home(&k));
        } else if let Some(l) = flag_value(token, "-l", &mut tokens)? {
            user = Some(l);
        } else if let Some(config) = flag_value(token, "-F", &mut tokens)? {
            // Kubespray's ssh-bastion.conf uses `-F /dev/null`; another file would hold settings
            // we do not read.
            if config != "/dev/null" {
                return Err(format!(
                    "ProxyCommand reads ssh config '{config}', which dropship does not"
                ));
            }
        } else if let Some(option) = flag_value(token, "-o", &mut tokens)? {
            let (name, value) = split_option(&option)?;
            match name.as_str() {
                "userknownhostsfile" => known_hosts = Some(expand_home(&value)),
                "stricthostkeychecking" => strict_checking = Some(strict(&value)?),
                "port" => {
                    port = Some(parse_port(&value).ok_or_else(|| {
                        format!("ProxyCommand Port '{value}' is not a port number")
                    })?)
                }
                "user" => user = Some(value),
                "identityfile" => key = Some(expand_home(&value)),
                n if HARMLESS_OPTIONS.contains(&n) => {}
                _ => {
                    return Err(format!(
                        "unsupported ssh option '{option}' inside ProxyCommand"
                    ));
                }
            }
        } else if HARMLESS_FLAGS.contains(&token.as_str()) {
        } else if token.starts_with('-') || destination.is_some() {
            return Err(format!(
                "unsupported argument '{token}' inside ProxyCommand"
            ));
        } else {
            destination = Some(token.clone());
        }
    }
    let destination = destination.filter(|_| forward).ok_or_else(unsupported)?;
    let (dest_user, address, dest_port) = parse_destination(&destination)?;
    Ok(JumpSetting::Explicit(Box::new(JumpHost {
        name: address.clone(),
        address,
        port: port.or(dest_port).unwrap_or(22),
        user: dest_user.or(user),
        private_key: key,
        known_hosts,
        strict_host_key_checking: strict_checking,
    })))
}

/// `[user@]host[:port]` (one hop), or `none`.
fn proxy_jump(spec: &str) -> Result<JumpSetting, String> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(JumpSetting::Disabled);
    }
    if spec.contains(',') {
        return Err(format!(
            "ProxyJump '{spec}' has several hops; dropship supports one jump host"
        ));
    }
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, address, port) = parse_destination(spec)?;
    Ok(JumpSetting::Explicit(Box::new(JumpHost {
        name: address.clone(),
        address,
        port: port.unwrap_or(22),
        user,
        private_key: None,
        known_hosts: None,
        strict_host_key_checking: None,
    })))
}

type Destination = (Option<String>, String, Option<u16>);

/// `[user@]host[:port]` with `[v6]:port` brackets.
fn parse_destination(text: &str) -> Result<Destination, String> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, text),
    };
    let bad_port = |p: &str| format!("'{p}' in '{text}' is not a port number");
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in '{text}'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p).ok_or_else(|| bad_port(p))?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected '{after}' in '{text}'")),
        };
        (host.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((host, p)) if !p.contains(':') => (
                host.to_string(),
                Some(parse_port(p).ok_or_else(|| bad_port(p))?),
            ),
            _ => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in '{text}'"));
    }
    Ok((user, host, port))
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// Typed access to one host's merged variables, with errors naming the host.
struct Vars<'a> {
    inventory: &'a Inventory,
    host: &'a str,
}

impl Vars<'_> {
    fn error(&self, message: String) -> InventoryError {
        InventoryError::Host {
            host: self.host.to_string(),
            message,
        }
    }

    /// The first of `names` that is set (earlier names take precedence).
    fn first<'n>(&self, names: &[&'n str]) -> Option<(&'n str, Value)> {
        names
            .iter()
            .find_map(|name| self.inventory.host_var(self.host, name).map(|v| (*name, v)))
    }

    fn first_string(&self, names: &[&str]) -> Result<Option<String>, InventoryError> {
        match self.first(names) {
            Some((name, value)) => self.text(name, &value).map(Some),
            None => Ok(None),
        }
    }

    /// A scalar as text, with templates rendered.
    fn text(&self, name: &str, value: &Value) -> Result<String, InventoryError> {
        if let Some(text) = super::unsafe_text(value) {
            return Ok(text.to_string());
        }
        let raw = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(self.error(format!("{name} must be a string, got {other}"))),
        };
        jinja::render(self.inventory, self.host, &raw)
            .map_err(|e| self.error(format!("{name}: {e}")))
    }

    fn truthy(&self, name: &str, value: &Value) -> Result<bool, InventoryError> {
        let rendered = match value {
            Value::String(s) => Value::String(
                jinja::render(self.inventory, self.host, s)
                    .map_err(|e| self.error(format!("{name}: {e}")))?,
            ),
            other => other.clone(),
        };
        super::settings::ansible_bool(&rendered)
            .ok_or_else(|| self.error(format!("{name} must be a boolean, got {value}")))
    }
}

/// The hosts an operation acts on: those `pattern` selects, less the bastion and
/// `ansible_connection=local` hosts, resolved, in inventory order.
pub fn targets(
    inventory: &Inventory,
    pattern: &str,
) -> Result<Vec<HostConnection>, InventoryError> {
    let bastion = bastion_host(inventory);
    let mut targets = Vec::new();
    for name in inventory.select(pattern)? {
        if Some(&name) == bastion.as_ref() {
            continue;
        }
        let host = resolve(inventory, &name)?;
        if !host.local {
            targets.push(host);
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(ini: &str) -> (tempfile::TempDir, Inventory) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.ini");
        std::fs::write(&path, ini).unwrap();
        let inventory = Inventory::load(&[path]).unwrap();
        (dir, inventory)
    }

    #[test]
    fn kubespray_proxy_command_string() {
        let (_dir, inv) = inventory(concat!(
            "[kube_node]\nnode1 ansible_host=10.0.0.5 ansible_user=core\n[all:vars]\n",
            "ansible_ssh_common_args='-o ProxyCommand=\"ssh -o UserKnownHostsFile=/tmp/kh -o StrictHostKeyChecking=no ",
            "-W %h:%p -p 2222 -i /keys/b admin@198.18.0.1\" -o UserKnownHostsFile=/tmp/nodes -o StrictHostKeyChecking=accept-new'\n",
        ));
        let c = resolve(&inv, "node1").unwrap();
        assert_eq!(
            (c.address.as_str(), c.port, c.user.as_deref()),
            ("10.0.0.5", 22, Some("core"))
        );
        assert_eq!(c.known_hosts, Some(PathBuf::from("/tmp/nodes")));
        assert_eq!(
            c.strict_host_key_checking,
            Some(StrictHostKeyChecking::AcceptNew)
        );
        let jump = c.jump.unwrap();
        assert_eq!(
            (jump.address.as_str(), jump.port, jump.user.as_deref()),
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
        let jump = resolve(&inv, "n1").unwrap().jump.unwrap();
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
        let a = resolve(&inv, "a").unwrap().jump.unwrap();
        assert_eq!(
            (a.name.as_str(), a.port, a.user.as_deref()),
            ("gw", 2200, Some("ops"))
        );
        let b = resolve(&inv, "b").unwrap().jump.unwrap();
        assert_eq!((b.address.as_str(), b.port), ("::1", 2201));
    }

    #[test]
    fn kubespray_bastion_group() {
        let (_dir, inv) = inventory(concat!(
            "[bastion]\nbastion ansible_host=198.18.0.1 ansible_user=ops ansible_port=2222\n",
            "[kube_node]\nnode1 ansible_host=10.0.0.5 ansible_port=22\nlocal1 ansible_connection=local\n",
        ));
        let node = resolve(&inv, "node1").unwrap();
        let jump = node.jump.unwrap();
        assert_eq!(
            (jump.name.as_str(), jump.address.as_str(), jump.port),
            ("bastion", "198.18.0.1", 2222)
        );
        assert!(resolve(&inv, "bastion").unwrap().jump.is_none());
        let local = resolve(&inv, "local1").unwrap();
        assert!(local.local && local.jump.is_none());
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
        let n1 = resolve(&inv, "n1").unwrap();
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
        let err = resolve(&inv, "n1").unwrap_err().to_string();
        assert!(
            err.contains("n1") && err.contains("ForwardX11=yes"),
            "{err}"
        );
        let err = resolve(&inv, "n2").unwrap_err().to_string();
        assert!(err.contains("n2") && err.contains("-R"), "{err}");
        let err = resolve(&inv, "n3").unwrap_err().to_string();
        assert!(err.contains("n3") && err.contains("lookup"), "{err}");
    }
}
