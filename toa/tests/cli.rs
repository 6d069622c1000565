//! The `toa` binary as an operator meets it: argument errors, a machine
//! without the module, an unprivileged self-test, and `status` on a copy of
//! a machine's /proc, /sys and /lib/modules (`--root`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_toa");

fn toa(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("running toa")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh directory standing for a machine's root.
fn machine(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toa-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put(root: &Path, path: &str, content: &[u8]) {
    let file = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, content).unwrap();
}

const STATS: &str = "                          CPU0 CPU1
syn_recv_sock_toa        : 3 4
syn_recv_sock_no_toa     : 0 10
getname_toa_ok           : 6 8
getname_toa_mismatch     : 0 0
kretprobe_missed         : KRETPROBE_MISSED
records_live             : 0
";

/// A Debian 12 machine with toa.ko loaded and installed for its kernel.
fn with_module(name: &str, trusted: &str, missed: u32) -> PathBuf {
    let root = machine(name);
    put(&root, "/proc/sys/kernel/osrelease", b"6.1.0-50-amd64\n");
    put(
        &root,
        "/proc/net/sockstat",
        b"TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1\n",
    );
    let stats = STATS.replace("KRETPROBE_MISSED", &missed.to_string());
    put(&root, "/proc/net/toa_stats", stats.as_bytes());
    put(&root, "/sys/module/toa/initstate", b"live\n");
    put(&root, "/sys/module/toa/version", b"0.1.0\n");
    put(&root, "/sys/module/toa/srcversion", b"ABC123\n");
    put(&root, "/sys/module/toa/taint", b"OE\n");
    put(
        &root,
        "/sys/module/toa/parameters/trusted_proxies",
        format!("{trusted}\n").as_bytes(),
    );
    put(&root, "/sys/module/toa/parameters/ports", b"\n");
    put(&root, "/sys/module/toa/parameters/formats", b"15\n");
    put(
        &root,
        "/sys/module/toa/parameters/max_records",
        b"1048576\n",
    );
    put(
        &root,
        "/lib/modules/6.1.0-50-amd64/updates/toa.ko",
        b"\x7fELF\0vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions \0srcversion=ABC123\0",
    );
    root
}

fn root_arg(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let out = toa(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Usage"), "{}", text(&out));
    let out = toa(&["stats", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("table, json, prometheus"),
        "{}",
        text(&out)
    );
    let out = toa(&["stats", "--watch", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("positive number of seconds"),
        "{}",
        text(&out)
    );
    let out = toa(&["selftest", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_teaches_each_command() {
    let out = toa(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for word in ["status", "stats", "selftest", "Exit status"] {
        assert!(text(&out).contains(word), "{word}: {}", text(&out));
    }
    let out = toa(&["stats", "--help"]);
    assert!(text(&out).contains("textfile collector"), "{}", text(&out));
}

#[test]
fn a_machine_without_the_module_gets_a_clear_message() {
    let root = machine("bare");
    put(&root, "/proc/sys/kernel/osrelease", b"6.1.0-50-amd64\n");
    let out = toa(&["stats", "--root", &root_arg(&root)]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("/proc/net/toa_stats does not exist: toa.ko is not loaded"),
        "{said}"
    );
    assert!(
        !said.contains("panicked") && !said.contains("backtrace"),
        "{said}"
    );
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no toa mode is active"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn status_reports_the_module_its_settings_and_health() {
    let root = with_module("healthy", "10.0.0.0/8", 0);
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("toa.ko 0.1.0"), "{said}");
    assert!(said.contains("trusted_proxies = 10.0.0.0/8"), "{said}");
    assert!(said.contains("syn_recv_sock_toa"), "{said}");
    assert!(said.contains("status:  healthy"), "{said}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn status_warns_on_empty_trust_and_fails_on_missed_probes() {
    let root = with_module("open", "", 0);
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    assert_eq!(out.status.code(), Some(0), "a warning alone is healthy");
    assert!(
        text(&out).contains("WARN trusted_proxies is empty"),
        "{}",
        text(&out)
    );
    let strict = toa(&[
        "status",
        "--strict",
        "--root",
        &root_arg(&root),
        "--sample",
        "0.01",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    std::fs::remove_dir_all(root).unwrap();

    let root = with_module("missed", "10.0.0.0/8", 3);
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FAIL kretprobe_missed is 3"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// toa_stats as this release's module prints it, pinned, with one listener
/// it could not arm whose process (pid 812) runs.
const PINNED_STATS: &str = "                          CPU0 CPU1
syn_recv_sock_toa        : 3 4
getname_toa_ok           : 6 8
listen_foreign_table     : 1 0
getname_table_replaced   : 0 0
listen_probe_missed      : 0
kretprobe_missed         : 0
listen_armed_at_load     : 3
pinned                   : 1
records_live             : 0
";

#[test]
fn status_shows_a_pinned_module_and_the_listeners_it_could_not_arm() {
    let root = with_module("pinned", "10.0.0.0/8", 0);
    put(&root, "/proc/net/toa_stats", PINNED_STATS.as_bytes());
    put(
        &root,
        "/proc/net/toa_listeners",
        b"armed_at_load: 3\nunarmed: 1\npid=812 comm=nginx family=ipv4 port=80 reason=table replaced by another module\n",
    );
    std::fs::create_dir_all(root.join("proc/812")).unwrap();
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning alone is healthy: {said}"
    );
    assert!(
        said.contains("pinned:  yes (rmmod refused until reboot: a socket took kTLS/a TCP ULP"),
        "{said}"
    );
    assert!(said.contains("armed at load        3"), "{said}");
    assert!(
        said.contains("pid 812 nginx ipv4 port 80: table replaced by another module"),
        "{said}"
    );
    assert!(said.contains("WARN restart nginx (pid 812)? no:"), "{said}");
    assert!(
        said.contains("ok   toa.ko is pinned until the next reboot"),
        "{said}"
    );
    assert!(!said.contains("listen_foreign_table is"), "{said}");

    // Not pinned: said as plainly.
    put(
        &root,
        "/proc/net/toa_stats",
        PINNED_STATS
            .replace(
                "pinned                   : 1",
                "pinned                   : 0",
            )
            .as_bytes(),
    );
    let out = toa(&["status", "--root", &root_arg(&root), "--sample", "0.01"]);
    assert!(text(&out).contains("pinned:  no\n"), "{}", text(&out));

    // The new rows export.
    let out = toa(&[
        "stats",
        "--root",
        &root_arg(&root),
        "--format",
        "prometheus",
    ]);
    let prom = String::from_utf8_lossy(&out.stdout);
    assert!(prom.contains("toa_pinned 0\n"), "{prom}");
    assert!(prom.contains("toa_listen_armed_at_load 3\n"), "{prom}");
    assert!(prom.contains("toa_listen_probe_missed_total 0\n"), "{prom}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn stats_prints_totals_in_every_format() {
    let root = with_module("stats", "", 0);
    let r = root_arg(&root);
    let out = toa(&["stats", "--root", &r, "--interval", "0"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("syn_recv_sock_toa"));
    let out = toa(&[
        "stats",
        "--root",
        &r,
        "--format",
        "json",
        "--interval",
        "0.01",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["counters"][0]["total"], 7);
    assert_eq!(doc["counters"][0]["per_second"], 0.0);
    let out = toa(&["stats", "--root", &r, "--format", "prometheus"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("toa_syn_recv_sock_toa_total 7\n"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn selftest_refuses_a_copy_of_a_machine() {
    let root = machine("copy");
    let out = toa(&["selftest", "--root", &root_arg(&root)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot run against a copy"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_unprivileged_selftest_says_it_needs_root() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.arg("selftest");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root, drop to nobody for this run.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("running toa selftest");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("toa selftest needs root"), "{said}");
    assert!(
        !said.contains("FAIL") && !said.contains("PASS"),
        "no check ran: {said}"
    );
}

/// Against this machine's kernel without toa.ko: the TOA checks fail and
/// say why, the plain ones pass, and nothing is left outside the namespace.
#[test]
fn selftest_without_the_module_fails_naming_the_checks() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/net/tun").exists() || Path::new("/sys/module/toa").exists() {
        eprintln!("skipped: needs root, /dev/net/tun and a kernel without toa.ko");
        return;
    }
    let out = toa(&["selftest", "--step-timeout", "2"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for check in ["v4-toa-on-inet", "v6-toa-on-inet6", "v4-toa-on-dual-stack"] {
        assert!(said.contains(&format!("FAIL {check}: ")), "{check}: {said}");
    }
    assert!(said.contains("nothing rewrote it"), "{said}");
    assert!(
        said.contains("PASS no-toa-v4: ") && said.contains("PASS no-toa-v6: "),
        "{said}"
    );
    let links = std::fs::read_dir("/sys/class/net").unwrap();
    assert!(
        !links.flatten().any(|l| l.file_name() == "toa-selftest"),
        "the TUN device stayed behind in this namespace"
    );
}

/// Runs toa as nobody (when the tests run as root) with extra environment.
fn unprivileged(args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().copied());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    cmd.output().expect("running toa")
}

#[test]
fn bpf_settings_are_checked_before_anything_is_loaded() {
    for (args, said) in [
        (&["bpf", "load", "--formats", "0x10"][..], "outside 0xf"),
        (&["bpf", "load", "--formats", "all"][..], "not a number"),
        (
            &["bpf", "load", "--trusted-proxies", "10.0.0.0/33"][..],
            "prefix length",
        ),
        (&["bpf", "load", "--ports", "90-80"][..], "backwards"),
        (
            &["bpf", "load", "--cgroup", "system.slice/../x"][..],
            "without '.' or '..'",
        ),
        (&["bpf", "reload"][..], "unrecognized subcommand"),
    ] {
        let out = unprivileged(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(said), "{args:?}: {}", text(&out));
    }
    // The environment a systemd unit passes is checked the same way.
    let out = unprivileged(&["bpf", "load"], &[("TOA_PORTS", "0")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("1..=65535"), "{}", text(&out));
}

#[test]
fn bpf_load_and_unload_need_root() {
    for args in [&["bpf", "load"][..], &["bpf", "unload"][..]] {
        let out = unprivileged(args, &[("TOA_TRUSTED_PROXIES", "10.0.0.0/8")]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("the eBPF mode needs root"),
            "{args:?}: {said}"
        );
        assert!(!said.contains("panicked"), "{said}");
    }
}

#[test]
fn bpf_help_states_the_limits() {
    let out = toa(&["bpf", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    for word in [
        "cgroup v2 root",
        "/sys/fs/bpf/toa",
        "AF_INET listener",
        "Fast Open",
    ] {
        assert!(text(&out).contains(word), "{word}: {}", text(&out));
    }
    let out = toa(&["bpf", "load", "--help"]);
    for word in [
        "TOA_TRUSTED_PROXIES",
        "TOA_FORMATS",
        "TOA_PORTS",
        "TOA_CGROUP",
        "--cgroup",
        "replaced in place",
        "toa.ko is loaded",
    ] {
        assert!(text(&out).contains(word), "{word}: {}", text(&out));
    }
}
