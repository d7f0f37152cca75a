//! `dropship inventory`: the inventory as ansible-inventory prints it.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, InventoryArgs};

pub fn run(_global: &GlobalArgs, _args: &InventoryArgs) -> anyhow::Result<ExitCode> {
    Err(super::UsageError("`dropship inventory` is not built yet".into()).into())
}
