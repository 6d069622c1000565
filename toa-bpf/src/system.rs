//! What the machine must offer before anything is loaded: root, no toa.ko,
//! a bpffs to pin into and the cgroup v2 root to attach at.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const DEFAULT_CGROUP2: &str = "/sys/fs/cgroup";

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the eBPF mode needs root (CAP_BPF, CAP_NET_ADMIN and mounting bpffs)");
    }
    Ok(())
}

/// Two rewriters on one socket would fight: one mode at a time.
pub fn require_no_module() -> Result<()> {
    if Path::new("/sys/module/toa").exists() {
        bail!("toa.ko is loaded: unload it (rmmod toa) before using the eBPF mode");
    }
    Ok(())
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

fn mount(source: &str, target: &Path, fstype: &str) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let t = CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c(source).as_ptr(),
            t.as_ptr(),
            c(fstype).as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("mounting {fstype} at {}: {e}", target.display());
    }
    Ok(())
}

/// Makes sure /sys/fs/bpf is a bpffs (pins live there).
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new(BPFFS);
    if fs_magic(path) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    mount("bpf", path, "bpf").context("the BPF filesystem is not mounted and could not be")
}

/// The root of the cgroup v2 hierarchy: programs attached there see every
/// socket. Mounted at /sys/fs/cgroup when the system has none.
pub fn cgroup2_root() -> Result<PathBuf> {
    if let Some(p) = find_cgroup2(&std::fs::read_to_string("/proc/self/mountinfo")?) {
        return Ok(p);
    }
    let fallback = Path::new(DEFAULT_CGROUP2);
    mount("cgroup2", fallback, "cgroup2").context(
        "no cgroup v2 hierarchy is mounted and none could be mounted at /sys/fs/cgroup \
         (the eBPF mode needs cgroup v2; on a cgroup v1 system use toa.ko)",
    )?;
    Ok(fallback.to_path_buf())
}

/// The mount point of a cgroup2 mount of the hierarchy's root, from mountinfo.
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next()?;
        let mount_point = fields.get(4)?;
        (fstype == "cgroup2" && fields.get(3) == Some(&"/")).then(|| PathBuf::from(mount_point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_find_cgroup2() {
        let info = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 24 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
        assert_eq!(find_cgroup2(info), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_cgroup2("24 30 0:22 / /sys rw - sysfs sysfs rw"), None);
        let hybrid = "40 24 0:33 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(find_cgroup2(hybrid), None, "a sub-tree is not the root");
    }
}
