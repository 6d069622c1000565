//! `cargo xtask`: builds, checks, packs and proves toa.ko.
//!
//! This file only declares modules and dispatches; each subcommand lives in
//! its own file with an `Args` struct and a `run`.

mod build;
#[cfg(test)]
mod cli_tests;
mod distro;
mod host;
#[cfg(test)]
mod layering;
mod objects;
mod preflight;
mod progress;
#[cfg(test)]
mod recipe_tests;
mod release;
mod repo;
mod report;
mod test;
#[cfg(test)]
mod testing;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use objects::audit;
use release::{ci, installers, merge, plan, source};
use repo::kernels;
use std::process::ExitCode;
use vm::{bench, container_test, fuzz, stress, vm_install, vm_test};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, check, pack and prove toa.ko",
    after_help = "Each command first provides what it needs: the Rust targets and components of \
                  rust-toolchain.toml (rustup) and host tools (apt-get, as root).\n\
                  Exit status: 0 done, 1 failed, 2 usage error. TOA_BACKTRACE=1 adds a backtrace \
                  to an error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build toa.ko for a distro release's kernel and pack it under target/dist.
    Build(build::Args),
    /// Boot a distro kernel under QEMU with toa.ko and run the lab scenarios.
    VmTest(vm_test::Args),
    /// toa.ko under load in an SMP guest: rmmod/insmod cycles amid connections and getpeername threads, then a churn.
    Stress(stress::Args),
    /// Prove the installers in a Debian guest with a real root filesystem, booted on its own kernel.
    VmInstallTest(vm_install::Args),
    /// The test suite: host unit tests, object audit checks, and the VM lab.
    Test(test::Args),
    /// The eBPF mode as the Kubernetes DaemonSet deploys it, with this machine's docker engine, in a cgroup of its own.
    ContainerTest(container_test::Args),
    /// List every kernel a distro release shipped (from its repository metadata).
    Kernels(kernels::Args),
    /// Audit a Rust kernel object (panic symbols, undefined symbols, relocations).
    Audit(audit::Args),
    /// Render install_toa.sh and compile_install_toa.sh for a download URL into target/dist.
    Installers(installers::Args),
    /// Write the source tarball target/dist/toa.tar.gz (builds with gcc, make and kernel headers).
    Source(source::Args),
    /// Measure what toa.ko costs a connection (one VM boot, unloaded vs loaded) and what a build costs.
    Bench(bench::Args),
    /// Fuzz the Rust core through its C ABI with libFuzzer; findings land in toa-kmod/fuzz/regressions.
    Fuzz(fuzz::Args),
    /// Generate the release workflow (.github/workflows/release.yml) from distros/; --check fails when it is stale.
    Ci(ci::Args),
    /// Print the release build matrix: every kernel of each release, in shards of N per build job.
    Plan(plan::Args),
    /// Merge tarball parts from sharded builds into one tarball per release, index.json and SHA256SUMS.
    Merge(merge::Args),
}

fn main() -> ExitCode {
    report::init();
    report::exit(run(Cli::parse().command))
}

impl Command {
    /// What the command needs from the machine, as the command says it.
    fn needs(&self) -> Result<host::needs::Needs> {
        match self {
            Command::Build(args) => args.needs(),
            Command::VmTest(args) => vm::vm_test_needs(args),
            Command::VmInstallTest(args) => args.needs(),
            Command::Stress(args) => args.needs(),
            Command::Test(args) => args.needs(),
            Command::ContainerTest(args) => args.needs(),
            Command::Kernels(args) => args.needs(),
            Command::Source(args) => args.needs(),
            Command::Fuzz(args) => args.needs(),
            Command::Bench(args) => args.needs(),
            Command::Ci(args) => args.needs(),
            Command::Plan(args) => args.needs(),
            // They read and write files only.
            Command::Audit(_) | Command::Installers(_) | Command::Merge(_) => {
                Ok(host::needs::Needs::default())
            }
        }
    }
}

/// Provides what the command needs (preflight), then runs it.
fn run(command: Command) -> Result<()> {
    preflight::ensure(&command.needs()?)?;
    match command {
        Command::Build(args) => build::run(args),
        Command::VmTest(args) => vm::run_vm_test(args),
        Command::VmInstallTest(args) => vm_install::run(args),
        Command::Stress(args) => stress::run(args),
        Command::Test(args) => test::run(args),
        Command::ContainerTest(args) => container_test::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Kernels(args) => kernels::run(args),
        Command::Installers(args) => installers::run(args),
        Command::Source(args) => source::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Ci(args) => ci::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Merge(args) => merge::run(args),
    }
}
