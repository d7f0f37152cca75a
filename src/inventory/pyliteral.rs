//! Values in INI inventories are typed the way ini.py types them: Python's `ast.literal_eval`,
//! falling back to the raw string when the text is not a Python literal.
//!
//! Supported: ints (decimal, 0x/0o/0b, underscores), floats, strings (prefixes r/u/b, escapes,
//! adjacent concatenation), True/False/None, `...`, lists, tuples and sets (as lists), dicts,
//! `set()`, unary +/-. Complex numbers are left as the raw string.

use serde_json::{Map, Number, Value};

/// `ast.literal_eval(text)` as ini.py applies it: `None` when Python would raise
/// ValueError/SyntaxError (the caller keeps the raw string).
pub fn literal_eval(text: &str) -> Option<Value> {
    let mut parser = Parser {
        chars: text.trim_start_matches([' ', '\t']).chars().collect(),
        pos: 0,
        depth: 0,
    };
    let value = parser.testlist(None)?;
    parser.skip_space();
    if parser.peek() == Some('#') {
        parser.pos = parser.chars.len();
    }
    (parser.pos == parser.chars.len()).then_some(value)
}

/// Python refuses deeper nesting long before this; it keeps recursion bounded on hostile input.
const MAX_DEPTH: usize = 100;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\x0c')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `a, b, c` (a tuple when a comma appears) up to `close` or the end.
    fn testlist(&mut self, close: Option<char>) -> Option<Value> {
        let first = self.atom_expr()?;
        self.skip_space();
        if self.peek() != Some(',') {
            return Some(first);
        }
        let mut items = vec![first];
        while self.eat(',') {
            self.skip_space();
            match self.peek() {
                None | Some('#') => break,
                Some(c) if Some(c) == close => break,
                _ => items.push(self.atom_expr()?),
            }
        }
        Some(Value::Array(items))
    }

    fn atom_expr(&mut self) -> Option<Value> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let value = self.signed_atom();
        self.depth -= 1;
        value
    }

    fn signed_atom(&mut self) -> Option<Value> {
        self.skip_space();
        match self.peek()? {
            sign @ ('-' | '+') => {
                self.pos += 1;
                self.skip_space();
                let number = self.number()?;
                Some(if sign == '-' { negate(number)? } else { number })
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Option<Value> {
        let c = self.peek()?;
        match c {
            '[' => {
                self.pos += 1;
                let items = self.sequence(']')?;
                Some(Value::Array(items))
            }
            '(' => {
                self.pos += 1;
                if self.eat(')') {
                    return Some(Value::Array(Vec::new()));
                }
                let inner = self.testlist(Some(')'))?;
                self.eat(')').then_some(inner)
            }
            '{' => {
                self.pos += 1;
                self.brace()
            }
            '0'..='9' => self.number(),
            '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => self.number(),
            '.' => {
                let ellipsis = self.peek_at(1) == Some('.') && self.peek_at(2) == Some('.');
                self.pos += 3;
                ellipsis.then(|| Value::String("...".into()))
            }
            '\'' | '"' => self.strings(),
            c if c.is_alphabetic() || c == '_' => self.name_or_prefixed_string(),
            _ => None,
        }
    }

    fn sequence(&mut self, close: char) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.atom_expr()?);
            if !self.eat(',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    /// `{}` dict, `{k: v, ...}` dict or `{a, b}` set (a list in the inventory).
    fn brace(&mut self) -> Option<Value> {
        if self.eat('}') {
            return Some(Value::Object(Map::new()));
        }
        let first = self.atom_expr()?;
        if !self.eat(':') {
            let mut items = vec![first];
            if self.eat(',') {
                items.extend(self.sequence('}')?);
                return Some(Value::Array(items));
            }
            return self.eat('}').then_some(Value::Array(items));
        }
        let mut map = Map::new();
        let mut key = first;
        loop {
            let value = self.atom_expr()?;
            map.insert(json_key(&key)?, value);
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            if !self.eat(',') {
                return None;
            }
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            key = self.atom_expr()?;
            if !self.eat(':') {
                return None;
            }
        }
    }

    fn name_or_prefixed_string(&mut self) -> Option<Value> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if matches!(self.peek(), Some('\'' | '"')) {
            self.pos = start;
            return self.strings();
        }
        match name.as_str() {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            "set" if self.eat('(') && self.eat(')') => Some(Value::Array(Vec::new())),
            _ => None,
        }
    }

    /// One or more adjacent string literals, concatenated (bytes and str may not mix).
    fn strings(&mut self) -> Option<Value> {
        let mut text = String::new();
        let mut kind = None;
        loop {
            self.skip_space();
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.pos += 1;
            }
            let prefix: String = self.chars[start..self.pos]
                .iter()
                .collect::<String>()
                .to_lowercase();
            if !matches!(self.peek(), Some('\'' | '"')) {
                self.pos = start;
                break;
            }
            let (raw, bytes) = match prefix.as_str() {
                "" | "u" => (false, false),
                "r" => (true, false),
                "b" => (false, true),
                "br" | "rb" => (true, true),
                _ => return None,
            };
            if kind.is_some_and(|k| k != bytes) {
                return None;
            }
            kind = Some(bytes);
            text.push_str(&self.string_body(raw)?);
        }
        // Bytes become text Ansible does not trust as a template: shown as unsafe.
        kind.map(|bytes| {
            if bytes {
                super::unsafe_value(&text)
            } else {
                Value::String(text)
            }
        })
    }

    fn string_body(&mut self, raw: bool) -> Option<String> {
        let quote = self.peek()?;
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            if c == quote
                && (!triple || (self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote)))
            {
                self.pos += if triple { 3 } else { 1 };
                return Some(out);
            }
            self.pos += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let next = self.peek()?;
            if raw {
                out.push('\\');
                out.push(next);
                self.pos += 1;
                continue;
            }
            self.pos += 1;
            match next {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\\' | '\'' | '"' => out.push(next),
                '\n' => {}
                'x' => out.push(self.hex_escape(2)?),
                'u' => out.push(self.hex_escape(4)?),
                'U' => out.push(self.hex_escape(8)?),
                '0'..='7' => {
                    let mut code = next.to_digit(8)?;
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                code = code * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(code)?);
                }
                // Python keeps unknown escapes as written (with a warning ini.py silences).
                _ => {
                    out.push('\\');
                    out.push(next);
                }
            }
        }
    }

    fn hex_escape(&mut self, len: usize) -> Option<char> {
        let digits: String = self.chars.get(self.pos..self.pos + len)?.iter().collect();
        if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += len;
        char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || (matches!(self.peek(), Some('+' | '-'))
                && matches!(self.chars.get(self.pos - 1), Some('e' | 'E'))
                && !self.chars[start..self.pos]
                    .iter()
                    .any(|c| matches!(c, 'x' | 'X')))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        parse_number(&text)
    }
}

