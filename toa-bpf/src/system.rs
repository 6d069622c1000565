//! What the machine must offer before anything is loaded: root, no toa.ko,
//! a bpffs to pin into and the cgroup v2 root to attach at.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

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

pub(crate) fn fs_magic(path: &Path) -> Option<i64> {
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

/// Where toa keeps its run-time state: the load lock and, on a cgroup v1
/// host, its own cgroup2 mount.
pub const RUN_DIR: &str = "/run/toa";
/// The cgroup2 mount toa makes, under [`RUN_DIR`], where the host has none.
const PRIVATE_CGROUP2: &str = "cgroup2";
pub(crate) const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The root of the cgroup v2 hierarchy: programs attached there see every
/// socket. Where the host mounts none (a cgroup v1 host: Amazon Linux 2,
/// `systemd.unified_cgroup_hierarchy=0`), toa mounts one of its own under
/// /run/toa and attaches there: `/sys/fs/cgroup` holds the v1 controllers
/// there, and a mount over it would hide them from systemd, docker and kubelet.
pub fn cgroup2_root() -> Result<PathBuf> {
    cgroup2_root_in(Path::new(RUN_DIR))
}

fn cgroup2_root_in(run_dir: &Path) -> Result<PathBuf> {
    if let Some(p) = mounted_cgroup2()? {
        return Ok(p);
    }
    let private = run_dir.join(PRIVATE_CGROUP2);
    mount_private_cgroup2(&private).with_context(|| {
        format!(
            "this host mounts no cgroup v2 hierarchy (cgroup v1 only) and toa could not mount \
             one of its own at {}; the eBPF mode needs cgroup v2: use toa.ko here \
             (install_toa.sh --mode kmod)",
            private.display()
        )
    })?;
    Ok(private)
}

/// The cgroup v2 root named by [`use_cgroup2_root`], if it was.
static NAMED_ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Takes `dir` as the cgroup v2 root from now on instead of looking for one.
/// For a container with a private cgroup namespace (Kubernetes' default on
/// cgroup v2): every cgroup2 mount it sees, and any it makes, is rooted at
/// its own cgroup, so the host's root must be mounted into it and named.
/// Refused unless `dir` is the hierarchy's root itself.
pub fn use_cgroup2_root(dir: &Path) -> Result<()> {
    require_hierarchy_root(dir)?;
    NAMED_ROOT
        .set(dir.to_path_buf())
        .map_err(|_| anyhow!("the cgroup v2 root was named already"))
}

/// The kernel gives every cgroup but the hierarchy's root a
/// `cgroup.events` file (CFTYPE_NOT_ON_ROOT): a cgroup namespace's root,
/// which looks like the root from inside, has one.
pub(crate) fn is_hierarchy_root(dir: &Path) -> bool {
    !dir.join("cgroup.events").exists()
}

fn require_hierarchy_root(dir: &Path) -> Result<()> {
    if fs_magic(dir) != Some(CGROUP2_SUPER_MAGIC) {
        bail!(
            "{} is not a cgroup v2 mount: mount the host's cgroup v2 root there (/sys/fs/cgroup, \
             or /sys/fs/cgroup/unified on a host that also mounts cgroup v1)",
            dir.display()
        );
    }
    if !is_hierarchy_root(dir) {
        bail!(
            "{} is a cgroup, not the root of the cgroup v2 hierarchy (in a container with a \
             private cgroup namespace, a cgroup2 mount made inside it is its own cgroup): mount \
             the host's cgroup v2 root there (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a \
             host that also mounts cgroup v1)",
            dir.display()
        );
    }
    Ok(())
}

/// The cgroup v2 root mounted now, if any (nothing is mounted); the one
/// named by [`use_cgroup2_root`] when it was.
pub fn mounted_cgroup2() -> Result<Option<PathBuf>> {
    if let Some(named) = NAMED_ROOT.get() {
        return Ok(Some(named.clone()));
    }
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // A mount hidden under a later one is still listed: take one that is
    // cgroup2 at its path.
    Ok(cgroup2_mounts(&info)
        .into_iter()
        .find(|p| fs_magic(p) == Some(CGROUP2_SUPER_MAGIC)))
}

/// Mounts cgroup2 at `target`, a directory of toa's own, with private
/// propagation: the mount shows in no other mount namespace.
fn mount_private_cgroup2(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let t = CString::new(target.as_os_str().as_encoded_bytes())?;
    let fstype = c"cgroup2";
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("mounting cgroup2 at {}: {e}", target.display());
    }
    // SAFETY: as above; MS_PRIVATE changes only this mount's propagation.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: t is a valid path; undo the mount just made.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        bail!(
            "making the cgroup2 mount at {} private: {e}",
            target.display()
        );
    }
    Ok(())
}

