//! `group_vars/` and `host_vars/` next to an inventory source, found and read like Ansible's
//! `host_group_vars` plugin: `<name>`, `<name>.yml`, `<name>.yaml`, `<name>.json` (the first that
//! exists wins), and a directory is read recursively in lexical order.

use std::path::{Path, PathBuf};

use super::model::Vars;
use super::yaml_load::Yaml;
use super::{InventoryError, Reader};

const EXTENSIONS: [&str; 4] = ["", ".yml", ".yaml", ".json"];

/// The merged variables for `entity` from `<dir>/<subdir>/`, `None` when no file exists.
pub(super) fn load(
    reader: &mut Reader,
    dir: &Path,
    subdir: &str,
    entity: &str,
) -> Result<Option<Vars>, InventoryError> {
    // Ansible skips names that look like absolute paths ('chroot' style hosts).
    if entity.starts_with('/') {
        return Ok(None);
    }
    let base = dir.join(subdir);
    if !base.is_dir() {
        return Ok(None);
    }
    let files = find_files(&base, entity);
    if files.is_empty() {
        return Ok(None);
    }
    let mut vars = Vars::new();
    for file in files {
        let text = reader.text(&file)?;
        let document = reader
            .yaml(&file, &text)
            .map_err(|e| InventoryError::Parse {
                path: file.clone(),
                line: e.line,
                message: e.message,
            })?;
        match document {
            Some(Yaml::Map(pairs)) => {
                for (key, value) in pairs {
                    vars.insert(key.key_string(), value.to_json());
                }
            }
            // Ansible ignores files whose data is empty or false.
            None | Some(Yaml::Null | Yaml::Bool(false)) => {}
            Some(Yaml::Str(s)) if s.is_empty() => {}
            Some(Yaml::Seq(items)) if items.is_empty() => {}
            Some(other) => {
                return Err(InventoryError::Parse {
                    path: file,
                    line: None,
                    message: format!(
                        "variables file must hold a mapping, found a {}",
                        other.type_name()
                    ),
                });
            }
        }
    }
    Ok(Some(vars))
}

fn find_files(base: &Path, entity: &str) -> Vec<PathBuf> {
    for ext in EXTENSIONS {
        let path = base.join(format!("{entity}{ext}"));
        if path.is_dir() {
            let mut found = Vec::new();
            directory_files(&path, &mut found);
            return found;
        }
        if path.exists() {
            return vec![path];
        }
    }
    Vec::new()
}

fn directory_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let path = dir.join(&name);
        let ext = python_extension(&name);
        if path.is_dir() && ext.is_empty() {
            directory_files(&path, found);
        } else if path.is_file() && (ext.is_empty() || EXTENSIONS.contains(&ext)) {
            found.push(path);
        }
    }
}

/// `os.path.splitext(name)[1]`: leading dots do not start an extension.
pub fn python_extension(name: &str) -> &str {
    let stem_start = name.len() - name.trim_start_matches('.').len();
    match name[stem_start..].rfind('.') {
        Some(i) => &name[stem_start + i..],
        None => "",
    }
}
