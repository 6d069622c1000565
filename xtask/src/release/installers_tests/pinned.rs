//! A toa.ko that pinned itself (a socket took kTLS): uninstall, upgrade and
//! rollback leave it loaded.

use super::*;

/// /proc/net/toa_stats once toa.ko pinned itself (a socket took kTLS): the
/// rmmod stub then refuses, as the kernel does.
const PINNED_STATS: &str = "                          CPU0
syn_recv_sock_toa        : 0
listen_probe_missed      : 0
kretprobe_missed         : 0
listen_armed_at_load     : 0
pinned                   : 1
records_live             : 0
";

fn pin(lab: &Lab) {
    assert!(lab.root.join("sys/module/toa").is_dir(), "toa.ko is loaded");
    lab.write("proc/net/toa_stats", PINNED_STATS);
}

const PINNED_UNINSTALLED: &str =
    "toa.ko stays loaded until the next reboot: it is pinned (a socket \
     took kTLS or another TCP ULP); nothing loads it at boot any more";

/// The files of `before` plus what a loaded toa.ko puts under /sys and /proc.
fn with_loaded_module(before: &Tree) -> Vec<PathBuf> {
    let mut want: Vec<PathBuf> = files(before).into_iter().cloned().collect();
    want.push(PathBuf::from("proc/net/toa_stats"));
    want.push(PathBuf::from("proc/net/toa_listeners"));
    want.push(PathBuf::from("sys/module/toa/srcversion"));
    want.sort();
    want
}

fn file_list(tree: &Tree) -> Vec<PathBuf> {
    files(tree).into_iter().cloned().collect()
}

#[test]
fn uninstall_with_a_pinned_module_removes_everything_else_and_succeeds() {
    let lab = Lab::new("pinned-uninstall");
    publish_toa_command(&lab, "selftest: 5 passed, 0 failed, 0 skipped", 0);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);

    // --dry-run says what would happen and changes nothing.
    let installed = snapshot(&lab.root);
    let dry = lab.run("install_toa.sh", &["--dry-run", "--uninstall"]);
    assert!(dry.ok, "{}", dry.text());
    assert!(dry.mutating().is_empty(), "{}", dry.text());
    assert_eq!(snapshot(&lab.root), installed, "{}", dry.text());
    assert!(
        dry.stdout.contains("rmmod toa would be refused"),
        "{}",
        dry.text()
    );

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "{}",
        out.text()
    );
    assert!(out.stdout.contains(PINNED_UNINSTALLED), "{}", out.text());
    assert!(!out.stderr.contains("error"), "{}", out.text());
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    for gone in [
        MODULE_PATH,
        MODULES_LOAD,
        "etc/modprobe.d/toa.conf",
        TOA_COMMAND,
    ] {
        assert!(!lab.root.join(gone).exists(), "{gone}: {}", out.text());
    }
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        with_loaded_module(&before),
        "{}",
        out.text()
    );

    // Again (before the reboot): still refused, nothing else to do, no error.
    let again = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["rmmod toa"], "{}", again.text());
    assert!(
        again.stdout.contains(PINNED_UNINSTALLED),
        "{}",
        again.text()
    );
    lab.cleanup();
}

#[test]
fn upgrade_with_a_pinned_module_installs_for_the_next_boot() {
    let lab = Lab::new("pinned-upgrade");
    publish_toa_command(
        &lab,
        "PASS v4-toa-on-inet: ok\nselftest: 5 passed, 0 failed, 0 skipped",
        0,
    );
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    pin(&lab);
    lab.write("sys/module/toa/parameters/trusted_proxies", "\n");
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);

    let out = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "no modprobe: the old toa.ko is loaded\n{}",
        out.text()
    );
    assert!(has_call(&out, "toa selftest"), "{}", out.text());
    assert!(out.stdout.contains("selftest: 5 passed"), "{}", out.text());
    assert!(
        out.stdout
            .contains("the new toa.ko takes over at the next reboot"),
        "{}",
        out.text()
    );
    assert!(!out.stderr.contains("error"), "{}", out.text());
    assert_eq!(
        std::fs::read(lab.root.join(MODULE_PATH)).unwrap(),
        fake_ko(KREL, "SRC2"),
        "the next boot loads the new module"
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "SRC1",
        "the old one still runs"
    );
    assert!(lab.read(MODULES_LOAD).is_some());
    assert!(lab
        .read("etc/modprobe.d/toa.conf")
        .unwrap()
        .contains("options toa trusted_proxies=10.0.0.0/8"));
    assert_eq!(
        lab.read("sys/module/toa/parameters/trusted_proxies")
            .unwrap(),
        "10.0.0.0/8",
        "the running module takes the new trust list now"
    );

    // Run again before the reboot: nothing new to place, the same answer.
    let installed = snapshot(&lab.root);
    let again = lab.run("install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["rmmod toa"], "{}", again.text());
    assert!(
        again
            .stdout
            .contains("the new toa.ko takes over at the next reboot"),
        "{}",
        again.text()
    );
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        file_list(&installed),
        "{}",
        again.text()
    );
    lab.cleanup();
}

