//! Ansible host patterns (`--limit`), ported from `InventoryManager`: `a:b` / `a,b` unions,
//! `&` intersections and `!` exclusions applied in that order, globs, `~regex`, `group[0]`,
//! `group[1:3]`, and in a limit `@FILE` parts whose file holds one pattern per line (a retry
//! file). Ansible only warns about a part matching nothing; dropship refuses it.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::InventoryError;
use super::hostpattern::parse_address;
use super::model::InventoryData;

static SUBSCRIPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$").expect("subscript pattern")
});
static COLON_PARTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:[^\s:\[\]]|\[[^\]]*\])+").expect("colon split pattern"));

pub fn select(data: &InventoryData, pattern: &str) -> Result<Vec<String>, InventoryError> {
    evaluate(data, pattern, split_host_pattern(pattern))
}

/// A `--limit`: a pattern whose `@FILE` parts are replaced by the lines of FILE, each a
/// pattern of its own (Ansible's `InventoryManager.subset`, which reads retry files so; the
/// path is taken as written, relative to the working directory).
pub fn limit(data: &InventoryData, subset: &str) -> Result<Vec<String>, InventoryError> {
    let mut parts = Vec::new();
    for part in split_host_pattern(subset) {
        let Some(file) = part.strip_prefix('@') else {
            parts.push(part);
            continue;
        };
        let path = std::path::Path::new(file);
        let message = if !path.exists() {
            Some(format!("Unable to find limit file {file}"))
        } else if !path.is_file() {
            Some(format!(
                "Limit starting with \"@\" must be a file, not a directory: {file}"
            ))
        } else {
            None
        };
        if let Some(message) = message {
            return Err(InventoryError::Pattern {
                pattern: subset.to_string(),
                message,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parts.extend(
            text.split('\n')
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_string),
        );
    }
    evaluate(data, subset, parts)
}

/// The hosts `parts` select (unions, then `&` intersections, then `!` exclusions); errors
/// name `pattern`.
fn evaluate(
    data: &InventoryData,
    pattern: &str,
    parts: Vec<String>,
) -> Result<Vec<String>, InventoryError> {
    let fail = |message: String| InventoryError::Pattern {
        pattern: pattern.to_string(),
        message,
    };
    let (mut regular, mut intersect, mut exclude) = (Vec::new(), Vec::new(), Vec::new());
    for part in &parts {
        match part.chars().next() {
            Some('!') => exclude.push(part.as_str()),
            Some('&') => intersect.push(part.as_str()),
            _ => regular.push(part.as_str()),
        }
    }
    if regular.is_empty() {
        regular.push("all");
    }
    let mut hosts: Vec<String> = Vec::new();
    for part in regular.into_iter().chain(intersect).chain(exclude) {
        if data.hosts.contains_key(part) {
            if !hosts.iter().any(|h| h == part) {
                hosts.push(part.to_string());
            }
            continue;
        }
        let matched = match_one(data, part).map_err(fail)?;
        match part.chars().next() {
            Some('!') => {
                let drop: HashSet<&String> = matched.iter().collect();
                hosts.retain(|h| !drop.contains(h));
            }
            Some('&') => {
                let keep: HashSet<&String> = matched.iter().collect();
                hosts.retain(|h| keep.contains(h));
            }
            _ => {
                let existing: HashSet<String> = hosts.iter().cloned().collect();
                hosts.extend(matched.into_iter().filter(|h| !existing.contains(h)));
            }
        }
    }
    let mut seen = HashSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    Ok(hosts)
}

/// `split_host_pattern`: commas, else a single address, else the legacy `:` separator.
fn split_host_pattern(pattern: &str) -> Vec<String> {
    let parts: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(str::to_string).collect()
    } else if parse_address(pattern).is_some() {
        vec![pattern.to_string()]
    } else {
        COLON_PARTS
            .find_iter(pattern)
            .map(|m| m.as_str().to_string())
            .collect()
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn match_one(data: &InventoryData, part: &str) -> Result<Vec<String>, String> {
    let pattern = part.strip_prefix(['&', '!']).unwrap_or(part);
    if pattern.is_empty() {
        return Err(format!("empty pattern after '{part}'"));
    }
    let (expr, subscript) = split_subscript(pattern)?;
    let hosts = enumerate_matches(data, &expr)?;
    apply_subscript(hosts, subscript)
        .ok_or_else(|| format!("No hosts matched the subscripted pattern '{pattern}'"))
}

#[derive(Clone, Copy)]
enum Subscript {
    Index(i64),
    Range(usize, Option<usize>),
}

fn split_subscript(pattern: &str) -> Result<(String, Option<Subscript>), String> {
    if pattern.starts_with('~') {
        return Ok((pattern.to_string(), None));
    }
    let Some(caps) = SUBSCRIPT.captures(pattern) else {
        return Ok((pattern.to_string(), None));
    };
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("subscript {s} is too large"))
    };
    let subscript = if let Some(index) = caps.get(2) {
        Subscript::Index(number(index.as_str())?)
    } else {
        let start = number(&caps[3])? as usize;
        // Ansible treats an empty end as "to the last host" and an end of 0 as no range at all.
        let end = match &caps[5] {
            "" => None,
            end => Some(number(end)? as usize),
        };
        match end {
            Some(0) => Subscript::Index(start as i64),
            end => Subscript::Range(start, end),
        }
    };
    Ok((caps[1].to_string(), Some(subscript)))
}

/// `None` when an index is out of range (Ansible raises "No hosts matched").
fn apply_subscript(hosts: Vec<String>, subscript: Option<Subscript>) -> Option<Vec<String>> {
    let Some(subscript) = subscript else {
        return Some(hosts);
    };
    if hosts.is_empty() {
        return Some(hosts);
    }
    let len = hosts.len();
    match subscript {
        Subscript::Index(i) => {
            let i = if i < 0 {
                len.checked_sub(i.unsigned_abs() as usize)?
            } else {
                i as usize
            };
            hosts.get(i).map(|h| vec![h.clone()])
        }
        Subscript::Range(start, end) => {
            let end = end.unwrap_or(len - 1).saturating_add(1).min(len);
            Some(if start < end {
                hosts[start..end].to_vec()
            } else {
                Vec::new()
            })
        }
    }
}

fn enumerate_matches(data: &InventoryData, pattern: &str) -> Result<Vec<String>, String> {
    let matcher = compile(pattern)?;
    let groups: Vec<&String> = data.groups.keys().filter(|g| matcher.is_match(g)).collect();
    let mut results: Vec<String> = Vec::new();
    for group in &groups {
        results.extend(data.group_hosts(group));
    }
    let special = pattern.starts_with('~') || pattern.contains(['.', '?', '*', '[']);
    if groups.is_empty() || special {
        results.extend(data.hosts.keys().filter(|h| matcher.is_match(h)).cloned());
    }
    if results.is_empty() && groups.is_empty() && pattern != "all" {
        return Err(format!(
            "'{pattern}' matches no host or group in the inventory (Ansible: \"Could not match supplied host pattern\")"
        ));
    }
    Ok(results)
}

/// `~regex` matched from the start (Python's `re.match`), else a shell glob (`fnmatch`).
fn compile(pattern: &str) -> Result<Regex, String> {
    let source = match pattern.strip_prefix('~') {
        Some(regex) => format!("^(?:{regex})"),
        None => format!("^(?s:{})$", glob_to_regex(pattern)),
    };
    Regex::new(&source).map_err(|_| format!("Invalid host list pattern: {pattern}"))
}

/// `fnmatch.translate`: `*`, `?`, `[seq]`, `[!seq]`; an unclosed `[` is literal.
fn glob_to_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                    continue;
                }
                let inner: Vec<char> = chars[i..j].to_vec();
                i = j + 1;
                out.push_str(&char_class(&inner));
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

