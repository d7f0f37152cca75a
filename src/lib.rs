//! dropship: get container images onto every node of a cluster fast, over plain SSH,
//! through a bastion. See docs/architecture.md for how the parts fit.

pub mod ansible_cfg;
pub mod cli;
pub mod commands;
pub mod facts;
pub mod image;
pub mod inventory;
pub mod logging;
pub mod push;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod shutdown;
pub mod ssh;
mod tty;
