//! Host entries as inventories write them: `name`, `name:port`, `[::1]:2222`, and ranges such as
//! `node[01:20]`, `[a:f]`, `[1:10:3]` (several per name). Ports Ansible's `parse_address`;
//! ranges port `expand_hostname_range`.

use std::sync::LazyLock;

use regex::Regex;

/// A range that would expand past this many names is refused rather than exhausting memory.
const MAX_EXPANDED: usize = 1_000_000;

const NUMERIC_RANGE: &str = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]";
const HEX_RANGE: &str = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]";
const ALNUM_RANGE: &str = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";

struct AddressPatterns {
    bracketed_hostport: Regex,
    hostport: Regex,
    ipv4: Regex,
    ipv6: Regex,
    hostname: Regex,
}

static PATTERNS: LazyLock<AddressPatterns> = LazyLock::new(|| {
    let ipv4_part = format!(r"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{NUMERIC_RANGE})");
    let h = format!(r"(?:[0-9a-f]{{1,4}}|{HEX_RANGE})");
    let ipv6 = [
        format!(r"(?:{h}:){{7}}{h}"),
        format!(r"(?:{h}:){{1,6}}:"),
        format!(r"(?:{h}:)(?::{h}){{1,6}}"),
        format!(r"(?:{h}:){{2}}(?::{h}){{1,5}}"),
        format!(r"(?:{h}:){{3}}(?::{h}){{1,4}}"),
        format!(r"(?:{h}:){{4}}(?::{h}){{1,3}}"),
        format!(r"(?:{h}:){{5}}(?::{h}){{1,2}}"),
        format!(r"(?:{h}:){{6}}(?::{h})"),
        format!(r":(?::{h}){{1,6}}"),
        format!(r"{h}?::"),
        format!(r"(?:0:){{6}}(?:{h}\.){{3}}{h}"),
        format!(r"::(?:ffff:)?(?:{h}\.){{3}}{h}"),
        format!(r"(?:0:){{5}}ffff:(?:{h}\.){{3}}{h}"),
    ]
    .join("|");
    // Python's label ends with a lookbehind `(?<![_-])`; the same set written without lookaround.
    let label =
        format!(r"(?:(?:\w|{ALNUM_RANGE})(?:[\w-]|{ALNUM_RANGE})*)?(?:[^\W_]|{ALNUM_RANGE})");
    let compile = |pattern: String| Regex::new(&pattern).expect("address pattern compiles");
    AddressPatterns {
        bracketed_hostport: compile(r"^\[(.+)\]:([0-9]+)$".into()),
        hostport: compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$".into()),
        ipv4: compile(format!(r"(?i)^(?:{ipv4_part}\.){{3}}{ipv4_part}$")),
        ipv6: compile(format!(r"(?i)^(?:{ipv6})$")),
        hostname: compile(format!(r"(?i)^{label}(?:\.{label})*$")),
    }
});

/// Splits an optional port off a host identifier like `parse_address(allow_ranges=True)`;
/// `None` when Ansible would not recognise it as an address (it then keeps the text whole).
pub fn parse_address(address: &str) -> Option<(String, Option<u16>)> {
    let patterns = &*PATTERNS;
    let mut address = address.to_string();
    let mut port = None;
    for pattern in [&patterns.bracketed_hostport, &patterns.hostport] {
        if let Some(caps) = pattern.captures(&address) {
            // A port Python's int() accepts but that does not fit u16 still fails here: no address.
            port = Some(caps[2].parse::<u16>().ok()?);
            address = caps[1].to_string();
        }
    }
    let valid = [&patterns.ipv4, &patterns.ipv6, &patterns.hostname]
        .iter()
        .any(|p| p.is_match(&address));
    valid.then_some((address, port))
}

/// Why a range could not be expanded (Ansible's wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("host range must be begin:end or begin:end:step in '{0}'")]
    Shape(String),
    #[error("host range must specify end value in '{0}'")]
    NoEnd(String),
    #[error("host range must specify equal-length begin and end formats in '{0}'")]
    UnequalWidth(String),
    #[error("host range must have begin <= end in '{0}'")]
    Backwards(String),
    #[error("host range bounds are not numbers or letters in '{0}'")]
    NotNumeric(String),
    #[error("host range expands to more than {MAX_EXPANDED} names in '{0}'")]
    TooLarge(String),
}

/// Host names and port of one inventory host entry, like `_expand_hostpattern`.
pub fn expand_host_entry(entry: &str) -> Result<(Vec<String>, Option<u16>), RangeError> {
    let (pattern, port) = parse_address(entry).unwrap_or_else(|| (entry.to_string(), None));
    let names = if pattern.contains('[') {
        let mut names = Vec::new();
        expand_ranges(&pattern, &mut names)?;
        names
    } else {
        vec![pattern]
    };
    Ok((names, port))
}

