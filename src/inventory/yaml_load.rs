//! YAML documents loaded the way Ansible's loader (PyYAML's SafeLoader, YAML 1.1) loads them:
//! `yes`/`on` booleans, `0o`-less octals, sexagesimal numbers, `<<` merge keys, `!unsafe`,
//! `!vault`.
//! Events come from the parser under serde-saphyr; typing is ours so it matches PyYAML.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Tag};

/// A YAML node with PyYAML's types; mapping keys keep their type until turned into JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// `!unsafe`: a string Ansible never templates.
    Unsafe(String),
    /// `!vault`: an inline Ansible Vault ciphertext, kept encrypted.
    Vault(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Yaml, Yaml)>),
}

/// Why a document could not be loaded, with the 1-based line where known.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub line: Option<usize>,
    pub message: String,
}

/// Aliases may not expand a document beyond this many nodes ("billion laughs").
const MAX_NODES: usize = 1_000_000;

/// Loads the single document of `text`; `Ok(None)` for an empty stream. Like Ansible's
/// loader, text that is valid JSON is read as JSON (`1e3` is then a number, not a string).
pub fn load(text: &str) -> Result<Option<Yaml>, LoadError> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(Some(from_json(value)));
    }
    let mut builder = Builder {
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    let mut document = None;
    let mut documents = 0;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| LoadError {
            line: Some(e.marker().line()),
            message: e.to_string(),
        })?;
        if !meaningful(&event) {
            continue;
        }
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(LoadError {
                        line: Some(span.start.line()),
                        message:
                            "expected a single document in the stream, but found another document"
                                .into(),
                    });
                }
            }
            Event::StreamStart | Event::DocumentEnd | Event::StreamEnd => {}
            other => document = Some(builder.node(other, span.start.line(), &mut parser)?),
        }
    }
    Ok(document)
}

struct Builder {
    anchors: HashMap<usize, Yaml>,
    nodes: usize,
}

impl Builder {
    fn node<'a>(
        &mut self,
        event: Event<'a>,
        line: usize,
        parser: &mut Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    ) -> Result<Yaml, LoadError> {
        self.count(line, 1)?;
        let fail = |message: String| LoadError {
            line: Some(line),
            message,
        };
        let (node, anchor) = match event {
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| fail("unknown alias".into()))?;
                self.count(line, size(&node))?;
                (node, 0)
            }
            Event::Scalar(text, style, anchor, tag) => {
                (scalar(&text, style, tag.as_deref()).map_err(fail)?, anchor)
            }
            Event::SequenceStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq").map_err(fail)?;
                let mut items = Vec::new();
                loop {
                    let (event, line) = next(parser)?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, line, parser)?);
                }
                (Yaml::Seq(items), anchor)
            }
            Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map").map_err(fail)?;
                let mut pairs = Vec::new();
                loop {
                    let (event, key_line) = next(parser)?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let is_merge = matches!(&event, Event::Scalar(t, ScalarStyle::Plain, _, None) if t == "<<");
                    let key = self.node(event, key_line, parser)?;
                    let (event, value_line) = next(parser)?;
                    let value = self.node(event, value_line, parser)?;
                    if matches!(key, Yaml::Seq(_) | Yaml::Map(_)) {
                        return Err(LoadError {
                            line: Some(key_line),
                            message: "found unhashable key".into(),
                        });
                    }
                    pairs.push((is_merge, key, value));
                }
                (Yaml::Map(flatten_merges(pairs).map_err(fail)?), anchor)
            }
            _ => return Err(fail("unexpected YAML event".into())),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn count(&mut self, line: usize, n: usize) -> Result<(), LoadError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(LoadError {
                line: Some(line),
                message: format!("document expands to more than {MAX_NODES} nodes"),
            });
        }
        Ok(())
    }
}

fn next<'a>(
    parser: &mut Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
) -> Result<(Event<'a>, usize), LoadError> {
    loop {
        match parser.next_event() {
            Some(Ok((event, _))) if !meaningful(&event) => continue,
            Some(Ok((event, span))) => return Ok((event, span.start.line())),
            Some(Err(e)) => {
                return Err(LoadError {
                    line: Some(e.marker().line()),
                    message: e.to_string(),
                });
            }
            None => {
                return Err(LoadError {
                    line: None,
                    message: "unexpected end of the document".into(),
                });
            }
        }
    }
}

/// Nodes and structure; comments and anchor metadata carry no data.
fn meaningful(event: &Event<'_>) -> bool {
    event.is_node()
        || matches!(
            event,
            Event::SequenceEnd
                | Event::MappingEnd
                | Event::StreamStart
                | Event::StreamEnd
                | Event::DocumentStart(..)
                | Event::DocumentEnd
        )
}

