//! An authenticated session to one host, and remote commands run on it.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::bastion::BastionLease;
use super::command::RemoteCommand;
use super::host_keys::Client;
use super::{SshError, Step};

/// Bytes of stderr kept (the end of it, where the reason usually is).
pub const STDERR_TAIL: usize = 64 * 1024;
/// Captured stdout beyond this is an error: stream big outputs with [`Exec::stdout_to`].
pub const DEFAULT_CAPTURE_LIMIT: usize = 64 * 1024 * 1024;

/// A logged-in SSH session. Commands run on their own channels, several at once if needed.
/// A tunnelled session keeps its bastion connection open while it lives.
pub struct Session {
    host: String,
    handle: Handle<Client>,
    channel_timeout: Duration,
    // Dropped after `handle`: the tunnel must outlive the session running inside it.
    _bastion: Option<BastionLease>,
}

impl Session {
    pub(crate) fn new(
        host: String,
        handle: Handle<Client>,
        bastion: Option<BastionLease>,
        channel_timeout: Duration,
    ) -> Self {
        Session {
            host,
            handle,
            channel_timeout,
            _bastion: bastion,
        }
    }

    /// The inventory name of the host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Prepare `command`; configure stdin/stdout, then `.run().await`.
    pub fn exec<'a>(&'a self, command: &'a RemoteCommand) -> Exec<'a> {
        Exec {
            session: self,
            command,
            stdin: None,
            stdout: None,
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            sent: None,
        }
    }

    /// Say goodbye to the server (dropping the session also ends it, less politely). Bounded:
    /// on a connection that stalled, the goodbye waits for room in a queue that never drains,
    /// and a push whose hosts have all reported must not hang on a courtesy.
    pub async fn close(self) {
        let goodbye = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
}

/// How long [`Session::close`] waits for its goodbye to be taken.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(u32),
    Signal { name: String, core_dumped: bool },
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal { name, core_dumped } => {
                write!(
                    f,
                    "killed by signal {name}{}",
                    if *core_dumped { " (core dumped)" } else { "" }
                )
            }
        }
    }
}

/// What a finished command gave back.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: ExitStatus,
    /// Captured stdout (empty when it was streamed with [`Exec::stdout_to`]).
    pub stdout: Vec<u8>,
    /// Bytes of stdout received, captured or streamed.
    pub stdout_bytes: u64,
    /// The last [`STDERR_TAIL`] bytes of stderr.
    pub stderr: Vec<u8>,
    /// Bytes of stdin sent.
    pub stdin_bytes: u64,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }

    /// The end of stderr as text, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }

    /// `Ok(self)` on exit code 0, else [`SshError::CommandFailed`] with the stderr tail.
    pub fn check(self, host: &str, command: &RemoteCommand) -> Result<Self, SshError> {
        if self.success() {
            return Ok(self);
        }
        Err(SshError::CommandFailed {
            host: host.to_string(),
            command: command.display_name(),
            stderr: self.stderr_text(),
            status: self.status,
        })
    }
}

type Stdin<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;
type Stdout<'a> = &'a mut (dyn AsyncWrite + Send + Unpin);

/// A command about to run. Dropping the future of [`Exec::run`] closes the channel, which
/// ends the remote command (sshd sends it SIGHUP) — so cancelling a transfer is safe.
pub struct Exec<'a> {
    session: &'a Session,
    command: &'a RemoteCommand,
    stdin: Option<Stdin<'a>>,
    stdout: Option<Stdout<'a>>,
    capture_limit: usize,
    sent: Option<Arc<AtomicU64>>,
}

impl<'a> Exec<'a> {
    /// Stream this into the command's stdin (with the remote window as backpressure), then EOF.
    /// Without it the command gets EOF at once.
    pub fn stdin(mut self, reader: impl AsyncRead + Send + Unpin + 'a) -> Self {
        self.stdin = Some(Box::new(reader));
        self
    }

    /// Stream stdout into `writer` instead of capturing it.
    pub fn stdout_to(mut self, writer: Stdout<'a>) -> Self {
        self.stdout = Some(writer);
        self
    }

    /// Most stdout bytes captured before failing with [`SshError::OutputTooLarge`].
    pub fn capture_limit(mut self, limit: usize) -> Self {
        self.capture_limit = limit;
        self
    }

    /// Add every stdin byte sent to `counter` as it goes (live progress and rate).
    pub fn count_sent(mut self, counter: Arc<AtomicU64>) -> Self {
        self.sent = Some(counter);
        self
    }

