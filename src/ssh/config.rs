//! OpenSSH's client configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`, or `-F FILE`), read
//! for the settings dropship uses: `HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`,
//! `ProxyCommand`, `UserKnownHostsFile` and `StrictHostKeyChecking`.
//!
//! Hand-written because it must match `ssh -G` exactly where it matters, and the crate that
//! exists (`ssh2-config`) does not: it has no notion of `Match`, so a `Match` block's lines
//! would silently apply to the `Host` block above it, and it keeps `UserKnownHostsFile` and
//! `StrictHostKeyChecking` only as untyped strings. The rules, as `ssh -G` shows them:
//! - the first value obtained for a keyword wins (files in order, blocks top to bottom);
//!   `IdentityFile` accumulates;
//! - `Host` patterns are matched case-sensitively against the destination as given, with `*`,
//!   `?` and `!negation`; several per line, a block with only negated patterns never matches;
//! - `Include` (relative to `~/.ssh`, or `/etc/ssh` for the system file; wildcards in the last
//!   path component) is read in place, conditional on the block it sits in;
//! - `Match` blocks are not evaluated (their criteria can run commands or depend on
//!   canonicalization): they are skipped with a warning naming the file and line, once.
//!
//! Other keywords are ignored: they change nothing dropship does.

use std::path::{Path, PathBuf};

use super::host::{Hop, Source, StrictHostKeyChecking};
use super::known_hosts::glob_matches;

/// A configuration file (or `line`) that cannot be read as OpenSSH would.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SshConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Where a setting was read: `file:line`, for `-v` and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// How a host is reached through a jump host, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump` (`none`, or `[user@]host[:port][,...]`).
    Jump(String),
    /// `ProxyCommand`, the rest of the line as written.
    Command(String),
}

/// A value and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub at: Origin,
}

/// What the configuration says about one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`, its `%h` and `%%` expanded.
    pub host_name: Option<Setting<String>>,
    pub user: Option<Setting<String>>,
    pub port: Option<Setting<u16>>,
    /// Every `IdentityFile`, in order, `~` and `%d %u %h %%` expanded.
    pub identity_files: Vec<Setting<PathBuf>>,
    pub proxy: Option<Setting<Proxy>>,
    /// The first file of the first `UserKnownHostsFile`.
    pub known_hosts: Option<Setting<PathBuf>>,
    pub strict_host_key_checking: Option<Setting<StrictHostKeyChecking>>,
}

/// One line that matters, in file order; `Include`d files are nested.
#[derive(Debug, Clone)]
enum Line {
    Host(Vec<String>),
    Match(Origin),
    Set(Keyword, Origin),
    Include(Vec<Line>),
}

#[derive(Debug, Clone)]
enum Keyword {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    ProxyJump(String),
    ProxyCommand(String),
    UserKnownHostsFile(String),
    StrictHostKeyChecking(StrictHostKeyChecking),
}

/// A parsed configuration: the user's and the system's files, one `-F` file, or nothing.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    lines: Vec<Line>,
    files: Vec<PathBuf>,
}

/// `Include` nesting OpenSSH allows.
const MAX_INCLUDE_DEPTH: usize = 16;

impl SshConfig {
    /// What `ssh` reads without `-F`: `~/.ssh/config`, then `/etc/ssh/ssh_config`, each if it
    /// exists.
    pub fn load_default() -> Result<SshConfig, SshConfigError> {
        let mut config = SshConfig::default();
        if let Some(home) = dirs::home_dir() {
            let ssh_dir = home.join(".ssh");
            config.add_if_exists(&ssh_dir.join("config"), &ssh_dir)?;
        }
        let system = Path::new("/etc/ssh");
        config.add_if_exists(&system.join("ssh_config"), system)?;
        Ok(config)
    }

    /// What `ssh -F FILE` reads: that file only, which must exist (`/dev/null` reads nothing).
    pub fn load_file(path: &Path) -> Result<SshConfig, SshConfigError> {
        let mut config = SshConfig::default();
        if path == Path::new("/dev/null") {
            return Ok(config);
        }
        let include_base = dirs::home_dir().map(|h| h.join(".ssh")).unwrap_or_default();
        config.lines = read_file(path, &include_base, 0)?;
        config.files.push(path.to_path_buf());
        Ok(config)
    }

    fn add_if_exists(&mut self, path: &Path, include_base: &Path) -> Result<(), SshConfigError> {
        if path.is_file() {
            self.lines.extend(read_file(path, include_base, 0)?);
            self.files.push(path.to_path_buf());
        }
        Ok(())
    }

