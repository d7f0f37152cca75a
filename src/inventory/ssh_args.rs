//! The OpenSSH arguments an inventory passes to `ssh` (`ansible_ssh_common_args`,
//! `ansible_ssh_extra_args`): the jump host they name (`ProxyCommand="ssh -W %h:%p …"`,
//! `ProxyJump=`, `-J`), `UserKnownHostsFile`, `StrictHostKeyChecking` and the ssh config file
//! (`-F FILE`).
//!
//! As on ssh's command line, the first `-o` value given for an option wins (so `ansible.cfg`'s
//! `ssh_args`, which Ansible puts first, win over the inventory's), and the last `-F`.
//!
//! Hand-written because it must read these strings exactly as OpenSSH does; an option it does
//! not know is an error rather than silently ignored, since it may change where ssh connects.

use std::path::PathBuf;

use super::host_vars::expand_home;
use super::shlex;
use crate::ssh::{Destination, Hop, StrictHostKeyChecking, parse_port};

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

/// What the arguments say about the jump host.
pub(super) enum JumpSetting {
    Unset,
    Disabled,
    Explicit(Box<Jump>),
}

/// A jump host as an ssh command line names it, and which ssh config its own ssh reads.
pub(super) struct Jump {
    pub(super) hop: Hop,
    pub(super) config: JumpConfig,
}

/// The ssh config a jump host's login reads.
pub(super) enum JumpConfig {
    /// `ProxyJump`/`-J`: ssh passes its own `-F` on, so the same as the host behind it.
    SameAsTarget,
    /// A ProxyCommand's ssh without `-F`: the default (`~/.ssh/config`, or dropship's `-F`).
    Default,
    /// A ProxyCommand's `ssh -F FILE`.
    File(PathBuf),
}

/// What dropship reads from a host's ssh arguments.
pub(super) struct SshArgs {
    pub(super) jump: JumpSetting,
    pub(super) known_hosts: Option<PathBuf>,
    pub(super) strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `-F FILE`: the ssh config file instead of `~/.ssh/config` (`/dev/null`: none).
    pub(super) config_file: Option<PathBuf>,
}

impl SshArgs {
    pub(super) fn new() -> Self {
        SshArgs {
            jump: JumpSetting::Unset,
            known_hosts: None,
            strict_host_key_checking: None,
            config_file: None,
        }
    }

    /// Read one argument string, after the earlier ones on the same ssh command line.
    pub(super) fn read(&mut self, text: &str) -> Result<(), String> {
        let tokens = shlex::split(text, false).map_err(|e| e.to_string())?;
        parse_outer_args(&tokens, self)
    }
}

/// `-o Key=value`, `-oKey=value` and `-o "Key value"` options, `-J spec`, harmless flags.
fn parse_outer_args(tokens: &[String], args: &mut SshArgs) -> Result<(), String> {
    let mut tokens = tokens.iter();
    while let Some(token) = tokens.next() {
        if let Some(option) = flag_value(token, "-o", &mut tokens)? {
            let (key, value) = split_option(&option)?;
            let unset_jump = matches!(args.jump, JumpSetting::Unset);
            match key.as_str() {
                "proxycommand" if unset_jump => args.jump = proxy_command(&value)?,
                "proxyjump" if unset_jump => args.jump = proxy_jump(&value)?,
                "proxycommand" | "proxyjump" => {}
                "userknownhostsfile" => {
                    args.known_hosts.get_or_insert_with(|| expand_home(&value));
                }
                "stricthostkeychecking" => {
                    let value = strict(&value)?;
                    args.strict_host_key_checking.get_or_insert(value);
                }
                k if HARMLESS_OPTIONS.contains(&k) => {}
                _ => {
                    return Err(format!(
                        "unsupported ssh option '{option}' (dropship would silently ignore it)"
                    ));
                }
            }
        } else if let Some(spec) = flag_value(token, "-J", &mut tokens)? {
            if matches!(args.jump, JumpSetting::Unset) {
                args.jump = proxy_jump(&spec)?;
            }
        } else if let Some(file) = flag_value(token, "-F", &mut tokens)? {
            args.config_file = Some(expand_home(&file));
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
    StrictHostKeyChecking::parse(value)
        .ok_or_else(|| format!("StrictHostKeyChecking={value} is not yes, accept-new or no"))
}

/// `ssh -W %h:%p [-p P] [-i KEY] [-l USER] [-F FILE] [-o Opt=val ...] [user@]host`, Kubespray's
/// form. The jump host reads `-F`'s file, or the default ssh config when there is none.
pub(super) fn proxy_command(command: &str) -> Result<JumpSetting, String> {
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
    let (mut known_hosts, mut strict_checking, mut config_file) = (None, None, None);
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
            config_file = Some(expand_home(&config));
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
    let destination = Destination::parse(&destination)?;
    Ok(JumpSetting::Explicit(Box::new(Jump {
        hop: Hop {
            port: port.or(destination.port),
            user: destination.user.clone().or(user),
            private_key: key,
            known_hosts,
            strict_host_key_checking: strict_checking,
            ..destination.hop()
        },
        config: config_file.map_or(JumpConfig::Default, JumpConfig::File),
    })))
}

/// `[user@]host[:port]` (one hop), or `none`. Like `ssh -J`, the jump host reads the same ssh
/// config file as the host behind it.
pub(super) fn proxy_jump(spec: &str) -> Result<JumpSetting, String> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(JumpSetting::Disabled);
    }
    if spec.contains(',') {
        return Err(format!(
            "ProxyJump '{spec}' has several hops; dropship supports one jump host"
        ));
    }
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    Ok(JumpSetting::Explicit(Box::new(Jump {
        hop: Destination::parse(spec)?.hop(),
        config: JumpConfig::SameAsTarget,
    })))
}
