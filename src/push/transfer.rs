//! The one remote command that receives a node's archive, loads it and reports the image IDs.
//!
//! Loading and checking happen in the same round trip: after `docker load`, the script prints
//! a marker and the ID of every tag it was meant to create, so a node costs one exec for
//! facts and one for the transfer.

use std::path::Path;

use crate::image::ArchiveFormat;
use crate::ssh::Become;
use crate::ssh::{RemoteCommand, quote, quote_words};

/// Separates `docker load`'s own output from the IDs printed after it.
const VERIFY_MARK: &str = "@@dropship verify@@";

/// Where the archive goes on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// Straight into `docker load`: nothing is written to the node's disk.
    Stream,
    /// Kept in `local_release_dir/images/NAME` (`download_keep_remote_cache`): written under a
    /// temporary name, checked for size, renamed, then loaded from the file.
    Keep { dir: String, name: String },
}

impl Landing {
    pub fn keep(local_release_dir: &Path, name: String) -> Self {
        Landing::Keep {
            dir: local_release_dir
                .join("images")
                .to_string_lossy()
                .into_owned(),
            name,
        }
    }
}

/// The file extension of an archive in `format`.
pub fn extension(format: ArchiveFormat) -> &'static str {
    match format {
        ArchiveFormat::Zstd => "tar.zst",
        ArchiveFormat::Gzip => "tar.gz",
        ArchiveFormat::Tar => "tar",
    }
}

fn decompressor(format: ArchiveFormat) -> &'static str {
    match format {
        ArchiveFormat::Zstd => "zstd -dc",
        ArchiveFormat::Gzip => "gzip -dc",
        ArchiveFormat::Tar => "cat",
    }
}

/// The load command. `expected_bytes` (when the format's size is known in advance) lets a kept
/// file be checked before it is renamed: a transfer cut short must never look finished.
pub fn load_command(
    format: ArchiveFormat,
    landing: &Landing,
    expected_bytes: Option<u64>,
    tags: &[String],
    become_: Option<&Become>,
) -> RemoteCommand {
    let verify = if tags.is_empty() {
        format!("echo '{VERIFY_MARK}'")
    } else {
        format!(
            "echo '{VERIFY_MARK}'\ndocker image inspect --format '{{{{.Id}}}}' {}",
            quote_words(tags)
        )
    };
    let load = match landing {
        Landing::Stream => format!("{} | docker load", decompressor(format)),
        Landing::Keep { dir, name } => {
            let check = match (expected_bytes, format) {
                (Some(size), _) => format!(
                    "got=$(wc -c < \"$tmp\"); [ \"$got\" -eq {size} ] || {{ echo \"received $got of {size} bytes\" >&2; exit 1; }}"
                ),
                (None, ArchiveFormat::Gzip) => "gzip -t \"$tmp\"".to_string(),
                (None, _) => ":".to_string(),
            };
            format!(
                "dir={dir}; final=\"$dir\"/{name}; tmp=\"$dir/.{name}.$$.part\"\n\
                 mkdir -p \"$dir\"\n\
                 trap 'rm -f \"$tmp\"' EXIT\n\
                 trap 'exit 1' HUP INT TERM PIPE\n\
                 cat > \"$tmp\"\n\
                 {check}\n\
                 mv -f \"$tmp\" \"$final\"\n\
                 {} < \"$final\" | docker load",
                decompressor(format),
                dir = quote(dir),
                name = quote(name),
            )
        }
    };
    RemoteCommand::shell(format!("set -e\n{load}\n{verify}")).with_become(become_)
}

/// The image IDs the node reported after the load, one per tag in order.
/// `None` when the marker is missing (the load did not run to its end).
pub fn loaded_ids(stdout: &str) -> Option<Vec<String>> {
    let (_, after) = stdout.split_once(VERIFY_MARK)?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn script(command: &RemoteCommand) -> String {
        // `sh -c SCRIPT` rendered: pull SCRIPT back out by running it through a shell's parser.
        let rendered = command.render();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("set -- {rendered}; printf %s \"$3\""))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn streaming_decompresses_into_docker_load_and_checks_every_tag() {
        let tags = vec!["reg:5000/app:v1".to_string(), "it's:odd".to_string()];
        let command = load_command(ArchiveFormat::Zstd, &Landing::Stream, None, &tags, None);
        let script = script(&command);
        assert!(script.contains("zstd -dc | docker load"), "{script}");
        assert!(
            script.contains("--format '{{.Id}}' 'reg:5000/app:v1' 'it'\\''s:odd'"),
            "{script}"
        );
    }

    #[test]
    fn become_wraps_the_whole_script_in_sudo() {
        let become_ = Become {
            user: Some("ops".into()),
        };
        let command = load_command(
            ArchiveFormat::Gzip,
            &Landing::Stream,
            None,
            &[],
            Some(&become_),
        );
        assert!(
            command
                .render()
                .starts_with("'sudo' '-n' '-u' 'ops' '--' 'sh' '-c'")
        );
    }

    /// Runs the keep-mode script for real in a temp dir, with `docker` replaced by a fake that
    /// swallows its input, and returns (exit ok, files left in the dir).
    fn run_keep(input: &[u8], expected: u64) -> (bool, Vec<String>) {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("docker");
        std::fs::write(&fake, "#!/bin/sh\ncat >/dev/null; echo sha256:abc\n").unwrap();
        Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
        let landing = Landing::keep(root.path(), "x.tar".into());
        let command = load_command(
            ArchiveFormat::Tar,
            &landing,
            Some(expected),
            &["a:b".into()],
            None,
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command.render())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let mut files: Vec<String> = std::fs::read_dir(root.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        if out.status.success() {
            let ids = loaded_ids(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(ids, Some(vec!["sha256:abc".to_string()]));
        }
        (out.status.success(), files)
    }

    #[test]
    fn a_kept_archive_is_renamed_only_when_complete() {
        assert_eq!(
            run_keep(b"0123456789", 10),
            (true, vec!["x.tar".to_string()])
        );
    }

    #[test]
    fn a_short_transfer_leaves_nothing_behind() {
        assert_eq!(run_keep(b"01234", 10), (false, vec![]));
    }

    #[test]
    fn ids_come_after_the_marker_only() {
        let stdout = "Loaded image: a:b\n@@dropship verify@@\nsha256:1\nsha256:2\n";
        assert_eq!(
            loaded_ids(stdout),
            Some(vec!["sha256:1".to_string(), "sha256:2".to_string()])
        );
        assert_eq!(loaded_ids("Loaded image: a:b\n"), None);
    }
}