/// Whether `path` is the cgroup2 mount toa makes on a cgroup v1 host.
pub fn is_private_cgroup2(path: &Path) -> bool {
    path == Path::new(RUN_DIR).join(PRIVATE_CGROUP2)
}

/// Unmounts the cgroup2 mount toa made under /run/toa, if there is one:
/// once nothing is attached the host's mounts are as they were.
pub fn release_private_cgroup2() -> Result<()> {
    let private = Path::new(RUN_DIR).join(PRIVATE_CGROUP2);
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    if !cgroup2_mounts(&info).contains(&private) {
        return Ok(());
    }
    let t = CString::new(private.as_os_str().as_encoded_bytes())?;
    // SAFETY: t is a valid path.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "unmounting toa's cgroup2 mount at {}: {e}",
            private.display()
        );
    }
    let _ = std::fs::remove_dir(&private);
    Ok(())
}

/// The mount points of the cgroup2 mounts of the hierarchy's root, in
/// mountinfo order (proc(5): `id parent major:minor root mount-point options
/// [optional fields] - fstype source super-options`).
fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            let mount_point = fields.get(4)?;
            (fstype == "cgroup2" && fields.get(3) == Some(&"/"))
                .then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sh;

    /// Amazon Linux 2 (5.10, cgroup v1 only): a tmpfs at /sys/fs/cgroup holds
    /// the v1 controllers, and nothing is cgroup2.
    const AMAZON_LINUX_2: &str = "\
22 97 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
26 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
27 26 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
30 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
31 26 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
32 26 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
39 22 0:35 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:21 - bpf bpf rw,mode=700
";

    /// Ubuntu 20.04 (hybrid): v1 controllers, cgroup2 at /sys/fs/cgroup/unified.
    const UBUNTU_20_04: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    /// Debian 12 (unified): cgroup2 at /sys/fs/cgroup.
    const DEBIAN_12: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
