//! The three views of `ansible-inventory`: `--list` JSON, `--graph` text and `--host` JSON,
//! with its omissions (no `hosts` key on `all`, empty groups and keys dropped, hosts without
//! variables left out of `_meta.hostvars`).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::{Inventory, InventoryError};

/// `ansible-inventory --list`, limited to `limit`'s hosts when given.
pub fn list(inventory: &Inventory, limit: Option<&str>) -> Result<Value, InventoryError> {
    let data = inventory.data();
    let hosts = match limit {
        Some(pattern) => inventory.limit(pattern)?,
        None => data.group_hosts("all"),
    };
    let available: HashSet<&str> = hosts.iter().map(String::as_str).collect();
    let mut result = Map::new();
    let mut seen = HashSet::new();
    format_group(inventory, "all", &available, &mut seen, &mut result);
    let mut hostvars = Map::new();
    for host in &hosts {
        let vars = inventory.host_vars(host).unwrap_or_default();
        if !vars.is_empty() {
            hostvars.insert(host.clone(), Value::Object(vars));
        }
    }
    result.insert(
        "_meta".into(),
        json!({ "hostvars": hostvars, "profile": "inventory_legacy" }),
    );
    Ok(Value::Object(result))
}

fn format_group(
    inventory: &Inventory,
    name: &str,
    available: &HashSet<&str>,
    seen: &mut HashSet<String>,
    out: &mut Map<String, Value>,
) {
    let group = &inventory.data().groups[name];
    let mut entry = Map::new();
    if name != "all" {
        let hosts: Vec<Value> = group
            .hosts
            .iter()
            .filter(|h| available.contains(h.as_str()))
            .map(|h| Value::String(h.clone()))
            .collect();
        if !hosts.is_empty() {
            entry.insert("hosts".into(), Value::Array(hosts));
        }
    }
    let mut children = Vec::new();
    let mut nested = Map::new();
    for child in &group.children {
        children.push(Value::String(child.clone()));
        if seen.insert(child.clone()) {
            format_group(inventory, child, available, seen, &mut nested);
        }
    }
    if !children.is_empty() {
        entry.insert("children".into(), Value::Array(children));
    }
    if !entry.is_empty() {
        out.insert(name.to_string(), Value::Object(entry));
    }
    out.extend(nested);
}

/// `ansible-inventory --graph [GROUP]`: the tree under a group, hosts under each group but `all`.
pub fn graph(inventory: &Inventory, group: &str) -> Result<String, InventoryError> {
    if !inventory.has_group(group) {
        return Err(InventoryError::Pattern {
            pattern: group.to_string(),
            message: "Pattern must be valid group name when using --graph".into(),
        });
    }
    let mut lines = Vec::new();
    graph_group(inventory, group, 0, &mut lines);
    Ok(lines.join("\n"))
}

fn graph_group(inventory: &Inventory, name: &str, depth: usize, lines: &mut Vec<String>) {
    let prefixed = |text: &str, depth: usize| {
        if depth == 0 {
            text.to_string()
        } else {
            format!("{}--{text}", "  |".repeat(depth))
        }
    };
    lines.push(prefixed(&format!("@{name}:"), depth));
    let group = &inventory.data().groups[name];
    for child in &group.children {
        graph_group(inventory, child, depth + 1, lines);
    }
    if name != "all" {
        for host in &group.hosts {
            lines.push(prefixed(host, depth + 1));
        }
    }
}

/// `ansible-inventory --host NAME`: NAME is a pattern that must select exactly one host.
pub fn host(inventory: &Inventory, name: &str) -> Result<Value, InventoryError> {
    let selected = inventory.select(name)?;
    let [host] = selected.as_slice() else {
        return Err(InventoryError::Pattern {
            pattern: name.to_string(),
            message: format!("matches {} hosts; --host needs exactly one", selected.len()),
        });
    };
    let vars = Value::Object(inventory.host_vars(host).unwrap_or_default());
    Ok(plain_unsafe(vars))
}

/// ansible-inventory marks `!unsafe` strings only inside `--list`'s hostvars; `--host` prints
/// them as plain strings.
fn plain_unsafe(value: Value) -> Value {
    if let Some(text) = super::unsafe_text(&value) {
        return Value::String(text.to_string());
    }
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(plain_unsafe).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, plain_unsafe(v))).collect())
        }
        other => other,
    }
}

/// JSON as ansible-inventory prints it: keys sorted, four-space indentation.
pub fn to_ansible_json(value: &Value) -> String {
    let sorted = sort_keys(value);
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&sorted, &mut serializer).expect("JSON values always serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sort_keys(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}
