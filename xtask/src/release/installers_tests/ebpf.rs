//! The eBPF mode: its unit and settings, reruns, `--mode auto`, and its
//! refusals.

use super::*;

const BPF_UNIT_FILE: &str = "etc/systemd/system/toa-bpf.service";
const BPF_UNIT_LINK: &str = "etc/systemd/system/multi-user.target.wants/toa-bpf.service";
const BPF_ENV_FILE: &str = "etc/toa/bpf.env";
const BPF_PINS: &str = "sys/fs/bpf/toa";

#[test]
fn the_unit_is_compiled_into_install_toa_sh() {
    let text = render(SCRIPTS[0].1, "https://downloads.example.com/toa").unwrap();
    assert!(text.contains(BPF_UNIT), "the unit is inlined");
    assert!(!text.contains("@TOA_BPF_UNIT@"));
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "EnvironmentFile=/etc/toa/bpf.env",
        "ExecStart=/usr/local/sbin/toa bpf load",
        "ExecReload=/usr/local/sbin/toa bpf load",
        "Before=network-pre.target shutdown.target",
        "Wants=network-pre.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(BPF_UNIT.lines().any(|l| l == line), "unit lacks {line}");
    }
}

#[test]
fn bpf_mode_installs_unit_and_settings_reruns_change_nothing_uninstall_removes_all() {
    let lab = Lab::new("bpf");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "10.0.0.0/8"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        out.mutating(),
        [
            "systemctl daemon-reload",
            "systemctl enable --quiet toa-bpf.service",
            "toa bpf load",
        ],
        "{}",
        out.text()
    );
    assert!(has_call(&out, "toa selftest"), "{}", out.text());
    assert!(out.stdout.contains("verified sha256 of toa-x86_64"));
    assert!(out.stdout.contains("selftest: 4 passed"), "{}", out.text());
    assert_eq!(lab.read(BPF_UNIT_FILE).unwrap(), BPF_UNIT);
    assert!(lab.root.join(BPF_UNIT_LINK).is_symlink());
    let env = lab.read(BPF_ENV_FILE).unwrap();
    assert!(
        env.lines().any(|l| l == "TOA_TRUSTED_PROXIES=10.0.0.0/8"),
        "{env}"
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "10.0.0.0/8\n",
        "the loader got the unit's settings"
    );
    assert!(
        !lab.root.join(MODULE_PATH).exists(),
        "no module in the eBPF mode"
    );
    assert!(lab.read(MODULES_LOAD).is_none());
    assert!(lab.root.join(TOA_COMMAND).is_file());

    // Again, and with --mode auto, which keeps the installed mode.
    let installed = snapshot(&lab.root);
    for args in [&["--mode", "bpf"][..], &[]] {
        let again = lab.run("install_toa.sh", args);
        assert!(again.ok, "{args:?}: {}", again.text());
        assert_eq!(again.mutating(), Vec::<String>::new(), "{}", again.text());
        assert!(
            again.stdout.contains("nothing to reload"),
            "{}",
            again.text()
        );
        assert!(has_call(&again, "toa selftest"), "{}", again.text());
        assert_eq!(snapshot(&lab.root), installed, "{args:?} changed files");
    }

    // New settings: written, and loaded again in place.
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(out.mutating(), ["toa bpf load"], "{}", out.text());
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "192.0.2.0/24\n"
    );

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(
        removed.mutating(),
        [
            "systemctl disable --now toa-bpf.service",
            "systemctl daemon-reload",
            "toa bpf unload",
        ],
        "{}",
        removed.text()
    );
    assert!(!lab.root.join(BPF_PINS).exists());
    assert!(!lab.root.join("etc/toa").exists(), "its directory goes too");
    assert_eq!(
        files(&snapshot(&lab.root)),
        files(&before),
        "{}",
        removed.text()
    );
    lab.cleanup();
}

/// The unit as install_toa.sh writes it: the text of its here-document.
fn rendered_unit() -> String {
    let script = render(SCRIPTS[0].1, "https://downloads.example.com/toa").unwrap();
    let start = script
        .find("<<'TOA_UNIT'\n")
        .expect("the unit's here-document")
        + 13;
    let end = start + script[start..].find("\nTOA_UNIT\n").expect("its end");
    script[start..=end].to_string()
}