fn expand_ranges(line: &str, out: &mut Vec<String>) -> Result<(), RangeError> {
    let shape = || RangeError::Shape(line.to_string());
    // Python replaces the first '[' and then the first ']' by '|' and needs exactly three parts.
    let marked = line.replacen('[', "|", 1).replacen(']', "|", 1);
    let parts: Vec<&str> = marked.split('|').collect();
    let [head, range, tail] = parts[..] else {
        return Err(shape());
    };
    let bounds: Vec<&str> = range.split(':').collect();
    let (begin, end, step) = match bounds[..] {
        [b, e] => (b, e, "1"),
        [b, e, s] => (b, e, s),
        _ => return Err(shape()),
    };
    let begin = if begin.is_empty() { "0" } else { begin };
    if end.is_empty() {
        return Err(RangeError::NoEnd(line.to_string()));
    }
    let width = (begin.starts_with('0') && begin.len() > 1).then_some(begin.len());
    if width.is_some_and(|w| w != end.len()) {
        return Err(RangeError::UnequalWidth(line.to_string()));
    }
    let items = range_items(line, begin, end, step)?;
    for item in items {
        let item = match width {
            Some(w) => zfill(&item, w),
            None => item,
        };
        let name = format!("{head}{item}{tail}");
        if name.contains('[') {
            expand_ranges(&name, out)?;
        } else {
            out.push(name);
        }
        if out.len() > MAX_EXPANDED {
            return Err(RangeError::TooLarge(line.to_string()));
        }
    }
    Ok(())
}

/// Letters when both bounds are found in `string.ascii_letters`, else integers.
fn range_items(line: &str, begin: &str, end: &str, step: &str) -> Result<Vec<String>, RangeError> {
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let step = python_int(step);
    if let (Some(b), Some(e)) = (LETTERS.find(begin), LETTERS.find(end)) {
        if b > e {
            return Err(RangeError::Backwards(line.to_string()));
        }
        if let Some(step) = step.filter(|s| *s != 0) {
            return Ok(python_slice(&LETTERS[b..=e], step));
        }
    }
    let not_numeric = || RangeError::NotNumeric(line.to_string());
    let (b, e, s) = (
        python_int(begin).ok_or_else(not_numeric)?,
        python_int(end).ok_or_else(not_numeric)?,
        step.ok_or_else(not_numeric)?,
    );
    if s == 0 {
        return Err(RangeError::Shape(line.to_string()));
    }
    // range(b, e + 1, s)
    let stop = e + 1;
    let count = if s > 0 {
        (stop - b).max(0) / s
    } else {
        (b - stop).max(0) / -s
    };
    if count > MAX_EXPANDED as i128 {
        return Err(RangeError::TooLarge(line.to_string()));
    }
    let mut items = Vec::new();
    let mut i = b;
    while (s > 0 && i < stop) || (s < 0 && i > stop) {
        items.push(i.to_string());
        i += s;
    }
    Ok(items)
}

/// `letters[::step]`; a negative step over an ascending slice is empty in Python.
fn python_slice(letters: &str, step: i128) -> Vec<String> {
    if step < 0 {
        return Vec::new();
    }
    letters
        .chars()
        .step_by(step as usize)
        .map(String::from)
        .collect()
}

/// Python's `int(text)` for the forms a range can hold: sign, digits, underscores, spaces.
fn python_int(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let ok = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !ok {
        return None;
    }
    let value: i128 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Python's `str.zfill`.
fn zfill(text: &str, width: usize) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let pad = width.saturating_sub(text.len());
    format!("{sign}{}{digits}", "0".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entry: &str) -> Vec<String> {
        expand_host_entry(entry).unwrap().0
    }

    #[test]
    fn ports_and_addresses() {
        assert_eq!(
            parse_address("node1:2222"),
            Some(("node1".into(), Some(2222)))
        );
        assert_eq!(
            parse_address("[::1]:2222"),
            Some(("::1".into(), Some(2222)))
        );
        assert_eq!(parse_address("fe80::1"), Some(("fe80::1".into(), None)));
        assert_eq!(
            parse_address("10.0.0.1:22"),
            Some(("10.0.0.1".into(), Some(22)))
        );
        assert_eq!(parse_address("bad_"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(names("node[01:03]"), ["node01", "node02", "node03"]);
        assert_eq!(names("n[a:c]"), ["na", "nb", "nc"]);
        assert_eq!(names("n[1:10:4]"), ["n1", "n5", "n9"]);
        assert_eq!(names("r[1:2]n[a:b]"), ["r1na", "r1nb", "r2na", "r2nb"]);
        assert_eq!(
            expand_host_entry("w[1:2]:2200").unwrap(),
            (vec!["w1".into(), "w2".into()], Some(2200))
        );
        assert!(matches!(
            expand_host_entry("n[1:]"),
            Err(RangeError::NoEnd(_))
        ));
        assert!(matches!(
            expand_host_entry("n[01:100]"),
            Err(RangeError::UnequalWidth(_))
        ));
        assert!(matches!(
            expand_host_entry("n[c:a]"),
            Err(RangeError::Backwards(_))
        ));
        assert!(matches!(
            expand_host_entry("n[1:2:3:4]"),
            Err(RangeError::Shape(_))
        ));
        assert!(matches!(
            expand_host_entry("n[0:99999999]"),
            Err(RangeError::TooLarge(_))
        ));
    }
}
