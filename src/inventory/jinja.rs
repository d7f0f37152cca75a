//! The little Jinja that inventories use in connection settings, evaluated from the inventory:
//! `{{ var }}`, `{{ hostvars['h']['var'] }}`, `| default(...)`, and
//! `{% if var is defined %}...{% endif %}` (Kubespray's bastion ProxyCommand). Anything else is
//! refused with a message: dropship does not run Ansible's templating.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::Inventory;

static EXPRESSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"^(?:hostvars\[\s*['"]([^'"]+)['"]\s*\]\s*\[\s*['"]([^'"]+)['"]\s*\]|([A-Za-z_][A-Za-z0-9_]*))\s*(?:\|\s*default\(\s*(?:'([^']*)'|"([^"]*)"|([0-9]+))\s*\))?$"#,
    )
    .expect("expression pattern")
});
static IF_DEFINED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\{%-?\s*if\s+([A-Za-z_][A-Za-z0-9_]*)\s+is\s+(not\s+)?defined\s*-?%\}")
        .expect("if pattern")
});
static END_IF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{%-?\s*endif\s*-?%\}").expect("endif pattern"));

/// Nested templates deeper than this are a loop.
const MAX_DEPTH: usize = 20;

/// `text` with its templates replaced, evaluated for `host`; `Err` says what is not supported.
pub fn render(inventory: &Inventory, host: &str, text: &str) -> Result<String, String> {
    render_at(inventory, host, text, 0)
}

fn render_at(
    inventory: &Inventory,
    host: &str,
    text: &str,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "templates nest deeper than {MAX_DEPTH} levels in '{text}'"
        ));
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        if after.starts_with("{{") {
            out.push_str(&rest[..start]);
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed '{{{{' in '{text}'"))?;
            let expression = after[2..end].trim();
            out.push_str(&evaluate(inventory, host, expression, depth)?);
            rest = &after[end + 2..];
        } else if after.starts_with("{%") {
            out.push_str(&rest[..start]);
            let caps = IF_DEFINED
                .captures(after)
                .ok_or_else(|| format!("unsupported Jinja statement in '{text}' (only `if VAR is defined` is supported)"))?;
            let body_start = caps[0].len();
            let end = END_IF
                .find(&after[body_start..])
                .ok_or_else(|| format!("missing endif in '{text}'"))?;
            let defined = inventory.host_var(host, &caps[1]).is_some();
            if defined != caps.get(2).is_some() {
                out.push_str(&render_at(
                    inventory,
                    host,
                    &after[body_start..body_start + end.start()],
                    depth + 1,
                )?);
            }
            rest = &after[body_start + end.end()..];
        } else {
            out.push_str(&rest[..=start]);
            rest = &rest[start + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn evaluate(
    inventory: &Inventory,
    host: &str,
    expression: &str,
    depth: usize,
) -> Result<String, String> {
    let caps = EXPRESSION.captures(expression).ok_or_else(|| {
        format!(
            "'{{{{ {expression} }}}}' is a Jinja expression dropship cannot evaluate \
             (supported: VAR, hostvars['HOST']['VAR'], | default(...)); write the value itself"
        )
    })?;
    let (owner, name) = match (caps.get(1), caps.get(2), caps.get(3)) {
        (Some(h), Some(v), _) => (h.as_str(), v.as_str()),
        (_, _, Some(v)) => (host, v.as_str()),
        _ => unreachable!("the pattern has one of its two forms"),
    };
    if !inventory.has_host(owner) {
        return Err(format!(
            "'{{{{ {expression} }}}}' refers to host '{owner}', which is not in the inventory"
        ));
    }
    let default = caps
        .get(4)
        .or(caps.get(5))
        .or(caps.get(6))
        .map(|m| m.as_str().to_string());
    match (inventory.host_var(owner, name), default) {
        (Some(value), _) => {
            // `!unsafe` text and decrypted `!vault` values are never templated further.
            if let Some(text) = inventory
                .plain_text(&value)
                .map_err(|e| format!("'{name}' of host '{owner}': {e}"))?
            {
                return Ok(text);
            }
            let text = python_str(&value)
                .ok_or_else(|| format!("'{name}' of host '{owner}' is not a single value"))?;
            render_at(inventory, owner, &text, depth + 1)
        }
        (None, Some(default)) => Ok(default),
        (None, None) => Err(format!("'{name}' is not defined for host '{owner}'")),
    }
}

/// How Jinja prints a scalar: Python's `str()`.
fn python_str(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some("None".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}
