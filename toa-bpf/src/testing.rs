//! Test support: a private mount namespace for tests that mount things, and
//! a place of a test's own (a bpffs and a cgroup it created) to load into.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::loader::Place;

const IN_NS: &str = "TOA_TEST_IN_MOUNT_NS";

/// Whether this process may do what the host tests do: root.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `test` (an ignored test of this binary) in a private mount
/// namespace (`unshare --mount --propagation private`), where it may mount
/// what it likes: nothing it mounts or unmounts reaches this machine's mounts.
/// Skipped, with a line saying so, without root.
pub fn in_private_mount_namespace(test: &str) {
    in_private_namespaces(test, &[]);
}

/// [`in_private_mount_namespace`] and a private network namespace too
/// (empty: only a loopback device, down), for tests that make devices.
pub fn in_private_mount_and_network_namespace(test: &str) {
    in_private_namespaces(test, &["--net"]);
}

fn in_private_namespaces(test: &str, more: &[&str]) {
    if !root() {
        eprintln!("skipped {test}: needs root for a mount namespace");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(more)
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            test,
        ])
        .env(IN_NS, "1")
        .output()
        .expect("running unshare (util-linux)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{test} in a mount namespace:\n{text}");
    assert!(text.contains("1 passed"), "{test} did not run:\n{text}");
}

/// Refuses to run outside the namespace [`in_private_mount_namespace`] makes.
pub fn require_private_mount_namespace() {
    assert_eq!(
        std::env::var(IN_NS).as_deref(),
        Ok("1"),
        "mounts things: run only in a private mount namespace"
    );
}

pub fn sh(script: &str) {
    let st = Command::new("sh").args(["-ec", script]).status().unwrap();
    assert!(st.success(), "{script}");
}

/// A bpffs and a cgroup of the test's own; the cgroup is removed on drop
/// (after whatever is attached to it is unloaded). Only for a test in a
/// private mount namespace.
pub struct TestPlace {
    pub place: Place,
    pub cgroup: PathBuf,
    base: PathBuf,
}

impl TestPlace {
    pub fn new(name: &str) -> TestPlace {
        require_private_mount_namespace();
        let base = std::env::temp_dir().join(format!("toa-bpf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let bpffs = base.join("bpffs");
        std::fs::create_dir_all(&bpffs).unwrap();
        sh(&format!("mount -t bpf bpf '{}'", bpffs.display()));
        let root = crate::system::mounted_cgroup2()
            .unwrap()
            .expect("a cgroup2 hierarchy to make a test cgroup in");
        let cgroup = root.join(format!("toa-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&cgroup).unwrap();
        TestPlace {
            place: Place {
                pin_dir: bpffs.join("toa"),
                cgroup: Some(cgroup.clone()),
                lock: base.join("bpf.lock"),
            },
            cgroup,
            base,
        }
    }

    pub fn pin(&self, name: &str) -> PathBuf {
        self.place.pin_dir.join(name)
    }
}

impl Drop for TestPlace {
    fn drop(&mut self) {
        let _ = crate::loader::unload_at(&self.place);
        let _ = std::fs::remove_dir(&self.cgroup);
        let bpffs = self.base.join("bpffs");
        let _ = Command::new("umount").arg(&bpffs).status();
        let _ = std::fs::remove_dir_all(Path::new(&self.base));
    }
}
