//! The eBPF mode end to end through the `toa` command, scoped to a cgroup
//! this test creates: `bpf load --cgroup`, `status`, `selftest` (a real TOA
//! connection on a TUN device), a load again with the cgroup from the
//! environment (as the unit passes bpf.env), a missing cgroup, `bpf unload`.
//!
//! Nothing it runs can reach this machine's cgroup v2 root, whatever the
//! binary does: the commands run in a cgroup namespace whose root is a
//! cgroup the test made (the "cgroup v2 root" toa sees, with cgroup2 mounted
//! afresh there, is that cgroup), and in a private mount namespace with a
//! bpffs and a /run of their own, so no pin or lock of the machine is
//! touched either. Root only; skipped otherwise.

use std::path::PathBuf;
use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The mount point of this machine's cgroup v2 hierarchy, if any.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        (right.starts_with("cgroup2 ") && f.get(3) == Some(&"/")).then(|| PathBuf::from(f[4]))
    })
}

/// Runs `script` with sh in cgroup `fence` made the root of a new cgroup
/// namespace, in a private mount namespace; (success, output).
fn fenced(fence: &std::path::Path, script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .args([
            "-c",
            r#"echo $$ >"$FENCE/cgroup.procs" && exec unshare --cgroup --mount --propagation private -- sh -c "$SCRIPT""#,
        ])
        .env("FENCE", fence)
        .env("SCRIPT", script)
        .env("TOA", env!("CARGO_BIN_EXE_toa"))
        .output()
        .expect("running sh and unshare (util-linux)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_scoped_load_is_named_by_status_and_proven_by_selftest() {
    if !root() {
        eprintln!("skipped: needs root for namespaces and BPF");
        return;
    }
    let Some(host_root) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup v2 hierarchy is mounted");
        return;
    };
    let fence = host_root.join(format!("toa-cli-test-{}", std::process::id()));
    std::fs::create_dir(&fence).unwrap();
    let cgroup = "scoped";
    let script = format!(
        r#"
set -u
root=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
# cgroup2 mounted again in this cgroup namespace: its root is the fence
# (the machine's mount, hidden here, shows the fence's parent).
umount -l "$root"
mount -t cgroup2 none "$root"
grep -qx '0::/' /proc/self/cgroup || {{ echo "not at the namespace's root"; exit 1; }}
echo "ROOT=$root"
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /run
cg=$root/{cgroup}
mkdir "$cg"
trap '"$TOA" bpf unload >/dev/null 2>&1; rmdir "$cg"' EXIT
step() {{ echo "== STEP $*"; "$@" 2>&1; echo "== exit $?"; }}
step "$TOA" bpf load --cgroup /{cgroup} --capture sock-ops
step "$TOA" status --sample 0.1
step "$TOA" selftest
step env TOA_CGROUP=/{cgroup} "$TOA" bpf load --capture sock-ops
step "$TOA" bpf load --cgroup /{cgroup}-missing
step "$TOA" bpf unload
"#
    );
    let (ok, text) = fenced(&fence, &script);
    let removed = std::fs::remove_dir(&fence);
    eprintln!("{text}");
    assert!(ok, "{text}");
    removed.unwrap();
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
