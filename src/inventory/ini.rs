//! INI inventories, read like ansible-core's `plugins/inventory/ini.py`.

use std::collections::HashMap;
use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::Regex;
use serde_json::Value;

use super::hostpattern::expand_host_entry;
use super::model::{GraphError, InventoryData};
use super::{pyliteral, shlex};

static SECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$").expect("section pattern")
});
static GROUP_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([^:\]\s]+)\s*(?:#.*)?$").expect("group pattern"));

/// A problem at one line of an INI file; the caller adds the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Hosts,
    Children,
    Vars,
}

/// A group used before it was declared: `[g:vars]` or a `[parent:children]` entry.
struct Pending {
    line: usize,
    state: State,
    parents: Vec<String>,
}

/// Adds what `text` declares to `data`.
pub fn parse(data: &mut InventoryData, text: &str) -> Result<(), IniError> {
    let mut pending: IndexMap<String, Pending> = IndexMap::new();
    let mut group = "ungrouped".to_string();
    let mut state = State::Hosts;
    for (index, raw) in python_splitlines(text).into_iter().enumerate() {
        let lineno = index + 1;
        let fail = |message: String| IniError {
            line: lineno,
            message,
        };
        let graph = |e: GraphError| IniError {
            line: lineno,
            message: e.to_string(),
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(caps) = SECTION.captures(line) {
            group = caps[1].to_string();
            let suffix = caps.get(2).map(|m| m.as_str());
            state = match suffix {
                None | Some("hosts") => State::Hosts,
                Some("children") => State::Children,
                Some("vars") => State::Vars,
                Some(other) => {
                    return Err(fail(format!(
                        "Section [{group}:{other}] has unknown type: {other}"
                    )));
                }
            };
            if !data.groups.contains_key(&group) {
                if state == State::Vars && !pending.contains_key(&group) {
                    pending.insert(
                        group.clone(),
                        Pending {
                            line: lineno,
                            state,
                            parents: Vec::new(),
                        },
                    );
                }
                data.add_group(&group).map_err(graph)?;
            }
            if state != State::Vars {
                match pending.get(&group).map(|p| p.state) {
                    Some(State::Children) => {
                        add_pending_children(data, &group, &mut pending).map_err(graph)?
                    }
                    Some(State::Vars) => {
                        pending.shift_remove(&group);
                    }
                    _ => {}
                }
            }
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(fail(format!(
                "Invalid section entry: '{line}'. Please make sure that there are no spaces in the section entry, \
                 and that there are no other invalid characters"
            )));
        }
        match state {
            State::Hosts => {
                let (hosts, port, vars) = parse_host_line(line).map_err(fail)?;
                for host in hosts {
                    data.add_host(&host, &group, port).map_err(graph)?;
                    for (key, value) in &vars {
                        data.set_host_var(&host, key, value.clone())
                            .map_err(graph)?;
                    }
                }
            }
            State::Vars => {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(fail(format!("Expected key=value, got: {line}")));
                };
                data.set_group_var(&group, key.trim(), parse_value(value.trim()))
                    .map_err(graph)?;
            }
            State::Children => {
                let child = GROUP_NAME
                    .captures(line)
                    .map(|c| c[1].to_string())
                    .ok_or_else(|| fail(format!("Expected group name, got: {line}")))?;
                if data.groups.contains_key(&child) {
                    data.add_child(&group, &child).map_err(graph)?;
                } else {
                    match pending.get_mut(&child) {
                        Some(p) if p.state == State::Children => p.parents.push(group.clone()),
                        // ini.py fails here too (the vars declaration has no parents list).
                        Some(_) => {
                            return Err(fail(format!(
                                "Section [{group}:children] includes undefined group '{child}'"
                            )));
                        }
                        None => {
                            pending.insert(
                                child,
                                Pending {
                                    line: lineno,
                                    state,
                                    parents: vec![group.clone()],
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    if let Some((name, decl)) = pending.first() {
        let message = match decl.state {
            State::Vars => format!("Section [{name}:vars] not valid for undefined group '{name}'."),
            _ => format!(
                "Section [{}:children] includes undefined group '{name}'.",
                decl.parents.last().map(String::as_str).unwrap_or_default()
            ),
        };
        return Err(IniError {
            line: decl.line,
            message,
        });
    }
    Ok(())
}

fn add_pending_children(
    data: &mut InventoryData,
    group: &str,
    pending: &mut IndexMap<String, Pending>,
) -> Result<(), GraphError> {
    let Some(decl) = pending.shift_remove(group) else {
        return Ok(());
    };
    for parent in decl.parents {
        data.add_child(&parent, group)?;
        if pending
            .get(&parent)
            .is_some_and(|p| p.state == State::Children)
        {
            add_pending_children(data, &parent, pending)?;
        }
    }
    Ok(())
}

type HostLine = (Vec<String>, Option<u16>, Vec<(String, Value)>);

/// `host[:port] key=value ...` split as shlex does, ranges expanded.
fn parse_host_line(line: &str) -> Result<HostLine, String> {
    let tokens = shlex::split(line, true)
        .map_err(|e| format!("Error parsing host definition '{line}': {e}"))?;
    let Some(entry) = tokens.first() else {
        return Err(format!("Expected a host name, got: {line}"));
    };
    let (hosts, port) = expand_host_entry(entry).map_err(|e| e.to_string())?;
    if entry.trim().ends_with(':') && port.is_none() {
        return Err(format!(
            "Invalid host pattern '{entry}' supplied, ending in ':' is not allowed, this character is reserved to provide a port."
        ));
    }
    if hosts.iter().any(|h| h.trim() == "---") {
        return Err(format!(
            "Invalid host pattern '{entry}' supplied, '---' is normally a sign this is a YAML file."
        ));
    }
    let mut vars: Vec<(String, Value)> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    for token in &tokens[1..] {
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!(
                "Expected key=value host variable assignment, got: {token}"
            ));
        };
        let value = parse_value(value);
        match positions.get(key) {
            Some(&i) => vars[i].1 = value,
            None => {
                positions.insert(key.to_string(), vars.len());
                vars.push((key.to_string(), value));
            }
        }
    }
    Ok((hosts, port, vars))
}

/// ini.py's `_parse_value`: a Python literal when it is one, else the text.
pub fn parse_value(text: &str) -> Value {
    pyliteral::literal_eval(text).unwrap_or_else(|| Value::String(text.to_string()))
}

/// Python's `str.splitlines()`: every line boundary Python knows, no trailing empty line.
fn python_splitlines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if boundary {
            lines.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n') {
                chars.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_lines() {
        let err = |text: &str| parse(&mut InventoryData::default(), text).unwrap_err();
        assert_eq!(err("[a]\nh\n[a:bogus]\n").line, 3);
        assert!(
            err("[a]\nh\n[a:bogus]\n")
                .message
                .contains("unknown type: bogus")
        );
        assert_eq!(
            err("[x:vars]\na=1\n").message,
            "Section [x:vars] not valid for undefined group 'x'."
        );
        assert_eq!(err("[p:children]\nc\n").line, 2);
        assert!(err("[a]\nh[c:a]\n").message.contains("begin <= end"));
        assert!(err("[a]\nh 'x\n").message.contains("No closing quotation"));
    }

    #[test]
    fn later_declarations_resolve_pending_ones() {
        let mut data = InventoryData::default();
        parse(&mut data, "[p:children]\nc\n[c:vars]\nx=1\n[c]\nh\n").unwrap();
        assert_eq!(data.groups["p"].children, ["c"]);
        assert_eq!(data.groups["c"].vars["x"], 1);
    }
}