fn size(node: &Yaml) -> usize {
    match node {
        Yaml::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Yaml::Map(pairs) => 1 + pairs.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// PyYAML's `flatten_mapping`: merged mappings first (earlier ones winning), own keys last;
/// then later duplicates replace earlier values in place, like a Python dict.
fn flatten_merges(pairs: Vec<(bool, Yaml, Yaml)>) -> Result<Vec<(Yaml, Yaml)>, String> {
    let mut merged: Vec<Vec<(Yaml, Yaml)>> = Vec::new();
    let mut own = Vec::new();
    for (is_merge, key, value) in pairs {
        if !is_merge {
            own.push((key, value));
            continue;
        }
        match value {
            Yaml::Map(pairs) => merged.push(pairs),
            Yaml::Seq(items) => {
                let mut maps = Vec::new();
                for item in items {
                    match item {
                        Yaml::Map(pairs) => maps.push(pairs),
                        _ => return Err("expected a mapping for merging".into()),
                    }
                }
                maps.reverse();
                merged.extend(maps);
            }
            _ => return Err("expected a mapping or list of mappings for merging".into()),
        }
    }
    let mut result: Vec<(Yaml, Yaml)> = Vec::new();
    for (key, value) in merged.into_iter().flatten().chain(own) {
        match result.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => result.push((key, value)),
        }
    }
    Ok(result)
}

fn check_collection_tag(tag: Option<&Tag>, core: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.core_suffix() == Some(core) => Ok(()),
        Some(tag) if tag.handle() == "!" && tag.suffix() == "unsafe" => Ok(()),
        Some(tag) if is_vault_tag(tag) => Err(vault_needs_a_string(tag)),
        Some(tag) => Err(format!(
            "could not determine a constructor for the tag '{}'",
            tag.original()
        )),
    }
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Yaml, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(text)
        } else {
            Yaml::Str(text.to_string())
        });
    };
    if is_vault_tag(tag) {
        // Like Ansible, the text is resolved as if untagged and must be a string.
        return match resolve_plain(text) {
            Yaml::Str(ciphertext) => Ok(Yaml::Vault(ciphertext)),
            _ => Err(vault_needs_a_string(tag)),
        };
    }
    if tag.handle() == "!" {
        return match tag.suffix() {
            "unsafe" => Ok(Yaml::Unsafe(text.to_string())),
            other => Err(format!(
                "could not determine a constructor for the tag '!{other}'"
            )),
        };
    }
    let wrong = |kind: &str| format!("'{text}' is not a valid {kind}");
    match tag.core_suffix() {
        Some("str") => Ok(Yaml::Str(text.to_string())),
        Some("null") => Ok(Yaml::Null),
        Some("bool") => bool_value(text)
            .map(Yaml::Bool)
            .ok_or_else(|| wrong("bool")),
        Some("int") => int_value(text).ok_or_else(|| wrong("int")),
        Some("float") => float_value(text).ok_or_else(|| wrong("float")),
        _ => Err(format!(
            "could not determine a constructor for the tag '{}'",
            tag.original()
        )),
    }
}

/// `!vault`, or `!vault-encrypted` (its deprecated name).
fn is_vault_tag(tag: &Tag) -> bool {
    tag.handle() == "!" && matches!(tag.suffix(), "vault" | "vault-encrypted")
}

fn vault_needs_a_string(tag: &Tag) -> String {
    format!("the '{}' tag requires a string value", tag.original())
}

/// PyYAML's implicit resolvers for plain scalars (YAML 1.1).
fn resolve_plain(text: &str) -> Yaml {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Yaml::Null;
    }
    if let Some(b) = bool_value(text) {
        return Yaml::Bool(b);
    }
    if let Some(int) = int_value(text) {
        return int;
    }
    if let Some(float) = float_value(text) {
        return float;
    }
    Yaml::Str(text.to_string())
}

fn bool_value(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(text: &str) -> (i128, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    }
}