30 24 0:27 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:10 - bpf bpf rw,mode=700
";

    /// A container of a cgroup v2 host without a private cgroup namespace:
    /// the host's hierarchy mounted at its own cgroup, which is not the root.
    const CONTAINER_HOST_CGROUPNS: &str = "\
612 605 0:26 /system.slice/docker-1a2b.scope /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
";

    #[test]
    fn a_v1_only_host_has_no_cgroup2_root() {
        assert_eq!(cgroup2_mounts(AMAZON_LINUX_2), Vec::<PathBuf>::new());
    }

    #[test]
    fn hybrid_and_unified_hosts_name_their_cgroup2_root() {
        assert_eq!(
            cgroup2_mounts(UBUNTU_20_04),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            cgroup2_mounts(DEBIAN_12),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
        assert_eq!(
            cgroup2_mounts(CONTAINER_HOST_CGROUPNS),
            Vec::<PathBuf>::new(),
            "a sub-tree is not the root"
        );
    }

    #[test]
    fn toas_own_mount_is_found_again_and_escapes_are_read() {
        let info = format!(
            "{AMAZON_LINUX_2}80 97 0:40 / /run/toa/cgroup2 rw,nosuid,nodev,noexec,relatime - \
             cgroup2 cgroup2 rw\n81 97 0:41 / /mnt/a\\040b rw - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(
            cgroup2_mounts(&info),
            vec![PathBuf::from("/run/toa/cgroup2"), PathBuf::from("/mnt/a b")]
        );
        assert_eq!(unescape(r"a\011b\134"), "a\tb\\");
        assert_eq!(unescape(r"trailing\04"), r"trailing\04");
    }

    #[test]
    fn only_the_hierarchys_root_can_be_named() {
        let tmp = std::env::temp_dir();
        let e = require_hierarchy_root(&tmp).unwrap_err();
        assert!(
            format!("{e:#}").contains("is not a cgroup v2 mount"),
            "{e:#}"
        );
        let Some(root) = mounted_cgroup2().unwrap() else {
            eprintln!("skipped the rest: no cgroup v2 hierarchy is mounted");
            return;
        };
        if !is_hierarchy_root(&root) {
            eprintln!("skipped the rest: this runs in a cgroup namespace");
            return;
        }
        require_hierarchy_root(&root).unwrap();
        // Any cgroup below the root (systemd's init.scope, docker's, ...).
        let child = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_dir());
        if let Some(child) = child {
            let e = require_hierarchy_root(&child).unwrap_err();
            assert!(
                format!("{e:#}").contains("not the root of the cgroup v2 hierarchy"),
                "{e:#}"
            );
        }
    }

    #[test]
    fn a_v1_only_host_keeps_its_cgroup_mounts() {
        crate::testing::in_private_mount_namespace(
            "system::tests::v1_only_host_in_mount_namespace",
        );
    }

    /// A cgroup v1 host as Amazon Linux 2 lays it out, made in a private mount
    /// namespace: no cgroup2 anywhere, a tmpfs at /sys/fs/cgroup holding a v1
    /// hierarchy, a fresh /run. Finding the cgroup v2 root must leave
    /// /sys/fs/cgroup and its v1 mount as they were.
    #[test]
    #[ignore = "run by a_v1_only_host_keeps_its_cgroup_mounts in a mount namespace"]
    fn v1_only_host_in_mount_namespace() {
        crate::testing::require_private_mount_namespace();
        // Every cgroup2 mount goes; /sys/fs/cgroup becomes a v1 layout.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for p in cgroup2_mounts(&info).iter().rev() {
            sh(&format!("umount -l '{}'", p.display()));
        }
        sh("mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
            mkdir /sys/fs/cgroup/toa-test-v1
            mount -t cgroup -o none,name=toa-test-v1 toa-test-v1 /sys/fs/cgroup/toa-test-v1
            mount -t tmpfs tmpfs /run");
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(cgroup2_mounts(&before).is_empty(), "{before}");

        let root = cgroup2_root().expect("a private cgroup2 mount");

        assert_ne!(root, Path::new("/sys/fs/cgroup"));
        assert_eq!(fs_magic(&root), Some(CGROUP2_SUPER_MAGIC));
        assert_ne!(
            fs_magic(Path::new("/sys/fs/cgroup")),
            Some(CGROUP2_SUPER_MAGIC)
        );
        assert!(
            Path::new("/sys/fs/cgroup/toa-test-v1/tasks").exists(),
            "the v1 hierarchy under /sys/fs/cgroup is hidden"
        );
        let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in before.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (id, point) = (fields[0], fields[4]);
            let still = after.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f[0] == id && f[4] == point
            });
            assert!(still, "mount {point} ({id}) changed:\n{after}");
        }
        // The next load finds the same mount instead of mounting again.
        assert_eq!(cgroup2_root().unwrap(), root);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(cgroup2_mounts(&mounts), vec![root.clone()]);
        release_private_cgroup2().unwrap();
        let gone = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(cgroup2_mounts(&gone).is_empty(), "{gone}");
    }
}
