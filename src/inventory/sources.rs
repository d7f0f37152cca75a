//! Which reader handles an inventory source, like Ansible's enabled plugins in order
//! (yaml for `.yml`/`.yaml`/`.json` or no extension, then ini), and directory sources.

use std::path::Path;

use super::hostpattern::parse_address;
use super::model::InventoryData;
use super::vars_files::python_extension;
use super::yaml_load::Yaml;
use super::{InventoryError, Reader, ini, yaml_inventory};

/// File names Ansible skips in inventory directories (IGNORED_ALWAYS and the default
/// inventory_ignore_extensions).
fn ignored(name: &str) -> bool {
    const IGNORED_EXTENSIONS: [&str; 12] = [
        ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg",
        ".retry",
    ];
    name.starts_with('.')
        || matches!(name, "host_vars" | "group_vars" | "vars_plugins")
        || IGNORED_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

pub(super) fn parse_source(
    reader: &mut Reader,
    data: &mut InventoryData,
    source: &Path,
) -> Result<(), InventoryError> {
    if source.is_dir() {
        let entries = std::fs::read_dir(source).map_err(|e| InventoryError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names.iter().filter(|n| !ignored(n)) {
            parse_source(reader, data, &source.join(name))?;
        }
        return Ok(());
    }
    if let Some(list) = host_list(source) {
        return add_host_list(data, source, list);
    }
    if !source.exists() {
        return Err(InventoryError::Missing {
            path: source.to_path_buf(),
        });
    }
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let ext = python_extension(name);
    if is_executable(source) {
        return Err(InventoryError::Invalid {
            path: source.to_path_buf(),
            message: "executable inventory scripts are not supported: pass a static INI or YAML inventory \
                      (e.g. the output of `ansible-inventory --list -y`)"
                .into(),
        });
    }
    if ext == ".toml" {
        return Err(InventoryError::Invalid {
            path: source.to_path_buf(),
            message: "TOML inventories are not supported: use INI or YAML".into(),
        });
    }
    let text = reader.text(source)?;
    let parse_error = |line, message| InventoryError::Parse {
        path: source.to_path_buf(),
        line,
        message,
    };
    let yaml_shaped = matches!(ext, "" | ".yml" | ".yaml" | ".json");
    let yaml_error = if yaml_shaped {
        match reader.yaml(source, &text) {
            Ok(document) => {
                let loaded_a_mapping = matches!(document, Some(Yaml::Map(_)));
                match yaml_inventory::parse(data, document.as_ref()) {
                    Ok(()) => return Ok(()),
                    Err(message) => Some((None, message, loaded_a_mapping)),
                }
            }
            Err(e) => Some((e.line, e.message, false)),
        }
    } else {
        None
    };
    // Like Ansible, a source the YAML reader rejects is offered to the INI reader next.
    match ini::parse(data, &text) {
        Ok(()) => {
            if let Some((line, message, _)) = yaml_error.filter(|_| !ext.is_empty()) {
                // Ansible says nothing here; a `.yml` that is INI is more often a YAML mistake.
                let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                crate::logging::warn_once(format!(
                    "{}{at}: not a YAML inventory ({message}); read as INI, as Ansible does",
                    source.display()
                ));
            }
            Ok(())
        }
        Err(ini_error) => match yaml_error {
            Some((line, message, loaded_a_mapping)) if !ext.is_empty() || loaded_a_mapping => {
                Err(parse_error(line, message))
            }
            _ => Err(parse_error(Some(ini_error.line), ini_error.message)),
        },
    }
}

/// `-i 'node1,node2:2222,'`: a comma-separated host list (Ansible's host_list plugin), when no
/// file has that name.
pub fn host_list(source: &Path) -> Option<&str> {
    let text = source.to_str()?;
    (text.contains(',') && !source.exists()).then_some(text)
}

fn add_host_list(
    data: &mut InventoryData,
    source: &Path,
    list: &str,
) -> Result<(), InventoryError> {
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        // Ranges are not expanded here; such an entry is taken literally, like Ansible does.
        let (host, port) = parse_address(entry)
            .filter(|(host, _)| !host.contains('['))
            .unwrap_or_else(|| (entry.to_string(), None));
        if !data.hosts.contains_key(&host) {
            data.add_host(&host, "ungrouped", port)
                .map_err(|e| InventoryError::Invalid {
                    path: source.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}
