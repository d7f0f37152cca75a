//! A known_hosts reader as OpenSSH reads it: comma lists, `[host]:port`, hashed `|1|` entries,
//! `*`/`?` wildcards, `!` negation, `@revoked`, several keys per host, whitespace of any width.
//!
//! russh's own helper splits on single spaces, ignores markers and negation, and calls a host
//! "changed" as soon as one recorded key of the same type differs, so we read the file ourselves.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// What known_hosts says about the key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A recorded key for this host matches.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// Keys are recorded for this host (at these 1-based lines) and none matches.
    Changed { lines: Vec<usize> },
    /// The presented key is marked `@revoked`.
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    CertAuthority,
    Revoked,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    marker: Option<Marker>,
    patterns: String,
    key: PublicKey,
}

/// The parsed entries of one known_hosts file (a missing file has none).
#[derive(Debug)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    pub fn read(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts {
                entries: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Lines that do not parse are skipped, as OpenSSH does.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| parse_line(index + 1, line))
            .collect();
        KnownHosts { entries }
    }

    fn for_host<'a>(&'a self, host: &str, port: u16) -> impl Iterator<Item = &'a Entry> + 'a {
        let name = host_pattern(host, port).to_ascii_lowercase();
        self.entries
            .iter()
            .filter(move |e| host_matches(&name, &e.patterns))
    }

    /// Decide on the key `host:port` presented.
    pub fn verdict(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let mut recorded_lines = Vec::new();
        for entry in self.for_host(host, port) {
            match entry.marker {
                Some(Marker::Revoked) if same_key(&entry.key, key) => return Verdict::Revoked,
                Some(_) => {}
                None if same_key(&entry.key, key) => return Verdict::Known,
                None => recorded_lines.push(entry.line),
            }
        }
        if recorded_lines.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Changed {
                lines: recorded_lines,
            }
        }
    }

    /// Key algorithms recorded for `host:port`, in file order, without repeats.
    pub fn recorded_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for entry in self.for_host(host, port).filter(|e| e.marker.is_none()) {
            let algorithm = entry.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        algorithms
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn parse_line(number: usize, line: &str) -> Option<Entry> {
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@revoked" => Some(Marker::Revoked),
        "@cert-authority" => Some(Marker::CertAuthority),
        _ => None,
    };
    if marker.is_some() {
        first = fields.next()?;
    }
    let _key_type = fields.next()?;
    let key = russh::keys::parse_public_key_base64(fields.next()?)
        .inspect_err(|e| tracing::debug!("known_hosts line {number}: unreadable key skipped: {e}"))
        .ok()?;
    Some(Entry {
        line: number,
        marker,
        patterns: first.to_string(),
        key,
    })
}

/// The name known_hosts files use: `host` on port 22, `[host]:port` otherwise.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The line to add to known_hosts for this key.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> String {
    let openssh = key
        .to_openssh()
        .unwrap_or_else(|_| key.algorithm().to_string());
    // to_openssh() appends the comment, which a server key does not have; keep type and base64.
    let key_text: Vec<&str> = openssh.split_whitespace().take(2).collect();
    format!("{} {}", host_pattern(host, port), key_text.join(" "))
}

/// OpenSSH's match_hostname: the line matches when a pattern matches and no `!pattern` does.
fn host_matches(name: &str, patterns: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let hit = if let Some(hashed) = pattern.strip_prefix("|1|") {
            hashed_matches(name, hashed)
        } else {
            glob_matches(name.as_bytes(), pattern.to_ascii_lowercase().as_bytes())
        };
        if hit && negated {
            return false;
        }
        matched |= hit;
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, written by `HashKnownHosts yes`.
fn hashed_matches(name: &str, salt_and_hash: &str) -> bool {
    use data_encoding::BASE64;
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` any run of characters, `?` exactly one.
pub(super) fn glob_matches(name: &[u8], pattern: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(b'*'), _) => {
            glob_matches(name, &pattern[1..])
                || (!name.is_empty() && glob_matches(&name[1..], pattern))
        }
        (Some(b'?'), Some(_)) => glob_matches(&name[1..], &pattern[1..]),
        (Some(p), Some(n)) if p == n => glob_matches(&name[1..], &pattern[1..]),
        _ => false,
    }
}

/// Learn a host key (accept-new): append its line under an exclusive lock, after checking again
/// under that lock, so concurrent tasks and processes neither duplicate nor override an entry.
/// Returns the verdict found under the lock; the line was added only if it was `Unknown`.
pub fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<Verdict> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    file.lock()?;
    let text = std::fs::read_to_string(path)?;
    let verdict = KnownHosts::parse(&text).verdict(host, port, key);
    if verdict == Verdict::Unknown {
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        file.write_all(format!("{separator}{}\n", entry_line(host, port, key)).as_bytes())?;
        file.sync_data()?;
    }
    Ok(verdict)
}

/// `SHA256:…`, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The file in effect: the first given, else ~/.ssh/known_hosts.
pub fn default_path() -> PathBuf {
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".ssh")
        .join("known_hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    #[test]
    fn plain_port_and_list_entries() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\n[node1]:2222\tssh-ed25519  {ED}\nalpha,Beta ssh-ed25519 {ED2} me@x\n"
        ));
        assert_eq!(kh.verdict("node1", 2222, &key(ED)), Verdict::Known);
        assert_eq!(kh.verdict("node1", 22, &key(ED)), Verdict::Unknown);
        assert_eq!(kh.verdict("beta", 22, &key(ED2)), Verdict::Known);
        assert_eq!(
            kh.verdict("alpha", 22, &key(ED)),
            Verdict::Changed { lines: vec![4] }
        );
    }

    #[test]
    fn hashed_entries_match_by_hmac() {
        // From russh's test-suite: |1|… is HMAC-SHA1 of "example.com".
        let kh = KnownHosts::parse(
            "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF\n",
        );
        let k = key("AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF");
        assert_eq!(kh.verdict("example.com", 22, &k), Verdict::Known);
        assert_eq!(kh.verdict("example.org", 22, &k), Verdict::Unknown);
    }

    #[test]
    fn several_keys_per_host_any_match_is_enough() {
        let kh = KnownHosts::parse(&format!("h ssh-ed25519 {ED2}\nh ssh-ed25519 {ED}\n"));
        assert_eq!(kh.verdict("h", 22, &key(ED)), Verdict::Known);
        assert_eq!(kh.recorded_algorithms("h", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(&format!(
            "node*,!node9 ssh-ed25519 {ED}\n@revoked * ssh-ed25519 {ED2}\n@cert-authority * ssh-ed25519 {ED}\n"
        ));
        assert_eq!(kh.verdict("node3", 22, &key(ED)), Verdict::Known);
        assert_eq!(kh.verdict("node9", 22, &key(ED)), Verdict::Unknown);
        assert_eq!(kh.verdict("node3", 22, &key(ED2)), Verdict::Revoked);
        assert_eq!(kh.verdict("other", 22, &key(ED)), Verdict::Unknown);
    }

    #[test]
    fn learning_appends_once_and_never_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        assert_eq!(learn(&path, "n", 2200, &key(ED)).unwrap(), Verdict::Unknown);
        assert_eq!(learn(&path, "n", 2200, &key(ED)).unwrap(), Verdict::Known);
        assert_eq!(
            learn(&path, "n", 2200, &key(ED2)).unwrap(),
            Verdict::Changed { lines: vec![1] }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[n]:2200 ssh-ed25519 {ED}\n"));
        assert_eq!(entry_line("n", 22, &key(ED)), format!("n ssh-ed25519 {ED}"));
    }
}