/// `systemctl reload toa-bpf` after an edit of bpf.env loads again (settings
/// and cgroup updated in place, open connections keep their client), never
/// unloads; a load refused at boot fails the unit with toa's message in the
/// journal (and on the console), and nothing skips the unit silently.
#[test]
fn the_unit_reloads_in_place_and_a_refused_load_fails_it_loudly() {
    let unit = rendered_unit();
    assert_eq!(unit, BPF_UNIT);
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .collect()
    };
    assert_eq!(values("ExecStart"), ["/usr/local/sbin/toa bpf load"]);
    assert_eq!(
        values("ExecReload"),
        values("ExecStart"),
        "a reload is a load again, in place"
    );
    assert_eq!(values("ExecStop"), ["/usr/local/sbin/toa bpf unload"]);
    assert_eq!(values("Type"), ["oneshot"], "a failed load fails the unit");
    assert!(
        unit.lines().all(|l| !l.starts_with("Condition")),
        "a condition skips the unit without an error"
    );
    assert_eq!(values("AssertFileIsExecutable"), ["/usr/local/sbin/toa"]);
    for exec in ["ExecStart", "ExecReload"] {
        for v in values(exec) {
            assert!(
                !v.starts_with(['-', '+', ':', '!']),
                "{exec}={v}: a prefix would ignore a failure or change how it runs"
            );
        }
    }
    let stderr = values("StandardError");
    assert!(
        stderr.len() == 1 && stderr[0].split('+').any(|t| t == "journal"),
        "toa's reason must reach the journal: {stderr:?}"
    );
    assert!(stderr[0].contains("console"), "{stderr:?}");
    assert!(
        unit.contains("TOA_CGROUP"),
        "the unit says which settings bpf.env holds"
    );
    // systemd's own parser, where it is installed: every key is one it knows
    // (a misspelt one is ignored with a warning, silently dropping a rule).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = crate::testing::scratch("unit");
        let path = dir.join("toa-bpf.service");
        std::fs::write(&path, &unit).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        // The toa command is not installed here: that one complaint is expected.
        let other: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("/usr/local/sbin/toa is not executable"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(other.is_empty(), "systemd-analyze verify: {said}");
    }
}

/// The eBPF mode's settings lines of bpf.env, in order.
fn bpf_env_settings(lab: &Lab) -> Vec<String> {
    lab.read(BPF_ENV_FILE)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("TOA_"))
        .map(String::from)
        .collect()
}

#[test]
fn bpf_mode_reruns_keep_ports_formats_and_capture_unless_told_otherwise() {
    let lab = Lab::new("bpf-keep");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);

    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--ports",
            "80,8000-8099",
            "--formats",
            "0x3",
            "--capture",
            "sock-ops",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_PORTS=80,8000-8099",
            "TOA_FORMATS=0x3",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=80,8000-8099 formats=0x3 capture=sock-ops\n",
        "the loader got every setting"
    );

    // New trusted proxies only: the rest stays as the first install set it.
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(out.mutating(), ["toa bpf load"], "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_PORTS=80,8000-8099",
            "TOA_FORMATS=0x3",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=80,8000-8099 formats=0x3 capture=sock-ops\n"
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/trusted_proxies")).unwrap(),
        "192.0.2.0/24\n"
    );

    // Told otherwise: --ports '' is every port again; --mode auto keeps the mode.
    let out = lab.run("install_toa.sh", &["--ports", "", "--formats", "9"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_FORMATS=9",
            "TOA_CAPTURE=sock-ops",
        ]
    );

    // A dry run shows the settings it would load and changes nothing.
    let installed = snapshot(&lab.root);
    let dry = lab.run("install_toa.sh", &["--dry-run", "--capture", "fexit"]);
    assert!(dry.ok, "{}", dry.text());
    assert!(
        dry.stdout.contains(
            "would run: env TOA_TRUSTED_PROXIES=192.0.2.0/24 TOA_FORMATS=9 TOA_CAPTURE=fexit"
        ),
        "{}",
        dry.text()
    );
    assert_eq!(snapshot(&lab.root), installed);
    lab.cleanup();
}

