//! The SSH transport: sessions to hosts, directly or through a bastion, with verified host
//! keys and real authentication, and remote commands with streamed stdin/stdout.
//!
//! It knows hosts only as [`Host`] values (built by the inventory or from flags) and nothing of
//! what the commands do.
//!
//! ```no_run
//! # async fn demo(host: dropship::ssh::Host) -> Result<(), dropship::ssh::SshError> {
//! use dropship::ssh::{ConnectOptions, Connector, RemoteCommand};
//! let connector = Connector::new(ConnectOptions::default());
//! let session = connector.connect(&host).await?;
//! let command = RemoteCommand::new(["cat"]);
//! let output = session.exec(&command).stdin(&b"hello"[..]).run().await?.check(session.host(), &command)?;
//! assert_eq!(output.stdout, b"hello");
//! # Ok(()) }
//! ```

mod auth;
mod bastion;
mod command;
pub mod config;
mod connector;
mod error;
mod host;
mod host_keys;
pub mod known_hosts;
mod options;
mod session;

pub use auth::{PASSPHRASE_ENV, Passphrase};
pub use command::{RemoteCommand, quote, quote_words};
pub use connector::Connector;
pub use error::{SshError, Step};
pub use host::{
    Become, DEFAULT_PORT, Destination, Hop, Host, Source, Sources, StrictHostKeyChecking,
    parse_port,
};
pub use host_keys::UnknownHostPolicy;
pub use options::{ConnectOptions, DEFAULT_BASTION_CONNECTIONS};
pub use session::{DEFAULT_CAPTURE_LIMIT, Exec, ExecOutput, ExitStatus, STDERR_TAIL, Session};
