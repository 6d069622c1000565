//! Which prebuilt module is installed: by release, distro, `uname -v`, flavour
//! and architecture, and what is said when there is none.

use super::*;

#[test]
fn no_prebuilt_module_names_the_kernel_and_the_compile_command() {
    let lab = Lab::new("noprebuilt");
    lab.publish(&[KernelModule::new(
        "6.1.0-98-amd64",
        "6.1.998-1",
        fake_ko("6.1.0-98-amd64", "SRC0"),
    )]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("there is no prebuilt toa.ko for kernel {KREL}")),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("6.1.0-98-amd64"),
        "lists the kernels there are"
    );
    assert!(
        out.stderr.contains(&format!(
            "curl -fsSL {}/compile_install_toa.sh | sudo bash -s -- --base-url {}",
            lab.base_url, lab.base_url
        )),
        "{}",
        out.text()
    );
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

#[test]
fn entry_is_chosen_by_release_then_distro_and_uname_v() {
    let lab = Lab::new("choice");
    // Two tarballs carry a module for the same release; an old CentOS has no
    // os-release, only /etc/redhat-release.
    write_tarball(
        &lab.dist,
        "CentOS-7.2-x86_64",
        "centos-7.2",
        "x86_64",
        &[KernelModule::new(KREL, "1", fake_ko(KREL, "CENTOS"))],
    )
    .unwrap();
    lab.publish(&[standard_module()]);
    std::fs::remove_file(lab.root.join("etc/os-release")).unwrap();
    lab.write(
        "etc/redhat-release",
        "CentOS Linux release 7.2.1511 (Core)\n",
    );
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("this machine: CentOS Linux release 7.2.1511 (Core), kernel"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout
            .contains("(centos-7.2) in CentOS-7.2-x86_64.tar.gz"),
        "{}",
        out.text()
    );

    // Debian by its old release file: the Debian tarball's entry.
    std::fs::remove_file(lab.root.join("etc/redhat-release")).unwrap();
    lab.write("etc/debian_version", "12.8\n");
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("(debian-12) in Debian-12-x86_64.tar.gz"),
        "{}",
        out.text()
    );

    // An entry that names a uname -v is only for that build of the kernel.
    let index = std::fs::read_to_string(lab.dist.join("index.json")).unwrap();
    std::fs::write(
        lab.dist.join("index.json"),
        index.replace("\"uname_v\":\"\"", "\"uname_v\":\"#2 SMP other build\""),
    )
    .unwrap();
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout.contains("there is no prebuilt toa.ko"),
        "{}",
        out.text()
    );
    std::fs::write(
        lab.dist.join("index.json"),
        index.replace(
            "\"uname_v\":\"\"",
            "\"uname_v\":\"#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2025-01-01)\"",
        ),
    )
    .unwrap();
    let out = lab.run("install_toa.sh", &["--dry-run"]);
    assert!(out.ok, "{}", out.text());
    lab.cleanup();
}

/// The three Debian flavours of one ABI, each with its own module.
fn flavour_modules(flavours: &[&str]) -> Vec<KernelModule> {
    flavours
        .iter()
        .map(|f| {
            let release = format!("6.1.0-99-{f}");
            KernelModule::new(&release, "6.1.999-1", fake_ko(&release, f))
        })
        .collect()
}

#[test]
fn the_module_of_the_running_flavour_is_installed() {
    for flavour in ["cloud-amd64", "rt-amd64", "amd64"] {
        let mut lab = Lab::new(&format!("flavour-{flavour}"));
        lab.publish(&flavour_modules(&["amd64", "cloud-amd64", "rt-amd64"]));
        let krel = format!("6.1.0-99-{flavour}");
        lab.env.push(("TOA_TEST_KREL".into(), krel.clone()));
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "{flavour}: {}", out.text());
        assert_eq!(
            std::fs::read(lab.root.join(format!("lib/modules/{krel}/updates/toa.ko"))).unwrap(),
            fake_ko(&krel, flavour),
            "{flavour}: the module of exactly this kernel"
        );
        lab.cleanup();
    }
}

#[test]
fn no_prebuilt_for_this_flavour_lists_the_distro_kernels_that_have_one() {
    let mut lab = Lab::new("flavour-missing");
    // Another release's kernels are not offered as this one's.
    write_tarball(
        &lab.dist,
        "Debian-11-x86_64",
        "debian-11",
        "x86_64",
        &[KernelModule::new(
            "5.10.0-99-rt-amd64",
            "5.10.999-1",
            fake_ko("5.10.0-99-rt-amd64", "B"),
        )],
    )
    .unwrap();
    lab.publish(&flavour_modules(&["amd64", "cloud-amd64"]));
    let krel = "6.1.0-99-rt-amd64";
    lab.env.push(("TOA_TEST_KREL".into(), krel.into()));
    std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("there is no prebuilt toa.ko for kernel {krel}")),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains(
            "prebuilt modules for debian-12 exist for kernels: 6.1.0-99-amd64, 6.1.0-99-cloud-amd64"
        ),
        "{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("compile_install_toa.sh | sudo bash -s -- --base-url"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("5.10.0-99"), "{}", out.text());
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

/// An arm64 machine (`uname -m` says aarch64) takes the module of the
/// release's aarch64 tarball, even where the x86_64 tarball lists the same
/// kernel release string; an x86_64 machine takes the other one.
#[test]
fn the_module_of_the_machines_architecture_is_picked() {
    let krel = "6.1.0-99-arm64";
    for (arch, tarball) in [
        ("aarch64", "Debian-12-aarch64"),
        ("x86_64", "Debian-12-x86_64"),
    ] {
        let mut lab = Lab::new(&format!("arch-{arch}"));
        for (a, t) in [
            ("x86_64", "Debian-12-x86_64"),
            ("aarch64", "Debian-12-aarch64"),
        ] {
            let module = KernelModule::new(krel, "6.1.999-1", fake_ko(krel, a));
            write_tarball(&lab.dist, t, "debian-12", a, &[module]).unwrap();
        }
        index::write_index(&lab.dist).unwrap();
        lab.env.push(("TOA_TEST_KREL".into(), krel.into()));
        lab.env.push(("TOA_TEST_ARCH".into(), arch.into()));
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{krel}/kernel"))).unwrap();
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &["--dry-run"]);
        assert!(out.ok, "{arch}: {}", out.text());
        assert!(
            out.stdout.contains(&format!(
                "found toa.ko for {krel} (debian-12) in {tarball}.tar.gz"
            )),
            "{arch}: {}",
            out.text()
        );
        assert!(out.mutating().is_empty(), "{arch}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before);

        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "{arch}: {}", out.text());
        assert_eq!(
            std::fs::read(lab.root.join(format!("lib/modules/{krel}/updates/toa.ko"))).unwrap(),
            fake_ko(krel, arch),
            "{arch}: the module of this architecture"
        );
        lab.cleanup();
    }
}
