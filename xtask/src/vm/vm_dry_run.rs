//! `cargo xtask vm-test --dry-run`: what a lab run of an RPM-family release
//! would fetch, extract, build, pack and boot, worked out offline from the
//! recipe's fixture metadata (`xtask/tests/fixtures/rpm/<distro>/`), so the
//! path to a kernel no reachable mirror serves can still be read and checked.

use crate::distro::{Distro, Repo};
use crate::vm::vm_test::Args;
use anyhow::{Context, Result};
use std::path::PathBuf;

pub fn run(distro: &Distro, args: &Args) -> Result<()> {
    let Repo::RpmMd(repo) = &distro.repo else {
        crate::report::usage_bail!(
            "--dry-run reads the fixture metadata of RPM-family recipes; {} is an apt release \
             (its archive is reachable: run without --dry-run)",
            distro.name
        );
    };
    let (covered, missing) = crate::repo::fixtures::rpm_covered(distro, repo);
    let fixture = crate::repo::fixtures::root().join("rpm").join(&distro.name);
    let release = match &args.kernel {
        Some(release) => release.clone(),
        None => crate::repo::fixtures::kernels(distro)?
            .and_then(|found| found.kernels.last().cloned())
            .map(|k| k.release)
            .with_context(|| {
                format!(
                    "{}: no fixture metadata lists a kernel ({} has none)",
                    distro.name,
                    fixture.display()
                )
            })?,
    };
    let rpms = crate::repo::rpm::kernel_rpms_with(
        &crate::repo::fixtures::RpmFixtures {
            dir: fixture.clone(),
        },
        &distro.name,
        distro.family,
        &distro.arch,
        &covered,
        &release,
    )?;
    let heading = |what: &str| println!("\n{what}:");
    println!(
        "dry run of `cargo xtask vm-test --distro {}`: kernel {release}",
        distro.name
    );
    let shown = fixture
        .strip_prefix(crate::host::cache::project_root())
        .unwrap_or(&fixture);
    println!("metadata: {} (offline)", shown.display());
    if !missing.is_empty() {
        println!(
            "not in the fixture (a real run reads them too): {}",
            missing.join(", ")
        );
    }

    heading("download (each checked against the sha256 and size of its metadata)");
    for rpm in std::iter::once(&rpms.image).chain(&rpms.modules) {
        let p = &rpm.package;
        let check = match (&p.sha256, p.size) {
            (Some(sum), Some(size)) => format!("sha256 {sum}, {size} bytes"),
            _ => "no sha256/size in this metadata: a real run refuses the package".to_string(),
        };
        println!("  {}  ({check})", rpm.url);
    }
    println!(
        "  busybox-static of {} (the guest's userland), from its archive",
        crate::repo::lab_kernel::BUSYBOX_FROM
    );

    heading("extract");
    let image = file_name(&rpms.image.url);
    println!("  vmlinuz: boot/vmlinuz-{release} or lib/modules/{release}/vmlinuz of {image}");
    let from: Vec<&str> = std::iter::once(&rpms.image)
        .chain(&rpms.modules)
        .map(|r| file_name(&r.url))
        .collect();
    println!(
        "  modules {} and what their .modinfo depends= names, under lib/modules/{release}/ of {}; \
         .ko.xz/.ko.zst/.ko.gz decompressed for busybox insmod; built-in ones (modules.builtin) skipped; \
         tls left out where the kernel has no kTLS",
        crate::vm::vm_test::GUEST_MODULES.join(", "),
        from.join(", ")
    );

    heading("build");
    println!(
        "  toa.ko for {release}: cargo xtask build --distro {} (builder image {}, {}-{})",
        distro.name, distro.builder.image, repo.headers_package, rpms.version
    );
    println!(
        "  the lab's test modules ({}) against the same headers",
        crate::vm::lab_kmod::MODULES.join(", ")
    );
    println!(
        "  toa-lab and toa, static ({}-unknown-linux-musl)",
        distro.arch
    );

    // The archive the run would pack, from empty stand-ins for each file.
    let dir = crate::vm::vm_test::vm_dir(distro).join("dry-run");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stand_in = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, b"").with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let preload = [stand_in("tun.ko")?];
    let mut test_modules = Vec::new();
    for m in crate::vm::lab_kmod::MODULES {
        test_modules.push(stand_in(m)?);
    }
    test_modules.push(stand_in("tls.ko")?);
    let archive = crate::vm::initramfs::lab_archive(&crate::vm::initramfs::LabImage {
        busybox: &stand_in("busybox")?,
        preload: &preload,
        toa_ko: &stand_in("toa.ko")?,
        lab_program: &stand_in("toa-lab")?,
        operator_cli: Some(&stand_in("toa")?),
        previous_operator_cli: None,
        test_modules: &test_modules,
        init: crate::vm::initramfs::GUEST_INIT,
    })?;
    heading("initramfs (stand-ins are 0 bytes; tun.ko is preceded by its dependencies)");
    let (links, files): (Vec<String>, Vec<String>) = archive
        .listing()
        .into_iter()
        .partition(|l| l.contains(" -> busybox"));
    for line in files {
        println!("  {line}");
    }
    println!("  bin/<applet> -> busybox for {} applets", links.len());

    let vm = crate::vm::vm_test::vm_dir(distro);
    let mut boot = crate::vm::qemu::Boot::new(
        &cached_vmlinuz(&release, &rpms.version),
        &vm.join("initramfs.cpio.gz"),
        &vm.join("console.log"),
    );
    boot.set_arch(distro.arch_kind());
    boot.accel = if args.kvm {
        crate::vm::qemu::Accel::Kvm
    } else {
        crate::vm::qemu::Accel::Tcg
    };
    boot.timeout = std::time::Duration::from_secs(args.timeout);
    boot.append =
        crate::vm::vm_test::scenario_args(args, &release, distro.arch_kind()).unwrap_or_default();
    let defaults = crate::vm::vm_test::LabOptions::default();
    boot.cpus = defaults.cpus;
    boot.tcg_single_thread = defaults.tcg_single_thread;
    heading("qemu (KVM where asked and usable, else TCG)");
    println!(
        "  {} {}",
        crate::vm::qemu::emulator(distro.arch_kind()),
        boot.args()
            .iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Where [`crate::repo::deb::kernel_files`] leaves the extracted vmlinuz.
fn cached_vmlinuz(release: &str, version: &str) -> PathBuf {
    crate::host::cache::cache_dir()
        .join("kernels")
        .join(format!("{release}_{version}"))
        .join("vmlinuz")
}

fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// `word`, quoted when a shell would split it.
fn shell_word(word: &str) -> String {
    if word.contains(' ') {
        format!("'{word}'")
    } else {
        word.to_string()
    }
}
