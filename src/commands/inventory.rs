//! `dropship inventory`: the inventory as ansible-inventory prints it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::InventoryArgs;
use crate::inventory::render;

pub fn run(run: &super::Run, args: &InventoryArgs) -> anyhow::Result<ExitCode> {
    let global = &run.global;
    let inventory = run.load_inventory().context("reading the inventory")?;
    let output = if let Some(host) = &args.host {
        render::to_ansible_json(&render::host(&inventory, host)?)
    } else if let Some(group) = &args.graph {
        render::graph(&inventory, group)?
    } else {
        render::to_ansible_json(&render::list(&inventory, global.limit.as_deref())?)
    };
    // `dropship inventory --list | head` closes the pipe early: that is not an error.
    match writeln!(std::io::stdout().lock(), "{output}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.context("writing to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}
