//! What the installer refuses before it changes anything, and what a refused
//! load puts back.

use super::*;

#[test]
fn tarball_with_a_flipped_byte_is_refused() {
    let lab = Lab::new("flipped");
    lab.publish(&[standard_module()]);
    let tarball = lab.dist.join(format!("{DIST_NAME}.tar.gz"));
    let mut bytes = std::fs::read(&tarball).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tarball, bytes).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(
        &lab,
        &out,
        &before,
        "checksum mismatch for Debian-12-x86_64.tar.gz",
    );
    lab.cleanup();
}

#[test]
fn module_for_another_kernel_is_refused_on_vermagic() {
    let lab = Lab::new("vermagic");
    lab.publish(&[KernelModule::new(
        KREL,
        "6.1.999-1",
        fake_ko("6.1.0-98-amd64", "SRC1"),
    )]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(
        &lab,
        &out,
        &before,
        &format!("built for kernel 6.1.0-98-amd64, but this machine runs {KREL}"),
    );
    lab.cleanup();
}

#[test]
fn lockdown_is_detected_before_loading() {
    let lab = Lab::new("lockdown");
    lab.publish(&[standard_module()]);
    lab.write(
        "sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(&lab, &out, &before, "loads only signed modules");
    assert!(out.stderr.contains("mokutil --import"), "{}", out.text());
    assert!(out.stderr.contains("Secure Boot off"), "{}", out.text());

    std::fs::remove_file(lab.root.join("sys/kernel/security/lockdown")).unwrap();
    lab.stub("mokutil", "echo 'SecureBoot enabled'");
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert_refused(&lab, &out, &before, "Secure Boot is enabled");
    lab.cleanup();
}

#[test]
fn truncated_script_does_nothing() {
    let lab = Lab::new("truncated");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for name in ["install_toa.sh", "compile_install_toa.sh"] {
        let script = lab.script(name);
        // A cut inside the last line (`main "$@" || exit 1`) leaves a whole
        // script; every cut before it must leave only definitions.
        let last_line = script[..script.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        let mut cuts: Vec<usize> = (1..64).map(|i| last_line * i / 64).collect();
        cuts.push(script.len() / 2);
        cuts.push(last_line);
        for cut in cuts {
            let out = lab.pipe(&script[..cut], &[]);
            assert!(
                out.calls.is_empty(),
                "{name} cut at {cut} ran commands\n{}",
                out.text()
            );
            assert_eq!(
                snapshot(&lab.root),
                before,
                "{name} cut at {cut} changed files"
            );
            assert!(
                !out.stdout.contains("toa:"),
                "{name} cut at {cut}: {}",
                out.text()
            );
        }
    }
    lab.cleanup();
}

#[test]
fn dry_run_changes_nothing() {
    let lab = Lab::new("dryrun");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run(
        "install_toa.sh",
        &["--dry-run", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), before);
    for action in [
        "would run: modprobe toa",
        "would run: depmod -a 6.1.0-99-amd64",
        "would install toa.ko as",
        "would write",
        "modules-load.d/toa.conf",
        "modprobe.d/toa.conf",
        "nothing was changed",
    ] {
        assert!(
            out.stdout.contains(action),
            "{action:?} missing\n{}",
            out.text()
        );
    }

    // And on an installed machine, --dry-run --uninstall only says what it would remove.
    assert!(lab.run("install_toa.sh", &[]).ok);
    let installed = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--dry-run", "--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), installed);
    assert!(
        out.stdout.contains("would run: rmmod toa"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn missing_sha256sum_fails_closed() {
    let lab = Lab::new("nosha");
    lab.publish(&[standard_module()]);
    std::fs::remove_file(lab.bin.join("sha256sum")).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(out.stderr.contains("needs 'sha256sum'"), "{}", out.text());
    assert!(out.mutating().is_empty());
    assert_eq!(snapshot(&lab.root), before);
    lab.cleanup();
}

#[test]
fn refused_load_puts_the_previous_module_back_and_persists_nothing() {
    let mut lab = Lab::new("loadfail");
    lab.publish(&[standard_module()]);
    lab.env.push(("TOA_TEST_MODPROBE_FAIL".into(), "1".into()));
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(out.stderr.contains("modprobe toa failed"), "{}", out.text());
    assert!(out.stderr.contains("dmesg"), "{}", out.text());
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "the refused module is removed"
    );
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}
