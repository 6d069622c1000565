//! `cargo xtask stress`: toa.ko under load in an SMP guest.
//!
//! Boots the distro's kernel like `vm-test`, with more CPUs, and runs
//! `toa-lab stress` instead of the scenarios (see `lab/src/stress.rs`):
//! rmmod/insmod cycles while connections are made and getpeername() runs in
//! several threads, then a churn of short TOA connections after which every
//! record must be freed. The host judges the console and dmesg as for
//! `vm-test` (no WARN, BUG, Oops, or taint beyond out-of-tree/unsigned).

use crate::host::needs::Needs;
use anyhow::Result;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release whose kernel to boot (see distros/).
    #[arg(long, default_value = "debian-12", value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Virtual CPUs of the guest.
    #[arg(long, default_value_t = 4)]
    pub smp: u32,
    /// rmmod/insmod cycles under load.
    #[arg(long, default_value_t = 50)]
    pub cycles: u32,
    /// Threads calling getpeername() on held connections.
    #[arg(long, default_value_t = 4)]
    pub threads: u32,
    /// Threads of the getpeername storm, all on one more held TOA connection.
    #[arg(long, default_value_t = 256)]
    pub storm: u32,
    /// Seconds the guest waits for each protocol step: hundreds of busy
    /// threads on a few emulated CPUs leave the origin little time.
    #[arg(long, default_value_t = 20)]
    pub step_timeout: u32,
    /// Short TOA connections after the cycles.
    #[arg(long, default_value_t = 100_000)]
    pub churn: u64,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Use KVM when /dev/kvm is usable (the default is TCG).
    #[arg(long)]
    pub kvm: bool,
}

impl Args {
    /// Boots a kernel with a module built first.
    pub fn needs(&self) -> Result<Needs> {
        Ok(Needs::vm("stress", true))
    }
}

pub fn run(args: Args) -> Result<()> {
    let distro = args.distro.distro(None)?;
    let module = crate::vm::vm_test::packed_module(&distro)?;
    let lab_args = lab_command(&args);
    eprintln!("stress: toa-lab {}", lab_args.replace(',', " "));
    let opts = crate::vm::vm_test::LabOptions {
        timeout: Duration::from_secs(args.timeout),
        kvm: args.kvm,
        // A lockup must end the run with its backtrace on the console, not
        // leave the guest spinning until the timeout.
        append: format!("toa_lab.args={lab_args} toa_lab.printk=7 softlockup_panic=1"),
        cpus: args.smp,
        // rmmod/insmod patch kernel text while other vCPUs run through it.
        tcg_single_thread: true,
        ..crate::vm::vm_test::LabOptions::default()
    };
    let report = crate::vm::vm_test::run_lab(&distro, &module, &opts)?;
    report.print();
    report.check()
}

/// The guest's lab command line (see [`crate::vm::vm_test::guest_command`]).
fn lab_command(args: &Args) -> String {
    crate::vm::vm_test::guest_command(&[
        "stress".to_string(),
        "--module".into(),
        crate::vm::vm_test::GUEST_MODULE.into(),
        "--cycles".into(),
        args.cycles.to_string(),
        "--threads".into(),
        args.threads.to_string(),
        "--storm".into(),
        args.storm.to_string(),
        "--churn".into(),
        args.churn.to_string(),
        "--step-timeout".into(),
        args.step_timeout.to_string(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_command_line_has_no_spaces() {
        let args = Args {
            distro: crate::distro::Recipe::named("debian-12").unwrap(),
            smp: 4,
            cycles: 50,
            threads: 4,
            storm: 256,
            step_timeout: 20,
            churn: 100_000,
            timeout: 60,
            kvm: false,
        };
        let line = lab_command(&args);
        assert!(!line.contains(' '));
        assert_eq!(
            line,
            "stress,--module,/lib/modules/toa.ko,--cycles,50,--threads,4,--storm,256,--churn,100000,--step-timeout,20"
        );
    }
}
