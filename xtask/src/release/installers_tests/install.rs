//! Installing toa.ko, rerunning, upgrading and uninstalling: the files it
//! leaves and the calls it makes.

use super::*;

#[test]
fn install_is_idempotent_and_uninstall_removes_everything() {
    let lab = Lab::new("idempotent");
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let first = lab.run("install_toa.sh", &[]);
    assert!(first.ok, "{}", first.text());
    assert_eq!(
        first.mutating(),
        [&format!("depmod -a {KREL}"), "modprobe toa"],
        "{}",
        first.text()
    );
    assert_eq!(
        std::fs::read(lab.root.join(MODULE_PATH)).unwrap(),
        fake_ko(KREL, "SRC1")
    );
    let conf = lab.read(MODULES_LOAD).unwrap();
    assert_eq!(
        conf.lines().filter(|l| *l == "toa").count(),
        1,
        "modules-load.d: {conf}"
    );
    assert!(lab.root.join("sys/module/toa").is_dir());
    assert!(
        first.stdout.contains("toa                    16384  0"),
        "{}",
        first.text()
    );
    assert!(
        first.stdout.contains("syn_recv_sock_toa"),
        "{}",
        first.text()
    );
    assert!(first
        .stdout
        .contains("verified sha256 of Debian-12-x86_64.tar.gz"));
    assert!(
        first.stdout.contains(
            "toa.ko took over 2 listening sockets that were already open: services already running show the client on their new connections, without a restart"
        ),
        "what is covered from the load on: {}",
        first.text()
    );
    assert!(lab.read("etc/rc.local").is_none(), "no rc.local on systemd");

    let installed = snapshot(&lab.root);
    for round in 2..=3 {
        let again = lab.run("install_toa.sh", &[]);
        assert!(again.ok, "round {round}: {}", again.text());
        assert_eq!(
            again.mutating(),
            Vec::<String>::new(),
            "round {round}: {}",
            again.text()
        );
        assert_eq!(
            snapshot(&lab.root),
            installed,
            "round {round} changed files"
        );
        assert!(again.stdout.contains("already loaded"), "{}", again.text());
    }

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(
        removed.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}")],
        "{}",
        removed.text()
    );
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );

    let again = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(again.ok, "{}", again.text());
    assert!(again.mutating().is_empty(), "{}", again.text());
    assert!(again.stdout.contains("not installed"), "{}", again.text());
    lab.cleanup();
}

#[test]
fn rc_local_is_used_without_systemd_and_never_duplicated() {
    let lab = Lab::new("rclocal");
    lab.publish(&[standard_module()]);
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let legacy = format!("insmod /lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko");
    let original = "#!/bin/sh -e\n# rc.local\nservice-start --foo\n\nexit 0\n";
    lab.write(
        "etc/rc.local",
        &format!("#!/bin/sh -e\n# rc.local\nservice-start --foo\n{legacy}\n\nexit 0\n{legacy}\n"),
    );
    lab.write(
        &format!("lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko"),
        "old",
    );

    for round in 1..=3 {
        let out = lab.run("install_toa.sh", &[]);
        assert!(out.ok, "round {round}: {}", out.text());
        let rc = lab.read("etc/rc.local").unwrap();
        let ours: Vec<&str> = rc
            .lines()
            .filter(|l| l.starts_with("modprobe toa"))
            .collect();
        assert_eq!(ours.len(), 1, "round {round}: {rc}");
        assert!(!rc.contains("insmod"), "legacy lines stay: {rc}");
        assert!(
            rc.ends_with(&format!("{}\nexit 0\n", ours[0])),
            "our line goes before the final exit 0: {rc}"
        );
        assert!(rc.starts_with("#!/bin/sh -e\n# rc.local\nservice-start --foo\n"));
        assert!(lab.read(MODULES_LOAD).is_none());
    }
    assert!(!lab
        .root
        .join(format!(
            "lib/modules/{KREL}/kernel/net/netfilter/ipvs/toa.ko"
        ))
        .exists());

    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(lab.read("etc/rc.local").unwrap(), original);
    assert!(!lab.root.join(MODULE_PATH).exists());
    lab.cleanup();
}

#[test]
fn rc_local_is_created_when_missing() {
    let lab = Lab::new("rcnew");
    lab.publish(&[standard_module()]);
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    let rc = lab.read("etc/rc.local").unwrap();
    assert!(rc.starts_with("#!/bin/sh\nmodprobe toa"), "{rc}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.root.join("etc/rc.local"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "rc.local must be executable");
    let out = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(out.ok, "{}", out.text());
    assert!(
        lab.read("etc/rc.local").is_none(),
        "the rc.local it made goes"
    );
    lab.cleanup();
}

#[test]
fn newer_module_replaces_the_loaded_one() {
    let lab = Lab::new("upgrade");
    lab.publish(&[standard_module()]);
    assert!(lab.run("install_toa.sh", &[]).ok);
    lab.publish(&[KernelModule::new(KREL, "6.1.999-1", fake_ko(KREL, "SRC2"))]);
    let out = lab.run("install_toa.sh", &[]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", &format!("depmod -a {KREL}"), "modprobe toa"],
        "{}",
        out.text()
    );
    assert_eq!(
        lab.read("sys/module/toa/srcversion").unwrap().trim(),
        "SRC2"
    );
    lab.cleanup();
}

#[test]
fn trusted_proxies_go_to_modprobe_d() {
    let lab = Lab::new("proxies");
    lab.publish(&[standard_module()]);
    let args = ["--trusted-proxies", "10.0.0.0/8,2001:db8::/32"];
    let out = lab.run("install_toa.sh", &args);
    assert!(out.ok, "{}", out.text());
    let conf = lab.read("etc/modprobe.d/toa.conf").unwrap();
    assert!(
        conf.lines()
            .any(|l| l == "options toa trusted_proxies=10.0.0.0/8,2001:db8::/32"),
        "{conf}"
    );
    assert!(
        out.stderr.contains("no trusted_proxies parameter yet"),
        "{}",
        out.text()
    );
    let installed = snapshot(&lab.root);
    let again = lab.run("install_toa.sh", &args);
    assert!(again.ok && again.mutating().is_empty(), "{}", again.text());
    assert_eq!(snapshot(&lab.root), installed);

    // A new list is written and the module reloaded to apply it.
    let out = lab.run("install_toa.sh", &["--trusted-proxies=192.0.2.0/24"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        ["rmmod toa", "modprobe toa"],
        "{}",
        out.text()
    );

    let bad = lab.run(
        "install_toa.sh",
        &["--trusted-proxies", "10.0.0.0/8; rm -rf /"],
    );
    assert!(!bad.ok && bad.stderr.contains("comma-separated list of CIDRs"));

    assert!(lab.run("install_toa.sh", &["--uninstall"]).ok);
    assert!(lab.read("etc/modprobe.d/toa.conf").is_none());
    lab.cleanup();
}
