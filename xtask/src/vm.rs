//! Proving toa: the VM lab (QEMU, its initramfs and guest, the lab's test
//! modules), the installers' VM test, stress, bench, the sanitizer kernel,
//! fuzzing and the container test.

pub mod bench;
pub mod container_test;
pub mod fuzz;
pub mod initramfs;
pub mod lab_kmod;
pub mod qemu;
pub mod sanitizer;
pub mod stress;
pub mod vm_dry_run;
pub mod vm_install;
pub mod vm_test;

/// `cargo xtask vm-test`: the lab on a distro's kernel, or with
/// `--sanitizers` on a kernel built here (see [`sanitizer`]), or with
/// `--dry-run` what a run would do, offline (see [`vm_dry_run`]).
pub fn run_vm_test(args: vm_test::Args) -> anyhow::Result<()> {
    if args.sanitizers {
        return sanitizer::vm_test(&args);
    }
    if args.dry_run {
        let distro = args.distro.distro(args.arch)?;
        crate::repo::lab_kernel::ensure_bootable(&distro)?;
        return vm_dry_run::run(&distro, &args);
    }
    vm_test::run(args)
}
