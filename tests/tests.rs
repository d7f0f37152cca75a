//! The integration tests: one binary, a module per area, one `support`.
//!
//! Tests that touch the test bed are skipped with a loud message when it is not up (and fail
//! in CI); `make test` brings it up first.

#[macro_use]
mod support;

mod cache;
mod cli;
mod fleet;
mod inventory;
mod push;
mod registry_client;
mod runtimes;
mod sources;
mod ssh;
mod testbed;