fn char_class(inner: &[char]) -> String {
    if inner.is_empty() {
        return "[^\\s\\S]".into();
    }
    if inner == ['!'] {
        return ".".into();
    }
    let (negated, body) = match inner.first() {
        Some('!') => (true, &inner[1..]),
        _ => (false, inner),
    };
    let mut class = String::from(if negated { "[^" } else { "[" });
    for &c in body {
        if c == '-' || c.is_alphanumeric() {
            class.push(c);
        } else {
            class.push('\\');
            class.push(c);
        }
    }
    class.push(']');
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> InventoryData {
        let mut data = InventoryData::default();
        for (group, hosts) in [("web", ["w1", "w2", "w3"]), ("db", ["d1", "w2", "d3"])] {
            data.add_group(group).unwrap();
            for host in hosts {
                data.add_host(host, group, None).unwrap();
            }
        }
        data.reconcile().unwrap();
        data
    }

    #[test]
    fn patterns_like_ansible() {
        let data = inventory();
        let sel = |p: &str| select(&data, p).unwrap();
        assert_eq!(sel("web:!db"), ["w1", "w3"]);
        assert_eq!(sel("web:&db"), ["w2"]);
        assert_eq!(sel("db,w1"), ["d1", "w2", "d3", "w1"]);
        assert_eq!(sel("w*"), ["w1", "w2", "w3"]);
        assert_eq!(sel("~d[13]"), ["d1", "d3"]);
        assert_eq!(sel("web[0]"), ["w1"]);
        assert_eq!(sel("web[-1]"), ["w3"]);
        assert_eq!(sel("web[1:]"), ["w2", "w3"]);
        assert_eq!(sel("all[0:1]"), ["w1", "w2"]);
        assert_eq!(sel("!web"), ["d1", "d3"]);
        assert!(
            select(&data, "nosuch")
                .unwrap_err()
                .to_string()
                .contains("nosuch")
        );
        assert!(select(&data, "web[7]").is_err());
    }

    #[test]
    fn a_limit_reads_at_files_a_pattern_per_line_among_other_parts() {
        let data = inventory();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("push.retry");
        std::fs::write(&file, "w3\n\n  d1  \n!w2\n").unwrap();
        let at = format!("@{}", file.display());
        let sel = |p: &str| limit(&data, p).unwrap();
        assert_eq!(sel(&at), ["w3", "d1"]);
        assert_eq!(sel(&format!("{at},db")), ["w3", "d1", "d3"]);
        assert_eq!(sel(&format!("db:{at}")), ["d1", "d3", "w3"]);
        // As in Ansible, only a part that starts with `@` names a file.
        assert!(limit(&data, &format!("web:&{at}")).is_err());
        assert_eq!(sel("web:!db"), ["w1", "w3"], "a plain limit as before");
        let missing = limit(&data, "@/nonexistent.retry").unwrap_err().to_string();
        assert!(
            missing.contains("Unable to find limit file /nonexistent.retry"),
            "{missing}"
        );
        let dir_given = format!("@{}", dir.path().display());
        let err = limit(&data, &dir_given).unwrap_err().to_string();
        assert!(err.contains("must be a file, not a directory"), "{err}");
        std::fs::write(&file, "w1\nnosuch\n").unwrap();
        let err = limit(&data, &at).unwrap_err().to_string();
        assert!(err.contains("nosuch"), "{err}");
    }
}
