//! `-e/--extra-vars`, read as Ansible's `load_extra_vars` reads them: `@FILE` (YAML or JSON),
//! text starting with `{` or `[` (YAML or JSON, which must be a mapping), else `KEY=VALUE`
//! pairs split like a shell command line, every value a string. Later ones win, key by key.
//!
//! Unlike Ansible, which files free text without `=` under `_raw_params` and carries on, such
//! text is refused: an `-e` that sets nothing is a typo worth stopping for.

use std::path::Path;

use super::model::Vars;
use super::yaml_load::{self, Yaml};
use super::{InventoryError, shlex};

/// The extra variables of all `-e` values, merged.
pub fn parse(values: &[String]) -> Result<Vars, InventoryError> {
    let mut vars = Vars::new();
    for value in values {
        for (key, v) in parse_one(value)? {
            vars.insert(key, v);
        }
    }
    Ok(vars)
}

fn parse_one(text: &str) -> Result<Vars, InventoryError> {
    let invalid = |message: String| InventoryError::ExtraVars {
        value: text.to_string(),
        message,
    };
    if let Some(file) = text.strip_prefix('@') {
        let path = Path::new(file);
        let content = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        return mapping(&content).map_err(|message| InventoryError::Parse {
            path: path.to_path_buf(),
            line: None,
            message,
        });
    }
    if text.trim_start().starts_with(['{', '[']) {
        return mapping(text).map_err(invalid);
    }
    let mut vars = Vars::new();
    for word in shlex::split(text, false).map_err(|e| invalid(e.to_string()))? {
        match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                vars.insert(
                    key.to_string(),
                    serde_json::Value::String(value.to_string()),
                );
            }
            _ => {
                return Err(invalid(format!(
                    "'{word}' is not KEY=VALUE (nor a YAML/JSON mapping, nor @FILE)"
                )));
            }
        }
    }
    Ok(vars)
}

/// A YAML or JSON document that must be a mapping (an empty one sets nothing).
fn mapping(text: &str) -> Result<Vars, String> {
    let document = yaml_load::load(text).map_err(|e| match e.line {
        Some(line) => format!("line {line}: {}", e.message),
        None => e.message,
    })?;
    match document {
        None => Ok(Vars::new()),
        Some(Yaml::Map(pairs)) => Ok(pairs
            .into_iter()
            .map(|(key, value)| (key.key_string(), value.to_json()))
            .collect()),
        Some(other) => Err(format!(
            "extra vars must be a mapping, found a {}",
            other.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    /// The expectations are `ansible-inventory -i x, --host x -e ...` (ansible-core 2.19).
    #[test]
    fn as_ansible_reads_them() {
        let vars = parse(&args(&[
            "foo=bar",
            r#"{"n": 1}"#,
            r#"a=1 b="two words""#,
            "a=2",
            "n=007 t=yes",
            "{k: [1, 2], y: yes}",
        ]))
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(vars),
            json!({"foo": "bar", "n": "007", "a": "2", "b": "two words", "t": "yes", "k": [1, 2], "y": true})
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vars.yml");
        std::fs::write(&file, "ansible_user: deploy\nretries: 3\n").unwrap();
        let vars = parse(&args(&[&format!("@{}", file.display())])).unwrap();
        assert_eq!(
            serde_json::Value::Object(vars),
            json!({"ansible_user": "deploy", "retries": 3})
        );
    }

    #[test]
    fn what_sets_nothing_is_refused() {
        for (value, part) in [
            ("justtext", "'justtext' is not KEY=VALUE"),
            ("[1, 2]", "must be a mapping, found a list"),
            ("{a: [}", "-e '{a: [}'"),
            (
                "@/nonexistent/vars.yml",
                "/nonexistent/vars.yml: cannot read",
            ),
        ] {
            let err = parse(&args(&[value])).unwrap_err().to_string();
            assert!(err.contains(part), "{value}: {err}");
        }
    }
}
