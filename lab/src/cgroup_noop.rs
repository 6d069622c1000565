//! A do-nothing cgroup getpeername program, for the bench's kernel floor.
//!
//! Scoping the eBPF mode to one cgroup still costs processes outside it:
//! the kernel turns its cgroup-hook path on for every socket once any
//! cgroup has a program of that hook type. To show that this cost is the
//! kernel's and not toa's, the bench attaches a program that returns "allow"
//! and touches nothing (two instructions: `r0 = 1; exit`) to the same cgroup
//! the scoped states use, and measures from outside. It is loaded with raw
//! `bpf(2)` calls because it is not an object toa ships: two instructions
//! need no ELF, and no loader crate stands between the figure and the kernel.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::{lab_err, Context, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;

/// `r0 = 1; exit`: encoded as the kernel reads `struct bpf_insn`
/// (opcode, dst/src nibbles, 16-bit offset, 32-bit immediate).
const ALLOW: [u64; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K (0xb7), dst r0, imm 1
    0xb7 | (1 << 32),
    // BPF_JMP | BPF_EXIT (0x95)
    0x95,
];

/// The first fields of `union bpf_attr` for BPF_PROG_LOAD, up to
/// `expected_attach_type`; the kernel zero-checks the rest of the size given.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (prog_fd, target_fd, attach_type, flags).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a live, fully initialised bpf_attr prefix of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(lab_err!("{what}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The programs attached to one cgroup: both getpeername hooks, each by a
/// link this value owns. Dropping it closes the links, which detaches them.
pub struct Attached {
    _links: Vec<OwnedFd>,
    _progs: Vec<OwnedFd>,
}

/// Attaches the do-nothing program to `cgroup`'s IPv4 and IPv6 getpeername
/// hooks (the two the eBPF mode uses for the peer's name).
pub fn attach(cgroup: &std::path::Path) -> Result<Attached> {
    let dir = std::fs::File::open(cgroup).context(format!("opening {}", cgroup.display()))?;
    let license = c"GPL";
    let mut links = Vec::new();
    let mut progs = Vec::new();
    for (attach_type, name) in [
        (BPF_CGROUP_INET4_GETPEERNAME, "getpeername4"),
        (BPF_CGROUP_INET6_GETPEERNAME, "getpeername6"),
    ] {
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            insn_cnt: ALLOW.len() as u32,
            insns: ALLOW.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type: attach_type,
            ..ProgLoad::default()
        };
        load.prog_name[..4].copy_from_slice(b"noop");
        let prog = bpf(
            BPF_PROG_LOAD,
            &mut load,
            &format!("loading the do-nothing {name} program"),
        )?;
        let mut link = LinkCreate {
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
            target_fd: std::os::fd::AsRawFd::as_raw_fd(&dir) as u32,
            attach_type,
            flags: 0,
        };
        links.push(bpf(
            BPF_LINK_CREATE,
            &mut link,
            &format!(
                "attaching the do-nothing {name} program to {}",
                cgroup.display()
            ),
        )?);
        progs.push(prog);
    }
    Ok(Attached {
        _links: links,
        _progs: progs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding the kernel's verifier reads: a wrong opcode or register
    /// nibble would be a different program, or none.
    #[test]
    fn allow_is_mov_r0_1_then_exit() {
        let mov = ALLOW[0].to_le_bytes();
        assert_eq!(mov[0], 0xb7, "BPF_ALU64|BPF_MOV|BPF_K");
        assert_eq!(mov[1], 0x00, "dst r0, src r0");
        assert_eq!(&mov[2..4], &[0, 0], "offset 0");
        assert_eq!(i32::from_le_bytes(mov[4..8].try_into().unwrap()), 1);
        assert_eq!(ALLOW[1].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn attr_sizes_match_the_kernel_layout() {
        // offsetof(union bpf_attr, expected_attach_type) + 4 in linux/bpf.h.
        assert_eq!(std::mem::offset_of!(ProgLoad, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<ProgLoad>(), 72);
        assert_eq!(std::mem::size_of::<LinkCreate>(), 16);
    }
}
