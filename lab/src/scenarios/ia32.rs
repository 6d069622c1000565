//! getpeername-ia32: 32-bit processes on a 64-bit kernel ask for the peer
//! through the compat entry points (`int 0x80`: the getpeername syscall and
//! socketcall). toa.ko writes a sockaddr_in6 longer than the kernel's own
//! answer (an IPv6 client on an AF_INET socket) only for callers it knows
//! hold a sockaddr_storage, recognised by call site: the compat paths must
//! be recognised too, or a 32-bit server gets the proxy there. Each answer
//! is compared with the native call's on the same socket, and
//! `getname_toa_unfit` (an answer kept because the caller was not
//! recognised) must not move.

use std::net::SocketAddr;

use crate::error::Result;
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "getpeername-ia32";

pub fn run(lab: &Lab) -> Result<String> {
    imp::run(lab)
}

/// The connections asked about: the TOA's client, what it is.
fn specs() -> [(ConnSpec, SocketAddr, &'static str); 2] {
    let conn = |client: &str, what| {
        let client: SocketAddr = client.parse().expect("valid");
        let spec = ConnSpec::new(
            ProxyFamily::V4,
            Listener::V4,
            Some(Toa::new(KIND_TOA, client)),
        );
        (spec, client, what)
    };
    [
        conn("[2001:db8::32]:40320", "IPv6 client on an AF_INET socket"),
        conn("198.51.100.32:40321", "IPv4 client on an AF_INET socket"),
    ]
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::os::fd::{AsRawFd, RawFd};

    use super::super::{open_kept, Kept};
    use super::*;
    use crate::error::{lab_err, Context};
    use crate::sockaddr::PeerName;
    use crate::stats;

    /// i386 syscall numbers (arch/x86/entry/syscalls/syscall_32.tbl).
    const NR_SOCKETCALL: u32 = 102;
    const NR_GETPEERNAME: u32 = 368;
    /// socketcall's call number for getpeername (linux/net.h).
    const SYS_GETPEERNAME: u32 = 7;

    /// Memory below 4 GiB, as a 32-bit process has it: the answer, its
    /// length and socketcall's argument block.
    struct Low {
        page: *mut u8,
    }

    const LEN_AT: usize = 128;
    const ARGS_AT: usize = 136;
    const PAGE: usize = 4096;

    impl Low {
        fn new() -> Result<Low> {
            // SAFETY: a fresh anonymous mapping; MAP_32BIT keeps it below 2 GiB.
            let page = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                    -1,
                    0,
                )
            };
            if page == libc::MAP_FAILED {
                return Err(lab_err!(
                    "mmap(MAP_32BIT): {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Low { page: page.cast() })
        }

        fn addr(&self, offset: usize) -> u32 {
            (self.page as usize + offset) as u32
        }

        /// Clears the answer and sets its length to a sockaddr_storage's.
        fn reset(&self) {
            // SAFETY: offsets inside the page; u32 slots are 4-aligned.
            unsafe {
                std::ptr::write_bytes(self.page, 0xa5, LEN_AT);
                self.page.add(LEN_AT).cast::<u32>().write(LEN_AT as u32);
            }
        }

        fn answer(&self) -> PeerName {
            // SAFETY: the page holds at least a sockaddr_storage at offset 0.
            unsafe {
                let len = self.page.add(LEN_AT).cast::<u32>().read();
                let ss = &*self.page.cast::<libc::sockaddr_storage>();
                PeerName::from_storage(ss, len)
            }
        }

        fn set_args(&self, args: [u32; 3]) {
            // SAFETY: three u32 slots inside the page, 4-aligned.
            unsafe {
                let at = self.page.add(ARGS_AT).cast::<u32>();
                for (i, a) in args.iter().enumerate() {
                    at.add(i).write(*a);
                }
            }
        }
    }

    impl Drop for Low {
        fn drop(&mut self) {
            // SAFETY: the mapping made in new().
            unsafe { libc::munmap(self.page.cast(), PAGE) };
        }
    }

    /// A 32-bit system call through `int 0x80`: the kernel takes this
    /// process for a 32-bit one for its duration (in_ia32_syscall()).
    fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
        let ret: i32;
        // SAFETY: the i386 ABI: eax number, ebx/ecx/edx arguments, eax
        // result; rbx is reserved by the compiler, so it is swapped in and
        // out; r8-r11 are not preserved by every kernel's compat entry.
        unsafe {
            std::arch::asm!(
                "xchg {a:r}, rbx",
                "int 0x80",
                "xchg {a:r}, rbx",
                a = inout(reg) u64::from(a) => _,
                inlateout("eax") nr as i32 => ret,
                in("ecx") b,
                in("edx") c,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
        ret
    }

    fn compat_getpeername(low: &Low, fd: RawFd) -> std::result::Result<PeerName, i32> {
        low.reset();
        match int80(NR_GETPEERNAME, fd as u32, low.addr(0), low.addr(LEN_AT)) {
            0 => Ok(low.answer()),
            e => Err(-e),
        }
    }

    fn compat_socketcall(low: &Low, fd: RawFd) -> std::result::Result<PeerName, i32> {
        low.reset();
        low.set_args([fd as u32, low.addr(0), low.addr(LEN_AT)]);
        match int80(NR_SOCKETCALL, SYS_GETPEERNAME, low.addr(ARGS_AT), 0) {
            0 => Ok(low.answer()),
            e => Err(-e),
        }
    }

    pub fn run(lab: &Lab) -> Result<String> {
        let low = Low::new()?;
        let mut said = Vec::new();
        for (spec, toa_client, what) in specs() {
            let Kept { client, fd, .. } = open_kept(lab, &spec, "32-bit getpeername calls")?;
            let outcome = (|| -> Result<String> {
                let before = stats::read()?;
                let native = crate::lab::peer_of(&fd).context("native getpeername")?;
                if native.addr != Some(toa_client) {
                    return Err(lab_err!(
                        "{what}: the native getpeername showed [{native}], not the client {toa_client}"
                    ));
                }
                let raw = fd.as_raw_fd();
                let calls = [
                    ("int 0x80 getpeername", compat_getpeername(&low, raw)),
                    (
                        "int 0x80 socketcall(SYS_GETPEERNAME)",
                        compat_socketcall(&low, raw),
                    ),
                ];
                let after = stats::read()?;
                let mut shown = Vec::new();
                for (call, answer) in calls {
                    match answer {
                        Ok(seen) if seen == native => shown.push(call),
                        Ok(seen) => {
                            return Err(lab_err!(
                                "{what}: {call} answered [{seen}], the native call [{native}]"
                            ))
                        }
                        Err(libc::ENOSYS) => {
                            return Err(lab_err!(
                                "{what}: {call}: ENOSYS (kernel without 32-bit emulation, or ia32_emulation=0)"
                            ))
                        }
                        Err(e) => {
                            return Err(lab_err!(
                                "{what}: {call}: {}",
                                std::io::Error::from_raw_os_error(e)
                            ))
                        }
                    }
                }
                let unfit = i128::from(after.get("getname_toa_unfit").unwrap_or(0))
                    - i128::from(before.get("getname_toa_unfit").unwrap_or(0));
                if unfit != 0 {
                    return Err(lab_err!(
                        "{what}: getname_toa_unfit moved by {unfit}: a caller was not recognised"
                    ));
                }
                Ok(format!("{what}: {} showed [{native}]", shown.join(" and ")))
            })();
            drop(fd);
            let _ = client.close();
            said.push(outcome?);
        }
        Ok(said.join("; "))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::*;

    pub fn run(_lab: &Lab) -> Result<String> {
        let _ = specs;
        Ok("32-bit entry points are x86's int 0x80 here; this architecture's compat (A32) code is not built by the lab: nothing to call".into())
    }
}