/// Links detached by other means (the pins stay): a rerun that changes
/// nothing must not take the pins for proof and skip the load (the
/// self-test would then fail and roll the installation back): it loads again.
#[test]
fn a_rerun_loads_again_when_the_pinned_programs_do_not_run() {
    let lab = Lab::new("bpf-detached");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(out.ok, "{}", out.text());
    std::fs::remove_file(lab.root.join(BPF_PINS).join("attached")).unwrap();

    let again = lab.run("install_toa.sh", &[]);
    assert!(again.ok, "{}", again.text());
    assert_eq!(again.mutating(), ["toa bpf load"], "{}", again.text());
    assert!(
        again
            .stdout
            .contains("toa status reports a problem: loading it again"),
        "{}",
        again.text()
    );
    assert!(lab.root.join(BPF_PINS).join("attached").is_file());
    assert!(lab.root.join(BPF_UNIT_LINK).is_symlink(), "still installed");
    lab.cleanup();
}

/// A bpf.env an operator (or an earlier install) wrote with every setting:
/// an install that changes only the trusted proxies keeps the others.
#[test]
fn new_trusted_proxies_keep_the_other_settings_of_an_earlier_bpf_env() {
    let lab = Lab::new("bpf-earlier");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(out.ok, "{}", out.text());
    lab.write(
        BPF_ENV_FILE,
        "# edited by hand\nTOA_TRUSTED_PROXIES=10.0.0.0/8\nTOA_PORTS=443\nTOA_FORMATS=0x1\n\
         TOA_CAPTURE=sock-ops\n",
    );
    let out = lab.run(
        "install_toa.sh",
        &["--mode", "bpf", "--trusted-proxies", "192.0.2.0/24"],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=192.0.2.0/24",
            "TOA_PORTS=443",
            "TOA_FORMATS=0x1",
            "TOA_CAPTURE=sock-ops",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/settings")).unwrap(),
        "ports=443 formats=0x1 capture=sock-ops\n",
        "the loader got them"
    );
    lab.cleanup();
}

#[test]
fn bpf_settings_are_checked_and_refused_for_toa_ko_before_any_change() {
    let lab = Lab::new("bpf-flags");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for (args, says) in [
        (
            &["--mode", "bpf", "--ports", "80;reboot"][..],
            "--ports takes",
        ),
        (
            &["--mode", "bpf", "--formats", "0xg"][..],
            "--formats takes",
        ),
        (&["--mode", "bpf", "--formats", ""][..], "--formats takes"),
        (
            &["--mode", "bpf", "--capture", "kprobe"][..],
            "--capture takes auto, fexit or sock-ops",
        ),
        (&["--mode", "bpf", "--capture"][..], "--capture needs"),
        (
            &["--mode", "kmod", "--ports", "80"][..],
            "--ports: settings of the eBPF mode",
        ),
        // auto picks toa.ko here (a prebuilt module matches): refused before it loads.
        (
            &["--capture", "fexit", "--formats", "3"][..],
            "--formats --capture: settings of the eBPF mode",
        ),
    ] {
        let out = lab.run("install_toa.sh", args);
        assert!(!out.ok, "{args:?}: {}", out.text());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.text());
        assert!(out.mutating().is_empty(), "{args:?}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before, "{args:?}");
    }
    let out = lab.run("compile_install_toa.sh", &["--ports", "80"]);
    assert!(!out.ok, "{}", out.text());
    assert!(
        out.stderr.contains("--ports: settings of the eBPF mode"),
        "{}",
        out.text()
    );
    lab.cleanup();
}