#[test]
fn rollback_with_a_pinned_module_fails_closed() {
    // A fresh install whose module is pinned (a service took kTLS) by the
    // time its self-test fails.
    let lab = Lab::new("pinned-rollback");
    let body = format!(
        "#!{}\n{STUB_LOG}\nprintf '%s' '{PINNED_STATS}' >\"$TOA_ROOT/proc/net/toa_stats\"\n\
         echo 'FAIL v4-toa-on-inet: expected [AF_INET 198.51.100.7:41001 len=16]'\nexit 1\n",
        bash().display()
    );
    std::fs::write(lab.dist.join("toa-x86_64"), body).unwrap();
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "fails closed: {}", out.text());
    for said in [
        "toa selftest failed: FAIL v4-toa-on-inet",
        "toa.ko could not be unloaded: it is pinned (a socket took kTLS or another TCP ULP)",
        "it stays loaded until the next reboot, which does not load it again",
    ] {
        assert!(out.stderr.contains(said), "{said:?}\n{}", out.text());
    }
    assert!(
        out.mutating().contains(&"rmmod toa".to_string()),
        "{}",
        out.text()
    );
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    assert!(lab.read(MODULES_LOAD).is_none(), "not loaded at boot");
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(!lab.root.join(TOA_COMMAND).exists());
    assert_eq!(
        file_list(&snapshot(&lab.root)),
        with_loaded_module(&before),
        "{}",
        out.text()
    );

    lab.cleanup();

    // An upgrade over a pinned module whose self-test fails: the new files
    // go again, the old module stays until the reboot.
    let lab = Lab::new("pinned-upgrade-rollback");
    publish_toa_command(&lab, "selftest: 5 passed, 0 failed, 0 skipped", 0);
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    pin(&lab);
    publish_toa_command(&lab, "FAIL v6-toa-on-inet6: expected [AF_INET6]", 1);
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);
    let out = lab.run("install_toa.sh", &[]);
    assert!(!out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        [
            "rmmod toa",
            &format!("depmod -a {KREL}"),
            &format!("depmod -a {KREL}"),
        ],
        "rmmod is tried once\n{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("toa.ko could not be unloaded: it is pinned"),
        "{}",
        out.text()
    );
    assert!(lab.root.join("sys/module/toa").is_dir());
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}

#[test]
fn the_ebpf_mode_is_refused_while_a_pinned_module_is_loaded() {
    let lab = Lab::new("pinned-bpf");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "kmod"]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "the eBPF mode cannot be installed now: toa.ko is loaded and cannot be unloaded before \
         the next reboot, it is pinned (a socket took kTLS or another TCP ULP)",
    );
    assert!(
        out.stderr
            .contains("reboot, then run this again with --mode bpf"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn rmmod_refused_for_another_reason_is_still_an_error() {
    let mut lab = Lab::new("rmmod-busy");
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    lab.env.push(("TOA_TEST_RMMOD_BUSY".into(), "1".into()));
    let installed = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(!out.ok, "{}", out.text());
    for said in [
        "Module toa is in use",
        "could not unload the toa module that is loaded now (rmmod toa failed)",
        "lsmod | grep toa",
    ] {
        assert!(out.stderr.contains(said), "{said:?}\n{}", out.text());
    }
    assert!(!out.stdout.contains("pinned"), "{}", out.text());
    assert_eq!(snapshot(&lab.root), installed, "{}", out.text());
    lab.cleanup();
}

#[test]
fn uninstall_with_a_pinned_module_built_by_dkms_removes_the_registration() {
    let lab = Lab::new("pinned-dkms");
    publish_source(&lab);
    lab.stub("dkms", DKMS_STUB);
    lab.write(&format!("lib/modules/{KREL}/build/Makefile"), "");
    let out = lab.run("compile_install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    pin(&lab);
    let out = lab.run("compile_install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        out.mutating()
            .contains(&format!("dkms remove -m toa -v {VERSION} --all")),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains(PINNED_UNINSTALLED), "{}", out.text());
    assert!(lab.root.join("sys/module/toa").is_dir(), "still loaded");
    assert!(!lab.root.join(format!("usr/src/toa-{VERSION}")).exists());
    assert!(!lab
        .root
        .join(format!("lib/modules/{KREL}/updates/dkms/toa.ko"))
        .exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    lab.cleanup();
}
