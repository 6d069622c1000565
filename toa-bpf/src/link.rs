//! Pinned links by raw system calls aya does not expose: detaching one
//! synchronously (BPF_LINK_DETACH, Linux 5.9; aya's links detach when their
//! last reference drops, and a pin's last reference drops asynchronously),
//! replacing the program a link runs (BPF_LINK_UPDATE, Linux 5.7 for cgroup
//! links) and reading what one is attached to (BPF_OBJ_GET_INFO_BY_FD).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_link_type`.
pub const LINK_TYPE_TRACING: u32 = 2;
pub const LINK_TYPE_CGROUP: u32 = 3;
/// `enum bpf_attach_type`.
pub const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
pub const ATTACH_TRACE_FEXIT: u32 = 25;
pub const ATTACH_CGROUP_INET4_GETPEERNAME: u32 = 29;
pub const ATTACH_CGROUP_INET6_GETPEERNAME: u32 = 30;

/// `union bpf_attr` as BPF_OBJ_GET reads it.
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` as BPF_OBJ_GET_INFO_BY_FD reads it.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info`: type, id, prog_id, then a union (8-aligned) whose
/// cgroup member is `{ u64 cgroup_id; u32 attach_type; }` and whose tracing
/// member is `{ u32 attach_type; u32 target_obj_id; u32 target_btf_id; }`.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    union: [u32; 12],
}

/// What a pinned link is and where it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    /// The program it runs.
    pub prog_id: u32,
    pub attach_type: u32,
    /// A cgroup link's cgroup (its cgroup v2 inode number); 0 once detached.
    pub cgroup_id: Option<u64>,
}

/// `union bpf_attr` as BPF_LINK_DETACH reads it.
#[repr(C)]
struct LinkDetach {
    link_fd: u32,
}

pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, correctly laid out bpf_attr prefix of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

pub(crate) fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let get = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &get)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_GET_INFO_BY_FD: the kernel fills `info` (a prefix of the
/// object's `bpf_*_info` struct, as long as `T`).
pub(crate) fn info_by_fd<T>(fd: &OwnedFd, info: &mut T) -> Result<()> {
    let get = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &get)?;
    Ok(())
}

/// The link pinned at `path`; an error when it cannot be opened or is not a
/// link.
pub fn pinned_info(path: &Path) -> Result<LinkInfo> {
    let fd = obj_get(path)?;
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // "bpf_link" before Linux 6.x renamed it "bpf-link".
    if !matches!(
        kind.to_str(),
        Some("anon_inode:bpf_link" | "anon_inode:bpf-link")
    ) {
        bail!("not a BPF link ({})", kind.display());
    }
    let mut raw = RawLinkInfo::default();
    info_by_fd(&fd, &mut raw)?;
    let u = raw.union;
    let (attach_type, cgroup_id) = match raw.link_type {
        LINK_TYPE_CGROUP => {
            let mut id = [0u8; 8];
            id[..4].copy_from_slice(&u[0].to_ne_bytes());
            id[4..].copy_from_slice(&u[1].to_ne_bytes());
            (u[2], Some(u64::from_ne_bytes(id)))
        }
        _ => (u[0], None),
    };
    Ok(LinkInfo {
        link_type: raw.link_type,
        id: raw.id,
        prog_id: raw.prog_id,
        attach_type,
        cgroup_id,
    })
}

pub fn detach_pinned(path: &Path) -> Result<()> {
    let fd = obj_get(path)?;
    let detach = LinkDetach {
        link_fd: fd.as_raw_fd() as u32,
    };
    match bpf(BPF_LINK_DETACH, &detach) {
        Ok(_) => Ok(()),
        // Before 5.9 there is no detach command: unpinning stays the way.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        // Tracing links (the fexit capture) have no detach: unpinning is the way.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        Err(e) => bail!("BPF_LINK_DETACH: {e}"),
    }
}

/// `union bpf_attr` as BPF_LINK_UPDATE reads it.
#[repr(C)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Makes the link pinned at `path` run `prog` instead of its program, with
/// no moment where neither runs. Cgroup links take it; tracing (fexit) links
/// do not (EINVAL).
pub fn update_pinned(path: &Path, prog: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let fd = obj_get(path)?;
    let update = LinkUpdate {
        link_fd: fd.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &update)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("BPF_LINK_UPDATE on {}: {e}", path.display()))
}

/// Detaches the link `fd` (a cgroup link; others keep running until their
/// last reference goes).
pub fn detach(fd: &OwnedFd) -> Result<()> {
    let detach = LinkDetach {
        link_fd: fd.as_raw_fd() as u32,
    };
    match bpf(BPF_LINK_DETACH, &detach) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => Ok(()),
        Err(e) => bail!("BPF_LINK_DETACH: {e}"),
    }
}