fn negate(number: Value) -> Option<Value> {
    let n = number.as_number()?;
    if let Some(i) = n.as_i64().and_then(i64::checked_neg) {
        return Some(Value::from(i));
    }
    Number::from_f64(-n.as_f64()?).map(Value::Number)
}

/// Python's numeric literal grammar (without imaginary numbers).
fn parse_number(text: &str) -> Option<Value> {
    if !valid_underscores(text) {
        return None;
    }
    let clean = text.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let radix = match lower.get(..2) {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let digits = &lower[2..];
        if digits.is_empty() {
            return None;
        }
        return int_value(u128::from_str_radix(digits, radix).ok()?);
    }
    if lower.chars().all(|c| c.is_ascii_digit()) {
        if lower.len() > 1 && lower.starts_with('0') && lower.chars().any(|c| c != '0') {
            return None;
        }
        return match lower.parse::<u128>() {
            Ok(n) => int_value(n),
            Err(_) => lower
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
        };
    }
    let float_shape = regex_lite_float(&lower);
    if !float_shape {
        return None;
    }
    lower
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

fn int_value(n: u128) -> Option<Value> {
    Some(match u64::try_from(n) {
        Ok(small) => Value::from(small),
        Err(_) => Value::Number(Number::from_f64(n as f64)?),
    })
}

/// Digits with `.` and an optional exponent, as Python's float literal allows.
fn regex_lite_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find('e') {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mantissa_ok = {
        let mut parts = mantissa.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let frac = parts.next();
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        match frac {
            Some(frac) => digits(whole) && digits(frac) && !(whole.is_empty() && frac.is_empty()),
            None => !whole.is_empty() && digits(whole) && exponent.is_some(),
        }
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// Underscores only between two digits.
fn valid_underscores(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().all(|(i, &c)| {
        c != '_'
            || (i > 0
                && chars[i - 1].is_ascii_hexdigit()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_hexdigit()))
    })
}

/// The JSON key json.dumps writes for a Python dict key (str, int, bool, None).
fn json_key(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_literals() {
        let cases = [
            ("1", json!(1)),
            ("-3", json!(-3)),
            ("0x10", json!(16)),
            ("1_000", json!(1000)),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000.0)),
            ("True", json!(true)),
            ("None", json!(null)),
            ("'05'", json!("05")),
            ("\"a\" 'b'", json!("ab")),
            ("[1, 'x', (2, 3)]", json!([1, "x", [2, 3]])),
            ("{'a': 1, 2: [None]}", json!({"a": 1, "2": [null]})),
            ("1, 2", json!([1, 2])),
            ("{1, 2}", json!([1, 2])),
            ("r'\\d'", json!("\\d")),
            ("'\\x41\\n'", json!("A\n")),
            ("3 # comment", json!(3)),
        ];
        for (text, expected) in cases {
            assert_eq!(literal_eval(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn not_literals_stay_strings() {
        for text in [
            "05",
            "hello world",
            "1.2.3",
            "--1",
            "-True",
            "a=b",
            "[1,",
            "f'x'",
            "1__0",
            "0x",
            "inf",
            "{1:}",
        ] {
            assert_eq!(literal_eval(text), None, "{text}");
        }
    }
}
