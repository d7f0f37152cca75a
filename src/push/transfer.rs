//! The part of the load command that receives a node's archive, whatever the runtime: streamed
//! straight into the runtime's loader, or (`download_keep_remote_cache`) kept in a file first.
//!
//! Loading and checking happen in the same round trip: after the load, the runtime's check
//! prints its report after [`VERIFY_MARK`], so a node costs one exec for facts and one for the
//! transfer (`Runtime::load_command` puts the pieces together).

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;

use crate::image::ArchiveFormat;
use crate::ssh::DEFAULT_CAPTURE_LIMIT;
use crate::ssh::quote;

/// Separates the loader's own output from the report printed after it.
pub const VERIFY_MARK: &str = "@@dropship verify@@";

/// Where the archive goes on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// Straight into the runtime's loader: nothing is written to the node's disk.
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

/// How a runtime loads an archive: from stdin, and (when it reads a file better, e.g. without
/// copying it to a temp file first) from the kept file `"$final"`; `after` runs once it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    pub stdin: String,
    pub file: Option<String>,
    pub after: Option<String>,
}

impl Loader {
    pub fn stdin(command: impl Into<String>) -> Self {
        Loader {
            stdin: command.into(),
            file: None,
            after: None,
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

fn decompressor(format: ArchiveFormat) -> Option<&'static str> {
    match format {
        ArchiveFormat::Zstd => Some("zstd -dc"),
        ArchiveFormat::Gzip => Some("gzip -dc"),
        ArchiveFormat::Tar => None,
    }
}

/// The shell lines that receive the archive (in `format`) on stdin and load it with `loader`.
/// `expected_bytes` (when the format's size is known in advance) lets a kept file be checked
/// before it is renamed: a transfer cut short must never look finished.
pub fn receive(
    format: ArchiveFormat,
    landing: &Landing,
    expected_bytes: Option<u64>,
    loader: &Loader,
) -> String {
    let load = match landing {
        Landing::Stream => match decompressor(format) {
            Some(decompress) => format!("{decompress} | {}", loader.stdin),
            None => loader.stdin.clone(),
        },
        Landing::Keep { dir, name } => {
            let check = match (expected_bytes, format) {
                (Some(size), _) => format!(
                    "got=$(wc -c < \"$tmp\"); [ \"$got\" -eq {size} ] || {{ echo \"received $got of {size} bytes\" >&2; exit 1; }}"
                ),
                (None, ArchiveFormat::Gzip) => "gzip -t \"$tmp\"".to_string(),
                (None, _) => ":".to_string(),
            };
            let from_file = match (decompressor(format), &loader.file) {
                (None, Some(file)) => file.clone(),
                (None, None) => format!("< \"$final\" {}", loader.stdin),
                (Some(decompress), _) => format!("< \"$final\" {decompress} | {}", loader.stdin),
            };
            format!(
                "dir={dir}; final=\"$dir\"/{name}; tmp=\"$dir/.{name}.$$.part\"\n\
                 mkdir -p \"$dir\"\n\
                 trap 'rm -f \"$tmp\"' EXIT\n\
                 trap 'exit 1' HUP INT TERM PIPE\n\
                 cat > \"$tmp\"\n\
                 {check}\n\
                 mv -f \"$tmp\" \"$final\"\n\
                 {from_file}",
                dir = quote(dir),
                name = quote(name),
            )
        }
    };
    match &loader.after {
        Some(after) => format!("{load}\n{after}"),
        None => load,
    }
}

/// What the node printed after the marker; `None` when the marker is missing (the load did
/// not run to its end).
pub fn after_mark(stdout: &str) -> Option<&str> {
    stdout.split_once(VERIFY_MARK).map(|(_, after)| after)
}

/// The stdout of a load command, captured, with the moment [`VERIFY_MARK`] arrived: what the
/// node printed before it was the load, after it the check (the phases' boundary).
#[derive(Default)]
pub struct LoadOutput {
    bytes: Vec<u8>,
    verify_started: Option<Instant>,
}

impl LoadOutput {
    pub fn verify_started(&self) -> Option<Instant> {
        self.verify_started
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl AsyncWrite for LoadOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes.len() + data.len() > DEFAULT_CAPTURE_LIMIT {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the load printed more than {DEFAULT_CAPTURE_LIMIT} bytes"
            ))));
        }
        // Only the new bytes and the mark's length before them can complete the mark.
        let from = this.bytes.len().saturating_sub(VERIFY_MARK.len());
        this.bytes.extend_from_slice(data);
        if this.verify_started.is_none()
            && this.bytes[from..]
                .windows(VERIFY_MARK.len())
                .any(|w| w == VERIFY_MARK.as_bytes())
        {
            this.verify_started = Some(Instant::now());
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[tokio::test]
    async fn the_load_output_notes_when_the_mark_arrives_even_split_across_writes() {
        use tokio::io::AsyncWriteExt;
        let mut out = LoadOutput::default();
        out.write_all(b"Loaded image: a:b\n@@dropship ")
            .await
            .unwrap();
        assert_eq!(out.verify_started(), None);
        out.write_all(b"verify@@\nsha256:1\n").await.unwrap();
        let seen = out.verify_started().expect("the mark arrived");
        out.write_all(b"sha256:2\n").await.unwrap();
        assert_eq!(out.verify_started(), Some(seen));
        assert_eq!(after_mark(&out.text()), Some("\nsha256:1\nsha256:2\n"));
    }

    #[test]
    fn streaming_decompresses_into_the_loader() {
        let loader = Loader::stdin("docker load");
        assert_eq!(
            receive(ArchiveFormat::Zstd, &Landing::Stream, None, &loader),
            "zstd -dc | docker load"
        );
        assert_eq!(
            receive(ArchiveFormat::Tar, &Landing::Stream, None, &loader),
            "docker load"
        );
        let then = Loader {
            after: Some("echo labelled".into()),
            ..Loader::stdin("ctr import -")
        };
        assert_eq!(
            receive(ArchiveFormat::Tar, &Landing::Stream, None, &then),
            "ctr import -\necho labelled"
        );
    }

    /// Runs the keep-mode lines for real in a temp dir, with a loader that swallows its input
    /// and says where it read from, and returns (exit ok, what the loader said, files left).
    fn run_keep(input: &[u8], expected: u64, loader: &Loader) -> (bool, String, Vec<String>) {
        let root = tempfile::tempdir().unwrap();
        let landing = Landing::keep(root.path(), "x.tar".into());
        let script = format!(
            "set -e\n{}",
            receive(ArchiveFormat::Tar, &landing, Some(expected), loader)
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
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
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success(), said, files)
    }

    #[test]
    fn a_kept_archive_is_renamed_only_when_complete_then_loaded_from_the_file() {
        let stdin = Loader::stdin("wc -c");
        assert_eq!(
            run_keep(b"0123456789", 10, &stdin),
            (true, "10".to_string(), vec!["x.tar".to_string()])
        );
        // A loader that reads the file itself gets the kept file's path.
        let file = Loader {
            file: Some("basename \"$final\"".into()),
            ..stdin
        };
        assert_eq!(
            run_keep(b"0123456789", 10, &file),
            (true, "x.tar".to_string(), vec!["x.tar".to_string()])
        );
    }

    #[test]
    fn a_short_transfer_leaves_nothing_behind() {
        let loader = Loader::stdin("cat >/dev/null");
        assert_eq!(
            run_keep(b"01234", 10, &loader),
            (false, String::new(), vec![])
        );
    }

    #[test]
    fn the_report_comes_after_the_marker_only() {
        let stdout = "Loaded image: a:b\n@@dropship verify@@\nsha256:1\nsha256:2\n";
        assert_eq!(after_mark(stdout), Some("\nsha256:1\nsha256:2\n"));
        assert_eq!(after_mark("Loaded image: a:b\n"), None);
    }
}
