//! The compile path: headers, the build from toa.tar.gz, and DKMS.

use super::*;

#[test]
fn compile_option_builds_when_there_is_no_prebuilt_module() {
    let lab = Lab::new("compileopt");
    publish_source(&lab);
    lab.publish(&[KernelModule::new(
        "6.1.0-98-amd64",
        "6.1.998-1",
        fake_ko("6.1.0-98-amd64", "SRC0"),
    )]);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run(
        "install_toa.sh",
        &["--compile", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout
            .contains("verified sha256 of compile_install_toa.sh"),
        "{}",
        out.text()
    );
    assert!(out.mutating().iter().any(|c| c.starts_with("make -C ")));
    assert!(
        out.mutating().ends_with(&["modprobe toa".to_string()]),
        "{}",
        out.text()
    );
    assert!(lab
        .read("etc/modprobe.d/toa.conf")
        .unwrap()
        .contains("trusted_proxies=10.0.0.0/8"));

    // A compile script that does not match SHA256SUMS is not run.
    assert!(lab.run("install_toa.sh", &["--uninstall"]).ok);
    let path = lab.dist.join("compile_install_toa.sh");
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"# altered\n");
    std::fs::write(&path, text).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--compile"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "checksum mismatch for compile_install_toa.sh",
    );
    lab.cleanup();
}

#[test]
fn compile_installs_headers_builds_and_loads() {
    let lab = Lab::new("compile");
    publish_source(&lab);
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let calls = out.mutating();
    assert!(
        calls.contains(&format!(
            "apt-get install -y -q gcc make linux-headers-{KREL}"
        )),
        "{}",
        out.text()
    );
    assert!(
        calls.iter().any(|c| c.starts_with("make -C ")),
        "{}",
        out.text()
    );
    assert!(
        calls.ends_with(&[format!("depmod -a {KREL}"), "modprobe toa".to_string()]),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("verified sha256 of toa.tar.gz"));
    assert!(
        out.stdout.contains("dkms is not installed"),
        "{}",
        out.text()
    );
    assert_eq!(
        lab.read(MODULES_LOAD)
            .unwrap()
            .lines()
            .filter(|l| *l == "toa")
            .count(),
        1
    );

    // Headers present now: a second run builds again but changes nothing.
    let installed = snapshot(&lab.root);
    let again = lab.run("compile_install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    let changed: Vec<String> = again
        .mutating()
        .into_iter()
        .filter(|c| !c.starts_with("make -C "))
        .collect();
    assert!(changed.is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    // A damaged toa.tar.gz is refused.
    let tarball = lab.dist.join("toa.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    let end = bytes.len() - 3;
    bytes[end] ^= 0x80;
    std::fs::write(&tarball, bytes).unwrap();
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(
        !out.ok && out.stderr.contains("checksum mismatch for toa.tar.gz"),
        "{}",
        out.text()
    );
    assert!(out.mutating().is_empty(), "{}", out.text());
    lab.cleanup();
}

#[test]
fn compile_registers_with_dkms_and_uninstall_removes_it() {
    let lab = Lab::new("dkms");
    publish_source(&lab);
    lab.stub("dkms", DKMS_STUB);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let calls = out.mutating();
    for want in [
        format!("dkms add -m toa -v {VERSION}"),
        format!("dkms build -m toa -v {VERSION} -k {KREL}"),
        format!("dkms install -m toa -v {VERSION} -k {KREL}"),
        "modprobe toa".to_string(),
    ] {
        assert!(calls.contains(&want), "{want} missing\n{}", out.text());
    }
    assert!(
        !calls.iter().any(|c| c.starts_with("apt-get")),
        "headers were there"
    );
    let conf = lab
        .read(&format!("usr/src/toa-{VERSION}/dkms.conf"))
        .unwrap();
    assert!(conf.contains(&format!("PACKAGE_VERSION=\"{VERSION}\"")));
    assert!(lab
        .root
        .join(format!(
            "usr/src/toa-{VERSION}/rust/toa_core-x86_64-plain.o"
        ))
        .is_file());
    assert!(lab
        .root
        .join(format!("lib/modules/{KREL}/updates/dkms/toa.ko"))
        .is_file());
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "one toa.ko per kernel"
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "DKMS"
    );

    let installed = snapshot(&lab.root);
    let again = lab.run("compile_install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    let changed: Vec<String> = again
        .mutating()
        .into_iter()
        .filter(|c| !c.starts_with("make -C "))
        .collect();
    assert!(changed.is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.mutating()
            .contains(&format!("dkms remove -m toa -v {VERSION} --all")),
        "{}",
        out.text()
    );
    assert!(!lab.root.join(format!("usr/src/toa-{VERSION}")).exists());
    assert!(!lab.root.join("sys/module/toa").exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}
