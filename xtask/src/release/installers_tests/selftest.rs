//! The operator's `toa` command: installed, its self-test run, and a failed one
//! rolled back.

use super::*;

#[test]
fn install_runs_the_selftest_and_uninstall_removes_the_command() {
    let lab = Lab::new("selftest-pass");
    publish_toa_command(
        &lab,
        "PASS v4-toa-on-inet: ok\nselftest: 5 passed, 0 failed, 0 skipped",
        0,
    );
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.calls.contains(&"toa selftest".to_string()),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("verified sha256 of toa-x86_64"),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("selftest: 5 passed"), "{}", out.text());
    let installed = std::fs::read(lab.root.join(TOA_COMMAND)).unwrap();
    assert_eq!(
        installed,
        std::fs::read(lab.dist.join("toa-x86_64")).unwrap()
    );
    let again = lab.run("install_toa.sh", &[]);
    assert!(again.stdout.contains("is up to date"), "{}", again.text());

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert!(!lab.root.join(TOA_COMMAND).exists(), "{}", removed.text());
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );
    lab.cleanup();
}

#[test]
fn a_failed_selftest_rolls_the_installation_back() {
    let lab = Lab::new("selftest-fail");
    publish_toa_command(
        &lab,
        "PASS no-toa-v4: ok\nFAIL v4-toa-on-inet: expected [AF_INET 198.51.100.7:41001 len=16]",
        1,
    );
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr
            .contains("toa selftest failed: FAIL v4-toa-on-inet"),
        "{}",
        out.text()
    );
    assert!(
        out.mutating().contains(&"rmmod toa".to_string()),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn no_selftest_installs_the_command_without_running_it() {
    let lab = Lab::new("selftest-skip");
    publish_toa_command(&lab, "FAIL v4-toa-on-inet: would fail", 1);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--no-selftest"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        !out.calls.iter().any(|c| c.starts_with("toa ")),
        "{}",
        out.text()
    );
    assert!(lab.root.join(TOA_COMMAND).exists());
    lab.cleanup();
}

#[test]
fn a_damaged_command_download_rolls_back_too() {
    let lab = Lab::new("selftest-damaged");
    publish_toa_command(&lab, "selftest: 5 passed", 0);
    lab.publish(&[standard_module()]);
    std::fs::write(lab.dist.join("toa-x86_64"), "#!/bin/sh\nexit 0\n").unwrap();
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr.contains("checksum mismatch for toa-x86_64"),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert!(!lab.root.join(MODULE_PATH).exists(), "{}", out.text());
    lab.cleanup();
}

#[test]
fn compile_install_runs_the_selftest_and_rolls_back_on_failure() {
    let lab = Lab::new("compile-selftest");
    publish_toa_command(
        &lab,
        "FAIL v6-toa-on-inet6: expected [AF_INET6 [2001:db8::7]:41002 len=28]",
        1,
    );
    publish_source(&lab);
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.calls.contains(&"toa selftest".to_string()),
        "{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("toa selftest failed: FAIL v6-toa-on-inet6"),
        "{}",
        out.text()
    );
    assert!(!lab.root.join("sys/module/toa").exists(), "unloaded");
    assert!(!lab.root.join(TOA_COMMAND).exists(), "{}", out.text());
    lab.cleanup();
}
