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

/// What `cargo xtask vm-test` needs: QEMU (for arm64 too with `--arch
/// aarch64`), the builder unless `--module` gives the module; with
/// `--sanitizers` kbuild's tools instead of a builder. A usage mistake
/// (an architecture the recipe lacks, `--sanitizers` with what it cannot
/// run) is refused before anything is installed.
pub fn vm_test_needs(args: &vm_test::Args) -> anyhow::Result<crate::host::needs::Needs> {
    use crate::host::needs::{self, Needs};
    args.distro.distro(args.arch)?;
    if args.sanitizers {
        sanitizer::usage(args)?;
        // The kernel and its modules are built on the host: no builder.
        return Ok(Needs::vm("vm-test --sanitizers", false).tools(needs::KERNEL_BUILD));
    }
    let vm = Needs::vm("vm-test", args.module.is_none());
    Ok(if args.arch == Some(crate::distro::arch::Arch::Aarch64) {
        vm.tools(needs::VM_AARCH64)
    } else {
        vm
    })
}

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