/// `[-+]?0b[01_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+ | sexagesimal`.
fn int_value(text: &str) -> Option<Yaml> {
    let (sign, body) = split_sign(text);
    let digits_in =
        |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.chars().all(|c| ok(c) || c == '_');
    let radix = |digits: &str, radix: u32| {
        let clean = digits.replace('_', "");
        if clean.is_empty() {
            Some(0)
        } else {
            i128::from_str_radix(&clean, radix).ok()
        }
    };
    let value = if let Some(bin) = body.strip_prefix("0b") {
        digits_in(bin, |c| c == '0' || c == '1')
            .then(|| radix(bin, 2))
            .flatten()?
    } else if let Some(hex) = body.strip_prefix("0x") {
        digits_in(hex, |c| c.is_ascii_hexdigit())
            .then(|| radix(hex, 16))
            .flatten()?
    } else if body.len() > 1 && body.starts_with('0') {
        digits_in(&body[1..], |c| ('0'..='7').contains(&c))
            .then(|| radix(&body[1..], 8))
            .flatten()?
    } else if body.contains(':') {
        sexagesimal(body, false)?.parse::<i128>().ok()?
    } else if body == "0" {
        0
    } else {
        let valid = body.starts_with(|c: char| ('1'..='9').contains(&c))
            && digits_in(body, |c| c.is_ascii_digit());
        valid.then(|| radix(body, 10)).flatten()?
    };
    Some(Yaml::Int(sign * value))
}

/// `[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+` (ints) or with a `.[0-9_]*` fraction (floats), as a number text.
fn sexagesimal(body: &str, float: bool) -> Option<String> {
    let (whole, fraction) = if float {
        let dot = body.rfind('.')?;
        (&body[..dot], Some(&body[dot + 1..]))
    } else {
        (body, None)
    };
    let mut parts = whole.split(':');
    let first = parts.next()?.replace('_', "");
    let first_ok = if float {
        first.starts_with(|c: char| c.is_ascii_digit())
    } else {
        first.starts_with(|c: char| ('1'..='9').contains(&c))
    };
    if !first_ok || !first.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut value: f64 = first.parse().ok()?;
    let mut any = false;
    for part in parts {
        let ok = (1..=2).contains(&part.len())
            && part.chars().all(|c| c.is_ascii_digit())
            && (part.len() == 1 || part.as_bytes()[0] <= b'5');
        if !ok {
            return None;
        }
        value = value * 60.0 + part.parse::<f64>().ok()?;
        any = true;
    }
    if !any {
        return None;
    }
    match fraction {
        None => Some(format!("{value}")),
        Some(f) if f.chars().all(|c| c.is_ascii_digit() || c == '_') => {
            let f = f.replace('_', "");
            Some(format!(
                "{}",
                value + format!("0.{f}0").parse::<f64>().ok()?
            ))
        }
        Some(_) => None,
    }
}

/// PyYAML's float: `[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?`, sexagesimal, `.inf`, `.nan`.
fn float_value(text: &str) -> Option<Yaml> {
    let (sign, body) = split_sign(text);
    let sign = sign as f64;
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(Yaml::Float(sign * f64::INFINITY)),
        ".nan" | ".NaN" | ".NAN" if sign > 0.0 && !text.starts_with('+') => {
            return Some(Yaml::Float(f64::NAN));
        }
        _ => {}
    }
    if body.contains(':') {
        return sexagesimal(body, true)?
            .parse::<f64>()
            .ok()
            .map(|v| Yaml::Float(sign * v));
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let dot = mantissa.find('.')?;
    let (whole, fraction) = (&mantissa[..dot], &mantissa[dot + 1..]);
    let whole_ok = whole.is_empty()
        || (whole.starts_with(|c: char| c.is_ascii_digit())
            && whole.chars().all(|c| c.is_ascii_digit() || c == '_'));
    let fraction_ok = fraction.chars().all(|c| c.is_ascii_digit() || c == '_');
    // PyYAML: with no whole part the fraction needs a digit (`\.[0-9_]+`).
    let not_bare_dot = !whole.is_empty() || !fraction.is_empty();
    let exponent_ok = exponent.is_none_or(|e| {
        e.len() > 1
            && matches!(e.as_bytes()[0], b'+' | b'-')
            && e[1..].chars().all(|c| c.is_ascii_digit())
    });
    if !(whole_ok && fraction_ok && not_bare_dot && exponent_ok) {
        return None;
    }
    let clean = body.replace('_', "");
    let clean = if clean.starts_with('.') {
        format!("0{clean}")
    } else {
        clean
    };
    let clean = clean.replace(".e", ".0e").replace(".E", ".0E");
    clean.parse::<f64>().ok().map(|v| Yaml::Float(sign * v))
}