    /// The files read, for `-v`.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Fills what `hop` does not set from the block of its address (see `HostConfig::fill`).
    pub fn apply(&self, hop: &mut Hop) {
        self.lookup(&hop.address).fill(hop);
    }

    /// The settings for `destination` (the host as given to ssh: `ansible_host`, else the
    /// inventory name).
    pub fn lookup(&self, destination: &str) -> HostConfig {
        let mut found = HostConfig::default();
        walk(&self.lines, destination, &mut found);
        found
    }
}

/// Applies the lines that are active for `destination`, first value wins.
fn walk(lines: &[Line], destination: &str, found: &mut HostConfig) {
    let mut active = true;
    for line in lines {
        match line {
            Line::Host(patterns) => active = host_matches(destination, patterns),
            Line::Match(at) => {
                crate::logging::warn_once(format!(
                    "{at}: `Match` blocks in ssh config are not evaluated by dropship; \
                     the settings under it are ignored"
                ));
                active = false;
            }
            Line::Include(inner) if active => walk(inner, destination, found),
            Line::Set(keyword, at) if active => found.set(keyword, at, destination),
            _ => {}
        }
    }
}

impl HostConfig {
    /// Fills what the hop does not set from its ssh config block: `HostName` replaces the address
    /// (the destination it was looked up by), `IdentityFile` gives the first key file that exists.
    pub fn fill(self, hop: &mut Hop) {
        let found = self;
        let from = |setting_at: &Origin| Source::SshConfig(setting_at.to_string());
        if let Some(name) = found.host_name {
            hop.address = name.value;
            hop.sources.address = from(&name.at);
        }
        if hop.port.is_none()
            && let Some(port) = found.port
        {
            (hop.port, hop.sources.port) = (Some(port.value), from(&port.at));
        }
        if hop.user.is_none()
            && let Some(user) = found.user
        {
            (hop.user, hop.sources.user) = (Some(user.value), from(&user.at));
        }
        if hop.private_key.is_none()
            && let Some(key) = found.identity_files.into_iter().find(|k| k.value.exists())
        {
            (hop.private_key, hop.sources.private_key) = (Some(key.value), from(&key.at));
        }
        if hop.known_hosts.is_none() {
            hop.known_hosts = found.known_hosts.map(|s| s.value);
        }
        if hop.strict_host_key_checking.is_none() {
            hop.strict_host_key_checking = found.strict_host_key_checking.map(|s| s.value);
        }
    }

    fn set(&mut self, keyword: &Keyword, at: &Origin, destination: &str) {
        let setting = |value| Setting {
            value,
            at: at.clone(),
        };
        match keyword {
            Keyword::HostName(name) => {
                if self.host_name.is_none() {
                    let expanded = expand_tokens(name, destination);
                    self.host_name = Some(setting(expanded));
                }
            }
            Keyword::User(user) => {
                if self.user.is_none() {
                    self.user = Some(setting(user.clone()));
                }
            }
            Keyword::Port(port) => {
                if self.port.is_none() {
                    self.port = Some(Setting {
                        value: *port,
                        at: at.clone(),
                    });
                }
            }
            Keyword::IdentityFile(path) => {
                if !path.eq_ignore_ascii_case("none") {
                    let path = expand_path(path, destination);
                    self.identity_files.push(Setting {
                        value: path,
                        at: at.clone(),
                    });
                }
            }
            // ProxyJump and ProxyCommand exclude each other: the first one seen wins.
            Keyword::ProxyJump(spec) => {
                if self.proxy.is_none() {
                    self.proxy = Some(Setting {
                        value: Proxy::Jump(spec.clone()),
                        at: at.clone(),
                    });
                }
            }
            Keyword::ProxyCommand(command) => {
                if self.proxy.is_none() {
                    self.proxy = Some(Setting {
                        value: Proxy::Command(command.clone()),
                        at: at.clone(),
                    });
                }
            }
            Keyword::UserKnownHostsFile(path) => {
                if self.known_hosts.is_none() {
                    self.known_hosts = Some(Setting {
                        value: expand_path(path, destination),
                        at: at.clone(),
                    });
                }
            }
            Keyword::StrictHostKeyChecking(value) => {
                if self.strict_host_key_checking.is_none() {
                    self.strict_host_key_checking = Some(Setting {
                        value: *value,
                        at: at.clone(),
                    });
                }
            }
        }
    }
}

/// OpenSSH's `Host` rule: some pattern matches and no negated one does.
fn host_matches(destination: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if glob_matches(destination.as_bytes(), negated.as_bytes()) => {
                return false;
            }
            Some(_) => {}
            None => matched |= glob_matches(destination.as_bytes(), pattern.as_bytes()),
        }
    }
    matched
}

