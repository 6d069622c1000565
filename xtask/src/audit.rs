//! Audit of the Rust kernel object.
use anyhow::{bail, Result};
#[derive(clap::Args)]
pub struct Args {
    /// The object to audit.
    pub object: std::path::PathBuf,
}
pub fn run(_args: Args) -> Result<()> {
    bail!("audit: not implemented yet")
}
