//! The eBPF mode end to end through the `toa` command, scoped to a cgroup
//! this test creates: `bpf load --cgroup`, `status`, `selftest` (a real TOA
//! connection on a TUN device), a load again with the cgroup from the
//! environment (as the unit passes bpf.env), a missing cgroup, `bpf unload`.
//! Every load names the test's cgroup: a load without one would attach at
//! the cgroup v2 root should the record of the load be lost (the library's
//! tests cover that case where attaching at the root is refused). It runs in a private mount namespace with a bpffs
//! and a /run of its own, so no pin or lock of this machine is touched, and
//! nothing is ever attached at the cgroup v2 root. Root only; skipped
//! otherwise.

use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `script` with sh in a private mount namespace; (success, output).
fn in_mount_namespace(script: &str) -> (bool, String) {
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("TOA", env!("CARGO_BIN_EXE_toa"))
        .output()
        .expect("running unshare (util-linux)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_scoped_load_is_named_by_status_and_proven_by_selftest() {
    if !root() {
        eprintln!("skipped: needs root for a mount namespace and BPF");
        return;
    }
    let cgroup = format!("toa-cli-test-{}", std::process::id());
    let script = format!(
        r#"
set -u
root=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
[ -n "$root" ] || {{ echo "SKIP: no cgroup2 hierarchy is mounted"; exit 0; }}
echo "ROOT=$root"
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /run
cg=$root/{cgroup}
mkdir "$cg"
trap '"$TOA" bpf unload >/dev/null 2>&1; rmdir "$cg"' EXIT
step() {{ echo "== STEP $*"; "$@" 2>&1; echo "== exit $?"; }}
[ -d "$cg" ] || exit 1
step "$TOA" bpf load --cgroup /{cgroup} --capture sock-ops
step "$TOA" status --sample 0.1
step "$TOA" selftest
step env TOA_CGROUP=/{cgroup} "$TOA" bpf load --capture sock-ops
step "$TOA" bpf load --cgroup /{cgroup}-missing
step "$TOA" bpf unload
"#
    );
    let (ok, text) = in_mount_namespace(&script);
    eprintln!("{text}");
    assert!(ok, "{text}");
    if text.starts_with("SKIP") {
        eprintln!("{text}");
        return;
    }
    let steps: Vec<&str> = text.split("== STEP ").skip(1).collect();
    assert_eq!(steps.len(), 6, "{text}");
    let exit = |s: &str| {
        s.lines()
            .rev()
            .find_map(|l| l.strip_prefix("== exit "))
            .map(String::from)
    };
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("ROOT="))
        .expect("the cgroup2 root");
    let dir = format!("{root}/{cgroup}");

    assert_eq!(exit(steps[0]).as_deref(), Some("0"), "load: {}", steps[0]);
    assert!(
        steps[0].contains(&format!("cgroup          = {dir} (scoped")),
        "load names the cgroup: {}",
        steps[0]
    );
    assert!(
        steps[1].contains(&format!("cgroup          = {dir} (scoped")),
        "{}",
        steps[1]
    );
    assert!(
        steps[1].contains("this binary's"),
        "status shows the object: {}",
        steps[1]
    );
    assert!(steps[1].contains("is attached at"), "{}", steps[1]);
    assert!(
        steps[1].contains(&format!("programs attached at the cgroup {dir} only")),
        "{}",
        steps[1]
    );

    assert_eq!(
        exit(steps[2]).as_deref(),
        Some("0"),
        "selftest: {}",
        steps[2]
    );
    assert!(steps[2].contains(&format!("joined {dir}")), "{}", steps[2]);
    assert!(steps[2].contains("PASS"), "{}", steps[2]);

    assert_eq!(exit(steps[3]).as_deref(), Some("0"), "{}", steps[3]);
    assert!(steps[3].contains("updated in place"), "{}", steps[3]);
    assert!(steps[3].contains(&format!("{dir} (scoped")), "{}", steps[3]);

    assert_eq!(exit(steps[4]).as_deref(), Some("1"), "{}", steps[4]);
    assert!(
        steps[4].contains(&format!("there is no cgroup /{cgroup}-missing")),
        "{}",
        steps[4]
    );
    assert!(!steps[4].contains("panicked"), "{}", steps[4]);

    assert_eq!(exit(steps[5]).as_deref(), Some("0"), "{}", steps[5]);
}