#[test]
fn one_mode_at_a_time() {
    let lab = Lab::new("bpf-switch");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);

    let kmod = lab.run("install_toa.sh", &["--trusted-proxies", "10.0.0.0/8"]);
    assert!(kmod.ok, "{}", kmod.text());
    assert!(lab.root.join("sys/module/toa").is_dir());

    let bpf = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert!(bpf.ok, "{}", bpf.text());
    assert!(
        bpf.stdout
            .contains("toa.ko is installed here; removing it first"),
        "{}",
        bpf.text()
    );
    let calls = bpf.mutating();
    let rmmod = calls.iter().position(|c| c == "rmmod toa");
    let load = calls.iter().position(|c| c == "toa bpf load");
    assert!(rmmod.is_some() && rmmod < load, "{}", bpf.text());
    assert!(!lab.root.join("sys/module/toa").exists());
    assert!(!lab.root.join(MODULE_PATH).exists());
    assert!(lab.read(MODULES_LOAD).is_none());
    assert!(lab.read("etc/modprobe.d/toa.conf").is_none());
    assert!(lab.root.join(BPF_PINS).is_dir());

    let back = lab.run("install_toa.sh", &["--mode", "kmod"]);
    assert!(back.ok, "{}", back.text());
    assert!(
        back.stdout
            .contains("the eBPF mode is installed here; removing it first"),
        "{}",
        back.text()
    );
    assert!(!lab.root.join(BPF_PINS).exists());
    assert!(lab.read(BPF_UNIT_FILE).is_none());
    assert!(!lab.root.join(BPF_UNIT_LINK).exists());
    assert!(lab.read(BPF_ENV_FILE).is_none());
    assert!(lab.root.join("sys/module/toa").is_dir());

    let removed = lab.run("install_toa.sh", &["--uninstall"]);
    assert!(removed.ok, "{}", removed.text());
    assert_eq!(files(&snapshot(&lab.root)), files(&before));
    lab.cleanup();
}