/// `%h` (the destination) and `%%`, as OpenSSH expands `HostName`.
fn expand_tokens(text: &str, destination: &str) -> String {
    expand(text, destination, false)
}

/// `~/`, and the tokens `%d` (home), `%u` (local user), `%h`, `%%` of file paths.
fn expand_path(text: &str, destination: &str) -> PathBuf {
    let text = match (text.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => format!("{}/{rest}", home.display()),
        _ => text.to_string(),
    };
    PathBuf::from(expand(&text, destination, true))
}

fn expand(text: &str, destination: &str, path: bool) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(destination),
            Some('d') if path => {
                out.push_str(&dirs::home_dir().unwrap_or_default().display().to_string())
            }
            Some('u') if path => out.push_str(&super::options::current_user()),
            // Other tokens are kept as written: the path then names no file, as ssh would
            // find none if it did not know the token.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn read_file(path: &Path, include_base: &Path, depth: usize) -> Result<Vec<Line>, SshConfigError> {
    let error = |line, message: String| SshConfigError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| error(None, format!("cannot read: {e}")))?;
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let at = || Origin {
            path: path.to_path_buf(),
            line: number,
        };
        let Some((keyword, rest)) = split_keyword(raw) else {
            continue;
        };
        let args = split_args(rest).map_err(|m| error(Some(number), m))?;
        let first = || {
            args.first()
                .cloned()
                .ok_or_else(|| error(Some(number), format!("{keyword}: missing argument")))
        };
        let set = |keyword| Line::Set(keyword, at());
        lines.push(match keyword.to_ascii_lowercase().as_str() {
            "host" => Line::Host(args),
            "match" => Line::Match(at()),
            "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(error(Some(number), "Include nested too deeply".into()));
                }
                let mut included = Vec::new();
                for pattern in &args {
                    for file in
                        include_files(pattern, include_base).map_err(|m| error(Some(number), m))?
                    {
                        included.extend(read_file(&file, include_base, depth + 1)?);
                    }
                }
                Line::Include(included)
            }
            "hostname" => set(Keyword::HostName(first()?)),
            "user" => set(Keyword::User(first()?)),
            "port" => {
                let value = first()?;
                let port = super::host::parse_port(&value).ok_or_else(|| {
                    error(Some(number), format!("Port '{value}' is not a port number"))
                })?;
                set(Keyword::Port(port))
            }
            "identityfile" => set(Keyword::IdentityFile(first()?)),
            "proxyjump" => set(Keyword::ProxyJump(first()?)),
            "proxycommand" => set(Keyword::ProxyCommand(rest.trim().to_string())),
            "userknownhostsfile" => set(Keyword::UserKnownHostsFile(first()?)),
            "stricthostkeychecking" => {
                let value = first()?;
                let strict = StrictHostKeyChecking::parse(&value).ok_or_else(|| {
                    error(
                        Some(number),
                        format!("StrictHostKeyChecking '{value}' is not yes, accept-new or no"),
                    )
                })?;
                set(Keyword::StrictHostKeyChecking(strict))
            }
            _ => continue,
        });
    }
    Ok(lines)
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`; `None` for blank and comment lines.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((keyword, rest))
}

/// Arguments split on whitespace, with `"..."` and `'...'` quoting and `\` escapes; an
/// unquoted `#` starting an argument ends the line.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(args),
            _ => {}
        }
        let mut arg = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => arg.extend(chars.next()),
                (_, c) => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err(format!("unterminated quote in '{text}'"));
        }
        args.push(arg);
    }
}

