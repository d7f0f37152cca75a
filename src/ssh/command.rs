//! Remote commands as argument vectors, rendered for the remote shell by one quoting helper.
//!
//! sshd hands the command string to the user's login shell, so every word is POSIX
//! single-quoted: nothing from an inventory or an image name reaches a shell unquoted.

use super::host::Become;

/// Quote one word for a POSIX shell: `'…'`, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Quote each word and join them with spaces.
pub fn quote_words<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command to run on a host: an argument vector, optionally under `sudo -n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    argv: Vec<String>,
    become_: Option<Become>,
}

impl RemoteCommand {
    /// A program and its arguments, each passed as one word whatever it contains.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        RemoteCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            become_: None,
        }
    }

    /// A POSIX `sh -c SCRIPT` for pipelines. Build SCRIPT's variable parts with [`quote`].
    pub fn shell(script: impl Into<String>) -> Self {
        RemoteCommand::new(["sh".to_string(), "-c".to_string(), script.into()])
    }

    /// Run under `sudo -n` (non-interactive: a password prompt fails instead of hanging),
    /// as `become_.user` when set (`ansible_become_user`), else root.
    pub fn with_become(mut self, become_: Option<&Become>) -> Self {
        self.become_ = become_.cloned();
        self
    }

    /// The string sent in the SSH `exec` request.
    pub fn render(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        if let Some(become_) = &self.become_ {
            words.extend(["sudo", "-n"]);
            if let Some(user) = &become_.user {
                words.extend(["-u", user.as_str()]);
            }
            words.push("--");
        }
        words.extend(self.argv.iter().map(String::as_str));
        quote_words(&words)
    }

    /// A short name for messages: the program (and the first script line for `sh -c`).
    pub fn display_name(&self) -> String {
        let name = match self.argv.as_slice() {
            [sh, flag, script, ..] if sh == "sh" && flag == "-c" => script
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string(),
            argv => argv.join(" "),
        };
        let mut short: String = name.chars().take(80).collect();
        if short.len() < name.len() {
            short.push('…');
        }
        if self.become_.is_some() {
            format!("sudo {short}")
        } else {
            short
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotes_every_word() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            RemoteCommand::new(["docker", "image", "inspect", "a b;rm -rf /"]).render(),
            "'docker' 'image' 'inspect' 'a b;rm -rf /'"
        );
    }

    #[test]
    fn become_prefixes_sudo_non_interactive() {
        let root = RemoteCommand::new(["docker", "load"]).with_become(Some(&Become::default()));
        assert_eq!(root.render(), "'sudo' '-n' '--' 'docker' 'load'");
        let other = Become {
            user: Some("ops'x".into()),
        };
        let as_user = RemoteCommand::shell("zstd -dc | docker load").with_become(Some(&other));
        assert_eq!(
            as_user.render(),
            "'sudo' '-n' '-u' 'ops'\\''x' '--' 'sh' '-c' 'zstd -dc | docker load'"
        );
        assert_eq!(as_user.display_name(), "sudo zstd -dc | docker load");
    }

    /// The oracle is a real POSIX shell: it must split our rendering back into the same words.
    #[test]
    fn sh_reads_back_the_exact_words() {
        proptest!(ProptestConfig::with_cases(64), |(words in proptest::collection::vec("[^\u{0}]{0,12}", 1..5))| {
            let script = format!("for w in {}; do printf '%s\\0' \"$w\"; done", quote_words(&words));
            let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
            let expected: Vec<u8> = words.iter().flat_map(|w| w.bytes().chain([0])).collect();
            prop_assert_eq!(out.stdout, expected);
        });
    }
}
