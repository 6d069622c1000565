//! `cargo xtask test`: the project's test command.
use anyhow::{bail, Result};
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: Args) -> Result<()> {
    bail!("test: not implemented yet")
}
