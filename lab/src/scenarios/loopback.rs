//! Plain loopback TCP, no TOA, no simulator: the other sockets the module's
//! scenarios need beside the proxied ones (kTLS peers, sockets listening
//! again, listeners a scenario keeps to itself), and the raw socket calls
//! std does not offer.

use std::io::{Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{lab_err, Result};
use crate::sockaddr::PeerName;
use crate::socket::{self, Accepted};

pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// `TCP_ULP`, which the libc crate does not name for every target.
const TCP_ULP: libc::c_int = 31;

fn os_error(what: &str) -> crate::error::Error {
    lab_err!("{what}: {}", std::io::Error::last_os_error())
}

/// A listener on `ip`, port chosen by the kernel.
pub fn listener(ip: IpAddr) -> Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, 0)).map_err(|e| lab_err!("listening on {ip}: {e}"))
}

/// A wildcard AF_INET listener on a fixed `port` that never accepts by
/// itself: connections stay queued until the scenario takes them.
pub fn wildcard_v4(port: u16, label: &str) -> Result<OwnedFd> {
    socket::listen(socket::ListenerFamily::V4, port, label)
}

pub fn local_addr(l: &TcpListener) -> Result<SocketAddr> {
    l.local_addr()
        .map_err(|e| lab_err!("getsockname on a loopback listener: {e}"))
}

/// What getpeername() must show for a peer at `addr` on a socket of the
/// same family.
pub fn peer(addr: SocketAddr) -> PeerName {
    match addr {
        SocketAddr::V4(_) => PeerName::v4(addr),
        SocketAddr::V6(_) => PeerName::v6(addr),
    }
}

/// Waits up to `wait` for a connection on `listener` and accepts it with an
/// address buffer, as the origin does.
pub fn accept(listener: &OwnedFd, wait: Duration) -> Result<(OwnedFd, PeerName)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket::accept(listener, left.min(Duration::from_millis(100))) {
            Accepted::Connection(fd, name) => return Ok((fd, name)),
            Accepted::Failed(e) => return Err(lab_err!("{e}")),
            Accepted::Nothing if left.is_zero() => {
                return Err(lab_err!("nothing to accept within {wait:?}"))
            }
            Accepted::Nothing => {}
        }
    }
}

/// Waits up to `wait` for `fd` to have something to read (a listener: a
/// connection in its accept queue), without taking it.
pub fn readable(fd: BorrowedFd<'_>, wait: Duration) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n > 0 => Ok(()),
        0 => Err(lab_err!("nothing arrived within {wait:?}")),
        _ => Err(os_error("poll")),
    }
}

/// A connected pair through `listener`: the connecting end and the accepted
/// one.
pub struct Pair {
    pub client: TcpStream,
    pub server: OwnedFd,
    /// What accept() wrote for the client.
    pub accepted: PeerName,
}

impl Pair {
    pub fn open(listener: &TcpListener, wait: Duration) -> Result<Pair> {
        let to = local_addr(listener)?;
        let client = TcpStream::connect_timeout(&to, wait)
            .map_err(|e| lab_err!("connecting to {to}: {e}"))?;
        let fd = OwnedFd::from(
            listener
                .try_clone()
                .map_err(|e| lab_err!("duplicating the listener of {to}: {e}"))?,
        );
        let (server, accepted) = accept(&fd, wait)?;
        Ok(Pair {
            client,
            server,
            accepted,
        })
    }

    /// What getpeername() on the accepted end must say: the client's end.
    pub fn client_end(&self) -> Result<PeerName> {
        end_of(&self.client)
    }
}

/// What getpeername() on the accepted end of `client` must say.
pub fn end_of(client: &TcpStream) -> Result<PeerName> {
    client
        .local_addr()
        .map(peer)
        .map_err(|e| lab_err!("getsockname on a loopback client: {e}"))
}

/// Closes `fd` with a reset (SO_LINGER 0), so the kernel destroys the socket
/// now instead of after a FIN exchange: its destructor runs at once.
pub fn abort(fd: OwnedFd) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a live struct linger of the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_error("SO_LINGER"));
    }
    drop(fd);
    Ok(())
}

/// `connect(fd, {AF_UNSPEC})`: drops the connection, keeps the socket (and
/// its bound port) for another use.
pub fn disconnect(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: a zeroed sockaddr is AF_UNSPEC; connect reads its length only.
    let unspec: libc::sockaddr = unsafe { zeroed() };
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &unspec,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_error("connect(AF_UNSPEC)"));
    }
    Ok(())
}

/// listen() on a socket of any state; the raw error, so callers can tell
/// the expected refusals apart.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> std::io::Result<()> {
    // SAFETY: listen on a descriptor we hold.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `setsockopt(fd, SOL_TCP, TCP_ULP, name)`.
pub fn set_ulp(fd: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    // SAFETY: the kernel copies at most `len` bytes from a live buffer.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// getsockname() as the kernel answers it.
pub fn sockname(fd: BorrowedFd<'_>) -> Result<PeerName> {
    // SAFETY: zeroed storage is valid; the kernel writes at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(os_error("getsockname"));
    }
    Ok(PeerName::from_storage(&ss, len))
}

/// A fresh blocking TCP socket of `family`, neither bound nor connected.
pub fn tcp_socket(family: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: socket() returns a new descriptor or -1.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_error("socket"));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `addr` as a `sockaddr_in6` (IPv4 addresses mapped).
fn sockaddr_in6(addr: SocketAddr) -> libc::sockaddr_in6 {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = addr.port().to_be();
    sin6.sin6_addr.s6_addr = ip.octets();
    sin6
}

/// connect() of an AF_INET6 socket to `addr` (an IPv4 address goes as
/// `::ffff:a.b.c.d`); the raw error.
pub fn connect6(fd: BorrowedFd<'_>, addr: SocketAddr) -> std::io::Result<()> {
    let sin6 = sockaddr_in6(addr);
    // SAFETY: connect reads exactly the length of a live sockaddr_in6.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sin6 as *const libc::sockaddr_in6).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One byte each way between two connected ends.
pub fn ping(a: &OwnedFd, b: &OwnedFd, wait: Duration) -> Result<()> {
    let stream = |fd: &OwnedFd| -> Result<TcpStream> {
        let s = TcpStream::from(
            fd.try_clone()
                .map_err(|e| lab_err!("duplicating a socket: {e}"))?,
        );
        s.set_read_timeout(Some(wait))
            .map_err(|e| lab_err!("SO_RCVTIMEO: {e}"))?;
        Ok(s)
    };
    let (mut a, mut b) = (stream(a)?, stream(b)?);
    let mut byte = [0u8; 1];
    a.write_all(b"?")
        .and_then(|()| b.read_exact(&mut byte))
        .and_then(|()| b.write_all(b"!"))
        .and_then(|()| a.read_exact(&mut byte))
        .map_err(|e| lab_err!("one byte each way: {e}"))?;
    if byte != *b"!" {
        return Err(lab_err!("one byte each way: read back {byte:?}"));
    }
    Ok(())
}

/// getpeername() `times` times on `fd`; every answer must be `want`.
pub fn peer_is(fd: BorrowedFd<'_>, want: PeerName, times: usize, what: &str) -> Result<()> {
    for call in 1..=times {
        let seen = socket::getpeername(fd).map_err(|e| lab_err!("{what}: {e}"))?;
        if seen != want {
            return Err(lab_err!(
                "{what}: getpeername call {call} of {times} showed [{seen}], expected [{want}]"
            ));
        }
    }
    Ok(())
}