/// The files an `Include` pattern names, sorted like glob(3); wildcards only in the last
/// component. A pattern that matches nothing includes nothing, as in OpenSSH.
fn include_files(pattern: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
    let path = match (pattern.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if pattern.starts_with('/') => PathBuf::from(pattern),
        _ => base.join(pattern),
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let wild = |s: &str| s.contains(['*', '?', '[']);
    if wild(&dir.to_string_lossy()) {
        return Err(format!(
            "Include '{pattern}': wildcards are read only in the last path component"
        ));
    }
    if !wild(name) {
        return Ok(if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        });
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let entry_name = e.file_name();
            let entry_name = entry_name.to_string_lossy();
            // glob(3): a wildcard does not match a leading dot.
            !entry_name.starts_with('.') && glob_matches(entry_name.as_bytes(), name.as_bytes())
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, SshConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        let config = SshConfig::load_file(&path).unwrap();
        (dir, config)
    }

    fn user(config: &SshConfig, host: &str) -> Option<String> {
        config.lookup(host).user.map(|s| s.value)
    }

    /// Each case was checked with `ssh -G -F FILE HOST` (OpenSSH 9.2).
    #[test]
    fn host_patterns_and_first_value_wins_as_ssh_g_shows() {
        let (_dir, c) = config(concat!(
            "Host Node1\n  User upper\n",
            "Host node?\n  User q\n  Port 2201\n",
            "Host web-* !web-2\n  User webuser\n",
            "Host !only-negated\n  User neg\n",
            "Host a,b\n  User comma\n",
            "Host *.corp\n  HostName %h.internal\n",
            "Host *\n  User star\n  Port 2299\n",
        ));
        let cases = [
            ("node1", "q", 2201),
            ("NODE1", "star", 2299),
            ("web-1", "webuser", 2299),
            ("web-2", "star", 2299),
            ("only-negated", "star", 2299),
            ("a", "star", 2299),
            ("zzz", "star", 2299),
        ];
        for (host, expected_user, expected_port) in cases {
            let found = c.lookup(host);
            assert_eq!(
                found.user.map(|s| s.value).as_deref(),
                Some(expected_user),
                "{host}"
            );
            assert_eq!(found.port.map(|s| s.value), Some(expected_port), "{host}");
        }
        assert_eq!(
            c.lookup("x.corp").host_name.map(|s| s.value).as_deref(),
            Some("x.corp.internal")
        );
        assert_eq!(c.lookup("zzz").host_name, None);
    }

    #[test]
    fn includes_are_conditional_on_their_block_and_match_blocks_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/10-a"),
            "User fromincl\nHost other\n  Port 1111\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/.hidden"), "User hidden\n").unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            format!(
                concat!(
                    "Host n1\n  Include {}/conf.d/*\n  Port 3000\n",
                    "Host n1\n  User second\n  HostName real-n1\n",
                    "Match host real-n1\n  User matched\n  Port 4\n",
                    "Host n2\n  User=eq\n  Port = 4000\n  Hostname n2.%%.x # comment\n",
                    "  IdentityFile \"/keys/with space\"\n  IdentityFile /keys/second\n",
                    "  ProxyCommand ssh -W %h:%p -q ops@gw\n  ProxyJump ignored\n",
                    "  StrictHostKeyChecking accept-new\n  UserKnownHostsFile /kh/a /kh/b\n",
                ),
                dir.path().display()
            ),
        )
        .unwrap();
        let c = SshConfig::load_file(&path).unwrap();
        let n1 = c.lookup("n1");
        assert_eq!(n1.user.unwrap().value, "fromincl");
        assert_eq!(n1.port.as_ref().unwrap().value, 3000);
        assert_eq!(n1.port.unwrap().at.line, 3);
        assert_eq!(n1.host_name.unwrap().value, "real-n1");
        let other = c.lookup("other");
        assert_eq!((other.user, other.port), (None, None));
        let n2 = c.lookup("n2");
        assert_eq!(n2.user.unwrap().value, "eq");
        assert_eq!(n2.port.unwrap().value, 4000);
        assert_eq!(n2.host_name.unwrap().value, "n2.%.x");
        let keys: Vec<PathBuf> = n2.identity_files.into_iter().map(|s| s.value).collect();
        assert_eq!(
            keys,
            [
                PathBuf::from("/keys/with space"),
                PathBuf::from("/keys/second")
            ]
        );
        assert_eq!(
            n2.proxy.unwrap().value,
            Proxy::Command("ssh -W %h:%p -q ops@gw".into())
        );
        assert_eq!(
            n2.strict_host_key_checking.unwrap().value,
            StrictHostKeyChecking::AcceptNew
        );
        assert_eq!(n2.known_hosts.unwrap().value, PathBuf::from("/kh/a"));
        // The Match block's lines apply to nobody, not to the Host block above it.
        assert_eq!(c.lookup("real-n1").user, None);
    }

    #[test]
    fn bad_values_name_file_and_line_and_dev_null_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host x\n  Port none\n").unwrap();
        let err = SshConfig::load_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("config:2: Port 'none' is not a port number"),
            "{err}"
        );
        std::fs::write(&path, "StrictHostKeyChecking maybe\n").unwrap();
        let err = SshConfig::load_file(&path).unwrap_err().to_string();
        assert!(err.contains(":1: StrictHostKeyChecking 'maybe'"), "{err}");
        let err = SshConfig::load_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing: cannot read"), "{err}");
        let none = SshConfig::load_file(Path::new("/dev/null")).unwrap();
        assert_eq!(user(&none, "x"), None);
    }
}