impl Yaml {
    /// The value json.dumps would write (non-string keys become strings like Python's).
    pub fn to_json(&self) -> Value {
        match self {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => int_json(*i),
            Yaml::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Unsafe(s) => super::unsafe_value(s),
            Yaml::Vault(s) => super::vault_value(s),
            Yaml::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Yaml::Map(pairs) => {
                let mut map = Map::new();
                for (k, v) in pairs {
                    map.insert(k.key_string(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// How json.dumps spells a mapping key.
    pub fn key_string(&self) -> String {
        match self {
            Yaml::Str(s) | Yaml::Unsafe(s) | Yaml::Vault(s) => s.clone(),
            Yaml::Null => "null".into(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Int(i) => i.to_string(),
            Yaml::Float(f) => format!("{f:?}"),
            Yaml::Seq(_) | Yaml::Map(_) => self.to_json().to_string(),
        }
    }

    /// Calls `f` with the ciphertext of every `!vault` value in the document.
    pub fn for_each_vaulted(&self, f: &mut impl FnMut(&str)) {
        match self {
            Yaml::Vault(ciphertext) => f(ciphertext),
            Yaml::Seq(items) => items.iter().for_each(|item| item.for_each_vaulted(f)),
            Yaml::Map(pairs) => pairs
                .iter()
                .for_each(|(_, value)| value.for_each_vaulted(f)),
            _ => {}
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// PyYAML's type names, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Yaml::Null => "NoneType",
            Yaml::Bool(_) => "bool",
            Yaml::Int(_) => "int",
            Yaml::Float(_) => "float",
            Yaml::Str(_) | Yaml::Unsafe(_) => "str",
            Yaml::Vault(_) => "EncryptedString",
            Yaml::Seq(_) => "list",
            Yaml::Map(_) => "dict",
        }
    }
}

fn from_json(value: Value) -> Yaml {
    // Ansible's JSON decoder reads `{"__ansible_vault": ciphertext}` as an encrypted string.
    if let Some(ciphertext) = super::vault_text(&value) {
        return Yaml::Vault(ciphertext.to_string());
    }
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Bool(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Yaml::Int(i.into()),
            (_, Some(u)) => Yaml::Int(u.into()),
            _ => Yaml::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Yaml::Str(s),
        Value::Array(items) => Yaml::Seq(items.into_iter().map(from_json).collect()),
        Value::Object(map) => Yaml::Map(
            map.into_iter()
                .map(|(k, v)| (Yaml::Str(k), from_json(v)))
                .collect(),
        ),
    }
}

fn int_json(i: i128) -> Value {
    if let Ok(small) = i64::try_from(i) {
        Value::from(small)
    } else if let Ok(big) = u64::try_from(i) {
        Value::from(big)
    } else {
        Number::from_f64(i as f64).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(text: &str) -> Value {
        load(text).unwrap().unwrap().to_json()
    }

    #[test]
    fn yaml_11_scalars_like_pyyaml() {
        let doc = "a: yes\nb: off\nc: 010\nd: 0x1f\ne: 1_000\nf: 1.5\ng: 1e3\nh: 1:30\ni: ~\nj: 'yes'\nk: .5\nl: 08\nm: y\n";
        assert_eq!(
            json_of(doc),
            json!({"a": true, "b": false, "c": 8, "d": 31, "e": 1000, "f": 1.5, "g": "1e3", "h": 90, "i": null, "j": "yes", "k": 0.5, "l": "08", "m": "y"})
        );
    }

    #[test]
    fn merge_keys_and_aliases() {
        let doc = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n";
        assert_eq!(
            json_of(doc),
            json!({"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3}})
        );
    }

    #[test]
    fn tags_and_errors() {
        assert_eq!(
            json_of("a: !unsafe '{{ x }}'\nb: !!str 1"),
            json!({"a": {"__ansible_unsafe": "{{ x }}"}, "b": "1"})
        );
        // An inline vault value stays encrypted, shown as ansible-inventory shows it.
        let vaulted = "$ANSIBLE_VAULT;1.1;AES256\n6162\n";
        assert_eq!(
            json_of("a: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\nb: [!vault-encrypted 'x']"),
            json!({"a": {"__ansible_vault": vaulted}, "b": [{"__ansible_vault": "x"}]})
        );
        for not_a_string in [
            "a: !vault 12",
            "a: !vault",
            "a: !vault [x]",
            "a: !vault {x: 1}",
        ] {
            let err = load(not_a_string).unwrap_err().message;
            assert!(
                err.contains("'!vault' tag requires a string"),
                "{not_a_string}: {err}"
            );
        }
        // Ansible's JSON decoder reads `__ansible_vault` objects as vaulted values too.
        let json_text = r#"{"t": {"__ansible_vault": "$ANSIBLE_VAULT;x"}}"#;
        assert_eq!(
            load(json_text).unwrap(),
            Some(Yaml::Map(vec![(
                Yaml::Str("t".into()),
                Yaml::Vault("$ANSIBLE_VAULT;x".into())
            )]))
        );
        assert!(load("a: [1").unwrap_err().line.is_some());
        assert!(load("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(load("").unwrap(), None);
    }
}