    /// Run the command to its end: until the server closes the channel, not merely until the
    /// exit status arrives (it can come before the last output).
    pub async fn run(self) -> Result<ExecOutput, SshError> {
        let Exec {
            session,
            command,
            stdin,
            stdout,
            capture_limit,
            sent,
        } = self;
        let host = session.host.as_str();
        let rendered = command.render();
        tracing::debug!("{host}: exec {rendered}");
        let channel = tokio::time::timeout(
            session.channel_timeout,
            session.handle.channel_open_session(),
        )
        .await
        .map_err(|_| SshError::Timeout {
            host: host.to_string(),
            address: host.to_string(),
            step: Step::ChannelOpen,
            after: session.channel_timeout,
        })?
        .map_err(|source| SshError::Protocol {
            host: host.to_string(),
            step: Step::ChannelOpen,
            source: source.into(),
        })?;
        let (mut reader, writer) = channel.split();
        let guard = CloseOnDrop(Some(writer));
        let write_half = guard.0.as_ref().expect("set above");
        write_half
            .exec(true, rendered.as_bytes())
            .await
            .map_err(|source| SshError::Protocol {
                host: host.to_string(),
                step: Step::ChannelOpen,
                source: source.into(),
            })?;

        let stdin_bytes = Arc::new(AtomicU64::new(0));
        let send = send_stdin(write_half.make_writer(), stdin, stdin_bytes.clone(), sent);
        let receive = receive(&mut reader, stdout, capture_limit);
        let mut send = pin!(send);
        let mut receive = pin!(receive);
        let mut sending = true;
        let display = || command.display_name();
        // Stop sending as soon as the channel closes: a command that exits early (a failed
        // `docker load`) must not leave us waiting for window space that never comes.
        // On any error return, `guard` closes the channel, which ends the remote command.
        let received = loop {
            tokio::select! {
                received = &mut receive => break received,
                sent = &mut send, if sending => match sent {
                    Ok(()) => sending = false,
                    Err(source) => return Err(SshError::Stdin { host: host.to_string(), command: display(), source }),
                },
            }
        };
        let received = received.map_err(|e| match e {
            ReceiveError::Stdout(source) => SshError::Stdout {
                host: host.to_string(),
                command: display(),
                source,
            },
            ReceiveError::TooLarge => SshError::OutputTooLarge {
                host: host.to_string(),
                command: display(),
                limit: capture_limit,
            },
            ReceiveError::Refused => SshError::Protocol {
                host: host.to_string(),
                step: Step::ChannelOpen,
                source: russh::Error::RequestDenied.into(),
            },
        })?;
        let mut guard = guard;
        guard.0 = None; // the server closed the channel: nothing left to close
        let status = received.status.ok_or_else(|| SshError::ConnectionLost {
            host: host.to_string(),
            command: display(),
        })?;
        Ok(ExecOutput {
            status,
            stdout: received.stdout,
            stdout_bytes: received.stdout_bytes,
            stderr: received.stderr,
            stdin_bytes: stdin_bytes.load(Ordering::Relaxed),
        })
    }
}

/// Sends `Close` if the exec future is dropped before the channel closed.
struct CloseOnDrop(Option<ChannelWriteHalf<Msg>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.close().await;
            });
        }
    }
}

/// Copy stdin to the channel in packet-sized chunks, counting, then send EOF.
/// A failed read of the local source is an error; a failed channel write only means the
/// remote side went away, which the receiving side reports better.
async fn send_stdin(
    mut channel: impl AsyncWrite + Unpin,
    stdin: Option<Stdin<'_>>,
    counter: Arc<AtomicU64>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<(), std::io::Error> {
    if let Some(mut source) = stdin {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = source.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            if channel.write_all(&buffer[..n]).await.is_err() {
                return Ok(());
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(progress) = &progress {
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = channel.shutdown().await; // EOF: `docker load` and `cat` wait for it
    Ok(())
}

struct Received {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stdout_bytes: u64,
    stderr: Vec<u8>,
}

enum ReceiveError {
    Stdout(std::io::Error),
    TooLarge,
    Refused,
}

async fn receive(
    reader: &mut russh::ChannelReadHalf,
    mut stdout: Option<Stdout<'_>>,
    capture_limit: usize,
) -> Result<Received, ReceiveError> {
    let mut received = Received {
        status: None,
        stdout: Vec::new(),
        stdout_bytes: 0,
        stderr: Vec::new(),
    };
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                received.stdout_bytes += data.len() as u64;
                match stdout.as_mut() {
                    Some(sink) => sink.write_all(&data).await.map_err(ReceiveError::Stdout)?,
                    None if received.stdout.len() + data.len() > capture_limit => {
                        return Err(ReceiveError::TooLarge);
                    }
                    None => received.stdout.extend_from_slice(&data),
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                received.stderr.extend_from_slice(&data);
                if received.stderr.len() > 2 * STDERR_TAIL {
                    received.stderr.drain(..received.stderr.len() - STDERR_TAIL);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => {
                received.status = Some(ExitStatus::Code(exit_status))
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                received.status = Some(ExitStatus::Signal {
                    name: signal_name_of(&signal_name),
                    core_dumped,
                })
            }
            ChannelMsg::Failure if received.status.is_none() => return Err(ReceiveError::Refused),
            _ => {}
        }
    }
    if received.stderr.len() > STDERR_TAIL {
        received.stderr.drain(..received.stderr.len() - STDERR_TAIL);
    }
    if let Some(sink) = stdout.as_mut() {
        sink.flush().await.map_err(ReceiveError::Stdout)?;
    }
    Ok(received)
}

fn signal_name_of(signal: &russh::Sig) -> String {
    match signal {
        russh::Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}