/// Which mode `--mode auto` installs, by the machine's state.
#[test]
fn auto_takes_the_module_when_it_can_load_else_the_ebpf_mode() {
    struct Case {
        name: &'static str,
        prebuilt: bool,
        krel: &'static str,
        files: &'static [(&'static str, &'static str)],
        env: &'static [(&'static str, &'static str)],
        /// "kmod", "bpf", or the refusal's text.
        expect: &'static str,
    }
    let cases = [
        Case {
            name: "prebuilt, loads",
            prebuilt: true,
            krel: KREL,
            files: &[],
            env: &[],
            expect: "kmod",
        },
        Case {
            name: "prebuilt, lockdown",
            prebuilt: true,
            krel: KREL,
            files: &[(
                "sys/kernel/security/lockdown",
                "none [integrity] confidentiality\n",
            )],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "prebuilt, Secure Boot",
            prebuilt: true,
            krel: KREL,
            files: &[],
            env: &[("TOA_TEST_SECURE_BOOT", "1")],
            expect: "bpf",
        },
        Case {
            name: "prebuilt, modules_disabled",
            prebuilt: true,
            krel: KREL,
            files: &[("proc/sys/kernel/modules_disabled", "1\n")],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "no prebuilt",
            prebuilt: false,
            krel: KREL,
            files: &[],
            env: &[],
            expect: "bpf",
        },
        Case {
            name: "no prebuilt, the kernel refuses the programs",
            prebuilt: false,
            krel: KREL,
            files: &[],
            env: &[("TOA_TEST_BPF_REFUSE", "1")],
            expect: "no prebuilt toa.ko for kernel 6.1.0-99-amd64",
        },
        Case {
            name: "no prebuilt, kernel 5.4",
            prebuilt: false,
            krel: "5.4.0-99-generic",
            files: &[],
            env: &[],
            expect: "no prebuilt toa.ko for kernel 5.4.0-99-generic",
        },
        Case {
            name: "prebuilt, lockdown, the kernel refuses the programs",
            prebuilt: true,
            krel: KREL,
            files: &[("sys/kernel/security/lockdown", "[integrity]\n")],
            env: &[("TOA_TEST_BPF_REFUSE", "1")],
            expect: "loads only signed modules",
        },
    ];
    for case in cases {
        let mut lab = Lab::new("auto");
        publish_bpf_toa_command(&lab);
        let module = KernelModule::new(case.krel, "1.0-1", fake_ko(case.krel, "SRC1"));
        let other = KernelModule::new("6.1.0-98-amd64", "1.0-1", fake_ko("6.1.0-98-amd64", "S"));
        lab.publish(&[if case.prebuilt { module } else { other }]);
        std::fs::create_dir_all(lab.root.join(format!("lib/modules/{}", case.krel))).unwrap();
        for (path, text) in case.files {
            lab.write(path, text);
        }
        lab.env.push(("TOA_TEST_KREL".into(), case.krel.into()));
        for (k, v) in case.env {
            lab.env.push((k.to_string(), v.to_string()));
        }
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &[]);
        let name = case.name;
        match case.expect {
            "kmod" => {
                assert!(out.ok, "{name}: {}", out.text());
                assert!(has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert!(!has_call(&out, "toa bpf load"), "{name}: {}", out.text());
            }
            "bpf" => {
                assert!(out.ok, "{name}: {}", out.text());
                assert!(has_call(&out, "toa bpf load"), "{name}: {}", out.text());
                assert!(!has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert!(lab.root.join(BPF_PINS).is_dir(), "{name}");
            }
            refusal => {
                assert!(!out.ok, "{name}: {}", out.text());
                assert!(out.stderr.contains(refusal), "{name}: {}", out.text());
                assert!(!has_call(&out, "modprobe toa"), "{name}: {}", out.text());
                assert_eq!(
                    files(&snapshot(&lab.root)),
                    files(&before),
                    "{name}: {}",
                    out.text()
                );
            }
        }
        lab.cleanup();
    }
}

#[test]
fn bpf_mode_is_rolled_back_when_the_kernel_refuses_or_the_selftest_fails() {
    for (env, message) in [
        (
            "TOA_TEST_BPF_REFUSE",
            "toa bpf load failed: toa: error: the kernel refused the sock_ops program",
        ),
        (
            "TOA_TEST_SELFTEST_FAIL",
            "toa selftest failed: FAIL v4-toa-on-inet",
        ),
    ] {
        let mut lab = Lab::new("bpf-rollback");
        publish_bpf_toa_command(&lab);
        lab.publish(&[standard_module()]);
        lab.env.push((env.into(), "1".into()));
        let before = snapshot(&lab.root);
        let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
        assert!(!out.ok, "{env}: {}", out.text());
        assert!(out.stderr.contains(message), "{env}: {}", out.text());
        assert!(!lab.root.join(BPF_PINS).exists(), "{env}");
        assert_eq!(
            files(&snapshot(&lab.root)),
            files(&before),
            "{env}: {}",
            out.text()
        );
        lab.cleanup();
    }
}

#[test]
fn bpf_mode_refuses_an_old_kernel_and_a_machine_without_systemd() {
    let mut lab = Lab::new("bpf-refused");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    lab.env
        .push(("TOA_TEST_KREL".into(), "4.19.0-27-amd64".into()));
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(
        &lab,
        &out,
        &before,
        "the eBPF mode needs kernel 5.10 or newer, and this machine runs 4.19.0-27-amd64",
    );
    lab.env.clear();
    std::fs::remove_dir_all(lab.root.join("run/systemd")).unwrap();
    let before = snapshot(&lab.root);
    let out = lab.run("install_toa.sh", &["--mode", "bpf"]);
    assert_refused(&lab, &out, &before, "the eBPF mode needs systemd");
    lab.cleanup();
}

#[test]
fn bpf_dry_run_changes_nothing() {
    let lab = Lab::new("bpf-dry");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--dry-run",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert!(out.mutating().is_empty(), "{}", out.text());
    assert_eq!(snapshot(&lab.root), before);
    for text in [
        "would write",
        "/etc/systemd/system/toa-bpf.service",
        "would run: systemctl enable --quiet toa-bpf.service",
        "would run: env TOA_TRUSTED_PROXIES=10.0.0.0/8 /usr/local/sbin/toa bpf load",
    ] {
        assert!(out.stdout.contains(text), "{text}: {}", out.text());
    }
    lab.cleanup();
}

#[test]
fn mode_arguments_are_checked() {
    let lab = Lab::new("mode-args");
    for (script, args, message) in [
        (
            "install_toa.sh",
            &["--mode", "ebpf"][..],
            "--mode takes auto, kmod or bpf, not 'ebpf'",
        ),
        (
            "install_toa.sh",
            &["--mode"][..],
            "--mode needs one of auto, kmod, bpf",
        ),
        (
            "install_toa.sh",
            &["--mode=bpf", "--uninstall"][..],
            "it takes no --mode",
        ),
        (
            "install_toa.sh",
            &["--mode", "bpf", "--compile"][..],
            "--compile builds toa.ko",
        ),
        (
            "compile_install_toa.sh",
            &["--mode", "bpf"][..],
            "install_toa.sh | sudo bash -s -- --mode bpf",
        ),
    ] {
        let out = lab.run(script, args);
        assert!(!out.ok, "{script} {args:?}: {}", out.text());
        assert!(
            out.stderr.contains(message),
            "{script} {args:?}: {}",
            out.text()
        );
        assert!(out.mutating().is_empty(), "{}", out.text());
    }
    lab.cleanup();
}

/// --cgroup: written to bpf.env as TOA_CGROUP, passed to `toa bpf load`,
/// kept by a rerun that does not give it, `/` for every process again;
/// refused with toa.ko and when it holds what the unit's environment file
/// would read differently.
#[test]
fn bpf_mode_cgroup_is_written_kept_and_checked() {
    let lab = Lab::new("bpf-cgroup");
    publish_bpf_toa_command(&lab);
    lab.publish(&[standard_module()]);
    let before = snapshot(&lab.root);
    for (args, says) in [
        (
            &["--mode", "bpf", "--cgroup", "/system.slice/a b.service"][..],
            "--cgroup takes a cgroup v2 path",
        ),
        (
            &["--mode", "bpf", "--cgroup", "/system.slice/../x"][..],
            "no '..'",
        ),
        (&["--mode", "bpf", "--cgroup"][..], "--cgroup needs"),
        (
            &["--mode", "kmod", "--cgroup", "/system.slice"][..],
            "--cgroup: settings of the eBPF mode",
        ),
    ] {
        let out = lab.run("install_toa.sh", args);
        assert!(!out.ok, "{args:?}: {}", out.text());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.text());
        assert!(out.mutating().is_empty(), "{args:?}: {}", out.text());
        assert_eq!(snapshot(&lab.root), before, "{args:?}");
    }

    let out = lab.run(
        "install_toa.sh",
        &[
            "--mode",
            "bpf",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--cgroup",
            "/system.slice/nginx.service",
        ],
    );
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_CGROUP=/system.slice/nginx.service",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(),
        "/system.slice/nginx.service\n",
        "the loader got it"
    );
    assert!(
        out.stderr
            .contains("/system.slice/nginx.service is a service's own cgroup"),
        "{}",
        out.text()
    );

    // Another setting only: the cgroup stays.
    let out = lab.run("install_toa.sh", &["--ports", "443"]);
    assert!(out.ok, "{}", out.text());
    assert_eq!(
        bpf_env_settings(&lab),
        [
            "TOA_TRUSTED_PROXIES=10.0.0.0/8",
            "TOA_PORTS=443",
            "TOA_CGROUP=/system.slice/nginx.service",
        ]
    );
    assert_eq!(
        lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(),
        "/system.slice/nginx.service\n"
    );

    // Told otherwise: every process, said explicitly (a load without it
    // would keep the cgroup the programs are attached to).
    for root in ["/", ""] {
        let out = lab.run("install_toa.sh", &["--cgroup", root]);
        assert!(out.ok, "{root:?}: {}", out.text());
        assert_eq!(
            bpf_env_settings(&lab),
            [
                "TOA_TRUSTED_PROXIES=10.0.0.0/8",
                "TOA_PORTS=443",
                "TOA_CGROUP=/",
            ],
            "{root:?}"
        );
        assert_eq!(lab.read(&format!("{BPF_PINS}/cgroup")).unwrap(), "/\n");
        assert!(!out.stderr.contains("own cgroup"), "{}", out.text());
    }
    lab.cleanup();
}
