//! rmmod-behind-socket-lock: since 5.16 inet_getname() takes the socket's
//! lock, so a getpeername() running through toa's wrapper can sleep inside
//! module code for as long as another task owns that lock. A local user can
//! own it at will: send() on the socket from a buffer whose page faults into
//! a userfaultfd that never answers keeps tcp_sendmsg() holding the lock.
//! Unload must wait for such a caller (returning into freed text is the
//! alternative) but must not sit in uninterruptible sleep meanwhile, which
//! the hung-task detector reports and the load average counts: the rmmod
//! task must be idle ('I'), not 'D'. When the fault is answered, getpeername
//! returns, rmmod completes and the kernel log stays clean.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{load_again, open_kept, quiet_kernel, Kept, Shared, MODULE_NAME};
use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "rmmod-behind-socket-lock";

/// How long the socket lock is held with rmmod waiting.
const HOLD: Duration = Duration::from_secs(2);

// linux/userfaultfd.h
const UFFD_API: u64 = 0xaa;
// libc's ioctl takes the request as c_ulong (glibc) or c_int (musl).
const UFFDIO_API: libc::Ioctl = 0xc018_aa3f_u32 as libc::Ioctl;
const UFFDIO_REGISTER: libc::Ioctl = 0xc020_aa00_u32 as libc::Ioctl;
const UFFDIO_COPY: libc::Ioctl = 0xc028_aa03_u32 as libc::Ioctl;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// Why the scenario cannot run here: it holds the socket lock with a
/// userfaultfd page (Linux 4.3; EL7's 3.10 has none), which nothing else
/// can do from user space for as long.
pub fn not_offered() -> Option<String> {
    // SAFETY: a syscall with no pointer arguments; a descriptor it returns is closed here.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: the new descriptor is ours alone.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        return None;
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENOSYS) => {
            Some("userfaultfd (Linux 4.3) is missing: ENOSYS".to_string())
        }
        // Present but refused (a sysctl, a seccomp policy): run and fail,
        // naming it, rather than hide a setup problem.
        _ => None,
    }
}

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let mut log = Cursor::at_end()?;
    let outcome = attack(lab);
    let restored = load_again(lab, ctx).context("loading the module again");
    std::thread::sleep(Duration::from_millis(300));
    let detail = quiet_kernel(&log.read_new()?, outcome)?;
    restored?;
    Ok(detail)
}

/// A page registered with a fresh userfaultfd: touching it blocks the
/// toucher, kernel code included, until the page is supplied.
struct Trap {
    uffd: OwnedFd,
    page: *mut libc::c_void,
    size: usize,
}

impl Trap {
    fn new() -> Result<Trap> {
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(lab_err!("userfaultfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nothing else owns.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } < 0 {
            return Err(lab_err!("UFFDIO_API: {}", std::io::Error::last_os_error()));
        }
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(lab_err!("mmap: {}", std::io::Error::last_os_error()));
        }
        let trap = Trap { uffd, page, size };
        let mut reg = UffdioRegister {
            start: page as u64,
            len: size as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        if unsafe { libc::ioctl(trap.uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } < 0 {
            return Err(lab_err!(
                "UFFDIO_REGISTER: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(trap)
    }

    /// Waits until something faulted on the page.
    fn wait_fault(&self, limit: Duration) -> Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
        if n != 1 {
            return Err(lab_err!(
                "send() never faulted on the trapped page within {limit:?}"
            ));
        }
        let mut msg = [0u8; 32];
        unsafe { libc::read(self.uffd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        Ok(())
    }

    /// Supplies the page: the faulting task goes on.
    fn release(&self) -> Result<()> {
        let src = vec![b'x'; self.size];
        let mut copy = UffdioCopy {
            dst: self.page as u64,
            src: src.as_ptr() as u64,
            len: self.size as u64,
            mode: 0,
            copy: 0,
        };
        if unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_COPY, &mut copy) } < 0 {
            return Err(lab_err!("UFFDIO_COPY: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.page, self.size) };
    }
}

/// The scheduler state letter of a process (/proc/PID/stat, third field).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn attack(lab: &Lab) -> Result<String> {
    let spec = ConnSpec::new(
        ProxyFamily::V4,
        Listener::V4,
        Some(Toa::new(
            KIND_TOA,
            "198.51.100.61:40610".parse().expect("valid"),
        )),
    );
    let Kept { client, fd, .. } = open_kept(lab, &spec, "rmmod behind a socket lock")?;
    let trap = Trap::new()?;
    let raw = fd.as_raw_fd();
    let page = trap.page as usize;
    let size = trap.size;
    // The lock owner: tcp_sendmsg() faults on the page with the socket locked.
    let sender = std::thread::spawn(move || unsafe {
        libc::send(raw, page as *const libc::c_void, size, 0)
    });
    let outcome = (|| -> Result<String> {
        trap.wait_fault(lab.step_timeout)?;
        // The waiter: getpeername() through toa's wrapper, asleep in
        // lock_sock() on 5.16+ (returns at once on older kernels).
        let asker = std::thread::spawn(move || crate::lab::peer_of(&dup(raw)));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let mut rmmod: Child = Command::new("rmmod")
            .arg(MODULE_NAME)
            .spawn()
            .context("starting rmmod")?;
        std::thread::sleep(Duration::from_millis(700));
        let waiting = rmmod.try_wait().context("rmmod")?.is_none();
        let state = state_of(rmmod.id());
        std::thread::sleep(HOLD.saturating_sub(Duration::from_millis(700)));
        trap.release()?;
        let status = rmmod.wait().context("waiting for rmmod")?;
        let took = started.elapsed();
        lab.set_module_loaded(false);
        let seen = asker
            .join()
            .map_err(|_| lab_err!("the getpeername thread panicked"))?;
        if !status.success() {
            return Err(lab_err!(
                "rmmod failed ({status}) once the socket lock was released"
            ));
        }
        if waiting && state == Some('D') {
            return Err(lab_err!(
                "rmmod waited for the getpeername() inside toa in uninterruptible sleep (state D): the hung-task detector reports it"
            ));
        }
        let seen = seen.map_or_else(|e| format!("error {e}"), |p| p.to_string());
        Ok(if waiting {
            format!(
                "rmmod waited {:.1} s (state {}) for a getpeername() asleep on the socket lock, then completed; that call returned [{seen}]",
                took.as_secs_f64(),
                state.unwrap_or('?')
            )
        } else {
            format!("rmmod completed at once: getpeername() does not take the socket lock on this kernel (before 5.16); it returned [{seen}]")
        })
    })();
    // The sender returns once the page exists (released above, or here).
    let _ = trap.release();
    let _ = sender.join();
    drop(fd);
    let _ = client.close();
    outcome
}

fn dup(fd: RawFd) -> OwnedFd {
    // SAFETY: dup of a descriptor this scenario keeps open until the thread is joined.
    unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) }
}
