//! Asking for a secret on the controlling terminal, with echo off (SSH key passphrases, vault
//! passwords).

use std::io::{BufRead, Write};

/// Print `prompt` on /dev/tty and read one line with echo disabled; echo is restored after.
pub(crate) fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut silent = saved.clone();
    silent.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Flush, &silent)?;
    let mut writer = &tty;
    let answer = writer.write_all(prompt.as_bytes()).and_then(|_| {
        let mut line = String::new();
        std::io::BufReader::new(&tty)
            .read_line(&mut line)
            .map(|_| line)
    });
    let restored = tcsetattr(&tty, OptionalActions::Flush, &saved);
    let _ = writer.write_all(b"\n");
    restored?;
    Ok(answer?.trim_end_matches(['\r', '\n']).to_string())
}
