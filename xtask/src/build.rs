//! `cargo xtask build`: toa.ko for a distro release's kernel, packed under target/dist.

use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release to build for (a file stem under distros/).
    #[arg(long, default_value = "debian-12")]
    pub distro: String,
}

/// What a build produced for one kernel.
#[allow(dead_code)]
pub struct Built {
    /// `uname -r` of the kernel the module was built for, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// Package version of that kernel, e.g. `6.1.176-1`.
    pub kernel_version: String,
    /// The packed tarball, `target/dist/Debian-12-x86_64.tar.gz`.
    pub tarball: PathBuf,
    /// Path of the module inside the tarball, e.g. `Debian-12-x86_64/toa.ko`.
    pub ko_in_tarball: String,
}

/// Build, check and pack toa.ko for the newest kernel of `distro`.
pub fn build_distro(_distro: &crate::distro::Distro) -> Result<Built> {
    bail!("build: not implemented yet")
}

pub fn run(args: Args) -> Result<()> {
    let distro = crate::distro::find(&args.distro)?;
    let built = build_distro(&distro)?;
    println!("{} ({}) -> {}", built.release, built.kernel_version, built.tarball.display());
    Ok(())
}
