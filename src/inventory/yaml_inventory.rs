//! YAML inventories (`all:` / `children:` / `hosts:` / `vars:`), read like ansible-core's
//! `plugins/inventory/yaml.py`. Ansible only warns about skipped keys; we skip them likewise.

use super::hostpattern::expand_host_entry;
use super::model::InventoryData;
use super::yaml_load::Yaml;

/// Adds what the loaded document declares to `data`; errors are Ansible's messages.
pub fn parse(data: &mut InventoryData, document: Option<&Yaml>) -> Result<(), String> {
    let pairs = match document {
        None => return Err("Parsed empty YAML file".into()),
        Some(Yaml::Map(pairs)) if pairs.is_empty() => return Err("Parsed empty YAML file".into()),
        Some(Yaml::Map(pairs)) => pairs,
        Some(other) => {
            return Err(format!(
                "YAML inventory has invalid structure, it should be a dictionary, got: {}",
                other.type_name()
            ));
        }
    };
    if pairs
        .iter()
        .any(|(k, v)| k.as_str() == Some("plugin") && is_truthy(v))
    {
        return Err("Plugin configuration YAML file, not YAML inventory: dropship reads static inventories only".into());
    }
    for (name, group) in pairs {
        parse_group(data, name, group)?;
    }
    Ok(())
}

fn parse_group(
    data: &mut InventoryData,
    name: &Yaml,
    body: &Yaml,
) -> Result<Option<String>, String> {
    let entries = match body {
        Yaml::Map(entries) => Some(entries),
        Yaml::Null => None,
        _ => {
            crate::logging::warn_once(format!(
                "Skipping '{}' as this is not a valid group definition",
                name.key_string()
            ));
            return Ok(None);
        }
    };
    let group = group_name(name)?;
    data.add_group(&group)
        .map_err(|e| format!("Unable to add group {group}: {e}"))?;
    let Some(entries) = entries else {
        return Ok(Some(group));
    };
    for (key, value) in entries {
        let section = key.as_str();
        let value = match (section, value) {
            // A bare string is shorthand for a one-entry mapping.
            (Some("vars" | "children" | "hosts"), Yaml::Str(s)) => {
                Yaml::Map(vec![(Yaml::Str(s.clone()), Yaml::Null)])
            }
            (Some(section @ ("vars" | "children" | "hosts")), v)
                if !matches!(v, Yaml::Map(_) | Yaml::Null) =>
            {
                return Err(format!(
                    "Invalid \"{section}\" entry for \"{group}\" group, requires a dictionary, found \"{}\" instead.",
                    v.type_name()
                ));
            }
            (_, v) => v.clone(),
        };
        let Yaml::Map(items) = value else {
            if !matches!(value, Yaml::Null) {
                crate::logging::warn_once(format!(
                    "Skipping key ({}) in group ({group}) as it is not a mapping, it is a {}",
                    key.key_string(),
                    value.type_name()
                ));
            }
            continue;
        };
        match section {
            Some("vars") => {
                for (var, value) in &items {
                    data.set_group_var(&group, &var.key_string(), value.to_json())
                        .map_err(|e| e.to_string())?;
                }
            }
            Some("children") => {
                for (child_name, child_body) in &items {
                    let child = parse_group(data, child_name, child_body)?;
                    let child = child.unwrap_or_else(|| child_name.key_string());
                    data.add_child(&group, &child).map_err(|e| e.to_string())?;
                }
            }
            Some("hosts") => {
                for (pattern, vars) in &items {
                    add_hosts(data, &group, pattern, vars)?;
                }
            }
            _ => crate::logging::warn_once(format!(
                "Skipping unexpected key ({}) in group ({group}), only \"vars\", \"children\" and \"hosts\" are valid",
                key.key_string()
            )),
        }
    }
    Ok(Some(group))
}

fn group_name(name: &Yaml) -> Result<String, String> {
    match name {
        Yaml::Str(s) if !s.is_empty() => Ok(s.clone()),
        Yaml::Str(_) | Yaml::Null | Yaml::Bool(false) => Err(format!(
            "Invalid empty/false group name provided: {}",
            name.key_string()
        )),
        Yaml::Int(0) => Err("Invalid empty/false group name provided: 0".into()),
        other => Err(format!(
            "Invalid group name supplied, expected a string but got {} for {}",
            other.type_name(),
            other.key_string()
        )),
    }
}

fn add_hosts(
    data: &mut InventoryData,
    group: &str,
    pattern: &Yaml,
    vars: &Yaml,
) -> Result<(), String> {
    let Some(pattern) = pattern.as_str() else {
        return Err(format!(
            "Host pattern {} must be a string. Enclose integers/floats in quotation marks.",
            pattern.key_string()
        ));
    };
    let (hosts, port) = expand_host_entry(pattern).map_err(|e| e.to_string())?;
    let vars = match vars {
        Yaml::Map(pairs) => pairs.as_slice(),
        v if !is_truthy(v) => &[],
        v => {
            return Err(format!(
                "Invalid data from file, expected dictionary and got: {}",
                v.to_json()
            ));
        }
    };
    for host in hosts {
        data.add_host(&host, group, port)
            .map_err(|e| e.to_string())?;
        for (key, value) in vars {
            data.set_host_var(&host, &key.key_string(), value.to_json())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Python truthiness of a loaded value.
fn is_truthy(value: &Yaml) -> bool {
    match value {
        Yaml::Null => false,
        Yaml::Bool(b) => *b,
        Yaml::Int(i) => *i != 0,
        Yaml::Float(f) => *f != 0.0,
        Yaml::Str(s) | Yaml::Unsafe(s) | Yaml::Vault(s) => !s.is_empty(),
        Yaml::Seq(items) => !items.is_empty(),
        Yaml::Map(pairs) => !pairs.is_empty(),
    }
}
