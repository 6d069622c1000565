//! `cargo xtask vm-test`: boot a distro kernel with toa.ko and run the lab.

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Distro release whose kernel to boot (see distros/).
    #[arg(long, default_value = "debian-12")]
    pub distro: String,
}

pub fn run(_args: Args) -> Result<()> {
    bail!("vm-test: not implemented yet")
}
