//! Python's `shlex.split(line, comments=True)` (POSIX mode), which ini.py uses for host lines
//! and which we also use for `ansible_ssh_common_args`.

/// Why a line could not be split; the texts are Python's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("No closing quotation")]
    NoClosingQuotation,
    #[error("No escaped character")]
    NoEscapedCharacter,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Space,
    Word,
    Quote(char),
    Escape(EscapedFrom),
}

#[derive(Clone, Copy, PartialEq)]
enum EscapedFrom {
    Word,
    DoubleQuote,
}

/// Splits like a POSIX shell: quotes, backslash escapes, and `#` comments when `comments`.
pub fn split(line: &str, comments: bool) -> Result<Vec<String>, SplitError> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut state = State::Space;
    let emit = |tokens: &mut Vec<String>, token: &mut String, quoted: &mut bool| {
        if !token.is_empty() || *quoted {
            tokens.push(std::mem::take(token));
        }
        *quoted = false;
    };
    for c in line.chars() {
        match state {
            State::Space | State::Word => {
                if matches!(c, ' ' | '\t' | '\r' | '\n') {
                    emit(&mut tokens, &mut token, &mut quoted);
                    state = State::Space;
                } else if comments && c == '#' {
                    emit(&mut tokens, &mut token, &mut quoted);
                    return Ok(tokens);
                } else if c == '\\' {
                    state = State::Escape(EscapedFrom::Word);
                } else if c == '\'' || c == '"' {
                    state = State::Quote(c);
                } else {
                    token.push(c);
                    state = State::Word;
                }
            }
            State::Quote(q) => {
                quoted = true;
                if c == q {
                    state = State::Word;
                } else if q == '"' && c == '\\' {
                    state = State::Escape(EscapedFrom::DoubleQuote);
                } else {
                    token.push(c);
                }
            }
            State::Escape(from) => {
                // Inside double quotes only `\` and `"` can be escaped; the backslash stays otherwise.
                if from == EscapedFrom::DoubleQuote && c != '\\' && c != '"' {
                    token.push('\\');
                }
                token.push(c);
                state = match from {
                    EscapedFrom::Word => State::Word,
                    EscapedFrom::DoubleQuote => State::Quote('"'),
                };
            }
        }
    }
    match state {
        State::Quote(_) => Err(SplitError::NoClosingQuotation),
        State::Escape(_) => Err(SplitError::NoEscapedCharacter),
        State::Space | State::Word => {
            emit(&mut tokens, &mut token, &mut quoted);
            Ok(tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python() {
        let split = |s| split(s, true).unwrap();
        assert_eq!(split("a b='x y' c=\"q\\\"r\""), ["a", "b=x y", "c=q\"r"]);
        assert_eq!(split("host a=1#comment"), ["host", "a=1"]);
        assert_eq!(split("h x=''"), ["h", "x="]);
        assert_eq!(split("h \"a\\nb\""), ["h", "a\\nb"]);
        assert_eq!(split("h a\\ b"), ["h", "a b"]);
        assert_eq!(
            super::split("a 'b", true),
            Err(SplitError::NoClosingQuotation)
        );
        assert_eq!(
            super::split("a \\", true),
            Err(SplitError::NoEscapedCharacter)
        );
    }
}
