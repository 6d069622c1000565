//! The origin's side of a connection, as an application does it: a wildcard
//! listener, accept() into a `sockaddr_storage`, getpeername(). Raw libc
//! calls, because std hides the family and length the kernel wrote, which is
//! exactly what toa.ko changes.

use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{sim_err, Result};
use crate::sockaddr::PeerName;

/// Which kind of listening socket an application opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerFamily {
    /// AF_INET, bound to 0.0.0.0.
    V4,
    /// AF_INET6 bound to `::` with IPV6_V6ONLY=0: sees IPv4 clients as
    /// `::ffff:a.b.c.d` too.
    DualStack,
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> std::result::Result<(), String> {
    // SAFETY: plain setsockopt with a pointer to a live int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(last_error("setsockopt"))
    } else {
        Ok(())
    }
}

/// A non-blocking wildcard listener on `port`; `label` names it in errors.
/// The dual-stack one must be bound to `::` to see IPv4 clients at all, and
/// the IPv4 one follows for symmetry.
pub fn listen(family: ListenerFamily, port: u16, label: &str) -> Result<OwnedFd> {
    let domain = match family {
        ListenerFamily::V4 => libc::AF_INET,
        ListenerFamily::DualStack => libc::AF_INET6,
    };
    let ctx = |what: &str| sim_err!("{label}: {}", last_error(what));
    // SAFETY: socket() returns a new descriptor or -1.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(ctx("socket"));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(|e| sim_err!("{e}"))?;
    // SAFETY (both arms): zeroed sockaddr structs are valid; bind reads
    // exactly the length passed.
    let rc = match family {
        ListenerFamily::V4 => {
            let mut sin: libc::sockaddr_in = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            unsafe {
                libc::bind(
                    raw,
                    &sin as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        ListenerFamily::DualStack => {
            set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)
                .map_err(|e| sim_err!("{label}: IPV6_V6ONLY=0: {e}"))?;
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            unsafe {
                libc::bind(
                    raw,
                    &sin6 as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        return Err(ctx("bind"));
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(raw, 64) } < 0 {
        return Err(ctx("listen"));
    }
    Ok(fd)
}

/// getpeername() into a sockaddr_storage, reporting what the kernel wrote.
pub fn getpeername(fd: BorrowedFd<'_>) -> std::result::Result<PeerName, String> {
    // SAFETY: zeroed storage is valid; the kernel writes at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            &mut ss as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(last_error("getpeername"));
    }
    Ok(PeerName::from_storage(&ss, len))
}

/// What one accept() attempt gave.
pub enum Accepted {
    /// The new connection and the address accept() wrote for it.
    Connection(OwnedFd, PeerName),
    /// Nothing was waiting within the wait.
    Nothing,
    Failed(String),
}

/// Waits up to `wait` for a connection on a non-blocking `listener` and
/// accepts it with an address buffer, as servers do.
pub fn accept(listener: &OwnedFd, wait: Duration) -> Accepted {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
        return Accepted::Nothing;
    }
    // SAFETY: as in getpeername(); accept4 returns a new descriptor or -1.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let raw = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            &mut ss as *mut _ as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Accepted::Nothing,
            _ => Accepted::Failed(format!("accept: {err}")),
        };
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Accepted::Connection(fd, PeerName::from_storage(&ss, len))
}
