//! Runs the real simulator against the host's kernel (no toa.ko), inside a
//! fresh network namespace so the host's own interfaces are never touched.
//! This proves handshake, data and close work against a real Linux TCP
//! stack, and that module mode really fails when no module rewrites anything.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_toa-lab");

const CONNECTION_SCENARIOS: &[&str] = &[
    "v4-254-8",
    "v6-254-20",
    "v6-253-20",
    "v4-on-v6-listener",
    "v6-on-v4-listener",
    "tencent-200-8",
    "no-toa-v4",
    "no-toa-v6",
    "no-toa-after-toa",
    "syn-cookies",
    "getpeername-storm",
    "malformed-options",
];

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (TUN device, network namespace)".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Some(format!("/dev/net/tun is unavailable: {e}"));
    }
    None
}

/// `toa-lab <args>` in a new, empty network namespace (unshare -n).
fn run_in_netns(args: &[&str]) -> Output {
    let out = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(BIN)
        .args(args)
        .output()
        .expect("running unshare (util-linux) to get a fresh network namespace");
    eprintln!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn result_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("TOA-LAB RESULT "))
        .map(str::to_string)
        .collect()
}

fn result_of<'a>(lines: &'a [String], scenario: &str) -> &'a str {
    let prefix = format!("TOA-LAB RESULT {scenario} ");
    let found: Vec<&String> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one result line for {scenario}: {lines:#?}"
    );
    &found[0][prefix.len()..]
}

#[test]
fn kernel_mode_passes_every_scenario_in_a_fresh_netns() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED kernel_mode_passes_every_scenario_in_a_fresh_netns: {why}");
        return;
    }
    let out = run_in_netns(&["scenarios", "--expect", "kernel"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = result_lines(&out);
    for scenario in CONNECTION_SCENARIOS {
        let r = result_of(&lines, scenario);
        assert!(r.starts_with("PASS "), "{scenario}: {r}");
    }
    // Without the module every connection shows the proxy.
    assert!(result_of(&lines, "v4-254-8").contains("AF_INET 10.0.0.2:"));
    assert!(result_of(&lines, "v6-254-20").contains("AF_INET6 [fd00::2]:"));
    assert!(result_of(&lines, "v4-on-v6-listener").contains("AF_INET6 [::ffff:10.0.0.2]:"));
    for module_only in [
        "trusted-proxies",
        "ports",
        "kernel-socket",
        "stats",
        "reload",
        "trusted-proxies-insmod",
        "relisten-accepted",
        "listen-before-load",
        "listen-connect-race",
        "ktls",
    ] {
        assert!(
            stdout.contains(&format!("TOA-LAB SKIP {module_only} ")),
            "{stdout}"
        );
    }
    // The cookie path really ran: the kernel counted the cookies it checked.
    let cookies = result_of(&lines, "syn-cookies");
    assert!(cookies.contains("3 cookies sent, 3 accepted"), "{cookies}");
    // Every malformed-option connection is served by a stock kernel.
    let fuzz = result_of(&lines, "malformed-options");
    assert!(fuzz.contains("connections=200 served=200"), "{fuzz}");
    assert_eq!(lines.len(), CONNECTION_SCENARIOS.len());
    assert_eq!(stdout.lines().last(), Some("TOA-LAB DONE pass=12 fail=0"));
    assert!(out.status.success(), "exit status {:?}", out.status);
}

/// The lab must not pass vacuously: expecting the module where none is
/// loaded fails every TOA scenario (with expected-vs-seen), still passes the
/// no-TOA ones, and the connection held for the reload check closes cleanly.
#[test]
fn module_mode_without_module_fails_toa_scenarios() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED module_mode_without_module_fails_toa_scenarios: {why}");
        return;
    }
    let out = run_in_netns(&[
        "scenarios",
        "--expect",
        "module",
        "--module",
        "/nonexistent/toa.ko",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = result_lines(&out);
    for scenario in [
        "v4-254-8",
        "v6-253-20",
        "v6-on-v4-listener",
        "tencent-200-8",
    ] {
        let r = result_of(&lines, scenario);
        assert!(r.starts_with("FAIL expected "), "{scenario}: {r}");
    }
    assert!(
        result_of(&lines, "v6-on-v4-listener")
            .contains("expected accept=getpeername=[AF_INET6 [2001:db8::9]:40004 len=28]"),
        "{lines:#?}"
    );
    for scenario in ["no-toa-v4", "no-toa-v6"] {
        assert!(
            result_of(&lines, scenario).starts_with("PASS "),
            "{lines:#?}"
        );
    }
    assert!(result_of(&lines, "no-toa-after-toa").starts_with("FAIL round 1, TOA connection"));
    assert!(result_of(&lines, "stats").contains("/proc/net/toa_stats"));
    for scenario in [
        "syn-cookies",
        "trusted-proxies",
        "ports",
        "getpeername-storm",
        "kernel-socket",
        "malformed-options",
        "trusted-proxies-insmod",
        "relisten-accepted",
        "listen-before-load",
        "listen-connect-race",
        "rmmod-behind-socket-lock",
        "accept-waiting-at-load",
        "param-write-during-rmmod",
        "chained-destructor",
        "rmmod-during-handshake",
        "getpeername-ia32",
    ] {
        assert!(
            result_of(&lines, scenario).starts_with("FAIL "),
            "{lines:#?}"
        );
    }
    // Left out of a run without --only: it would pin the module.
    assert!(stdout.contains("TOA-LAB SKIP ktls "), "{stdout}");
    let reload = result_of(&lines, "reload");
    assert!(
        reload.starts_with("FAIL kept connection before rmmod"),
        "{reload}"
    );
    assert!(
        !reload.contains("closing"),
        "held connection must close cleanly: {reload}"
    );
    assert_eq!(stdout.lines().last(), Some("TOA-LAB DONE pass=2 fail=25"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn craft_prints_option_bytes() {
    let out = Command::new(BIN)
        .args(["craft", "--kind", "254", "--client", "198.51.100.7:40001"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fe 08 9c 41 c6 33 64 07\n"
    );
}

#[test]
fn usage_error_exits_2() {
    let out = Command::new(BIN).args(["scenarios"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--expect"));
}
