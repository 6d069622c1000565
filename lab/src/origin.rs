//! The origin server: the application whose view of its peers toa.ko changes.
//!
//! One thread per listening socket. Per connection it calls accept() with an
//! address buffer and getpeername() exactly once each (the module counts
//! both), reads one request line, answers, and closes, unless told to hold
//! the socket for the module-reload check.

use std::io::{Read, Write};
use std::mem::{size_of, zeroed};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{lab_err, Result};
use crate::sockaddr::PeerName;

pub const REPLY: &[u8] = b"ok\n";
/// How often listener threads look at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// AF_INET on port 8080.
    V4,
    /// AF_INET6, dual-stack (IPV6_V6ONLY=0), on port 8081.
    V6,
}

impl Listener {
    pub fn port(self) -> u16 {
        match self {
            Listener::V4 => 8080,
            Listener::V6 => 8081,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Listener::V4 => "AF_INET listener :8080",
            Listener::V6 => "AF_INET6 listener :8081",
        }
    }
}

/// What the origin saw on one accepted connection.
#[derive(Debug)]
pub struct Report {
    pub listener: Listener,
    pub accept: std::result::Result<PeerName, String>,
    pub peername: std::result::Result<PeerName, String>,
    pub request: Vec<u8>,
    /// Reading the request or writing the reply failed.
    pub io_error: Option<String>,
    /// The still-open socket, when holding was requested.
    pub held: Option<OwnedFd>,
}

pub struct Origin {
    reports: Receiver<Report>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// State the listener threads share with the scenario runner.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    hold: AtomicBool,
    /// Connections accepted whose report has not been sent yet.
    busy: AtomicUsize,
    /// Bumped to make every thread close its listener and listen anew.
    generation: AtomicU64,
    /// Listeners opened again so far (one per thread per generation).
    relistened: AtomicU64,
}

impl Origin {
    /// Binds both listeners before returning, so a bind failure is reported
    /// here rather than as mysterious connection resets later.
    pub fn start(io_timeout: Duration) -> Result<Origin> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for which in [Listener::V4, Listener::V6] {
            let fd = listen(which)?;
            let (tx, shared) = (tx.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("origin-{}", which.port()))
                .spawn(move || serve(which, fd, tx, &shared, io_timeout))
                .map_err(|e| lab_err!("spawning the origin thread: {e}"))?;
            threads.push(handle);
        }
        Ok(Origin {
            reports: rx,
            shared,
            threads,
        })
    }

    /// Closes both listeners and opens them again, as restarting a service
    /// does: toa.ko takes over listeners that listen() after it loaded.
    pub fn relisten(&self, timeout: Duration) -> Result<()> {
        let want = self.shared.relistened.load(Ordering::SeqCst) + self.threads.len() as u64;
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while self.shared.relistened.load(Ordering::SeqCst) < want {
            if Instant::now() > deadline {
                return Err(lab_err!(
                    "the origin did not open its listeners again within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// While set, connections stay open and their sockets come back in the
    /// report instead of being closed after the reply.
    pub fn set_hold(&self, hold: bool) {
        self.shared.hold.store(hold, Ordering::SeqCst);
    }

    pub fn next_report(&self, timeout: Duration) -> Result<Report> {
        match self.reports.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(lab_err!(
                "the origin reported no accepted connection within {timeout:?}"
            )),
            Err(RecvTimeoutError::Disconnected) => Err(lab_err!("the origin threads have stopped")),
        }
    }

    /// Discards reports nobody waited for (after a failed scenario), so the
    /// next scenario does not read a stale one. Returns how many.
    pub fn drain(&self) -> usize {
        self.reports.try_iter().count()
    }

    /// After a failed scenario the origin may still be inside a connection
    /// (e.g. waiting out its read timeout); wait for it, up to `limit`, then
    /// discard what it reports, so the next scenario starts clean.
    pub fn settle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        // One accept poll interval first: a connection still in the accept
        // queue is not counted as busy yet.
        std::thread::sleep(ACCEPT_POLL * 2);
        while self.shared.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.drain()
    }

    pub fn shutdown(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
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

/// A wildcard listener: the dual-stack one must be bound to `::` to see
/// IPv4 clients at all, and the IPv4 one follows for symmetry.
fn listen(which: Listener) -> Result<OwnedFd> {
    let family = match which {
        Listener::V4 => libc::AF_INET,
        Listener::V6 => libc::AF_INET6,
    };
    let ctx = |what: &str| lab_err!("{}: {}", which.name(), last_error(what));
    // SAFETY: socket() returns a new descriptor or -1.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(ctx("socket"));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(|e| lab_err!("{e}"))?;
    // SAFETY (both arms): zeroed sockaddr structs are valid; bind reads
    // exactly the length passed.
    let rc = match which {
        Listener::V4 => {
            let mut sin: libc::sockaddr_in = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = which.port().to_be();
            unsafe {
                libc::bind(
                    raw,
                    &sin as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        Listener::V6 => {
            set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)
                .map_err(|e| lab_err!("{}: IPV6_V6ONLY=0: {e}", which.name()))?;
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = which.port().to_be();
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

enum Accepted {
    Connection(OwnedFd, PeerName),
    Nothing,
    Failed(String),
}

fn accept_one(listener: &OwnedFd) -> Accepted {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, ACCEPT_POLL.as_millis() as i32) } <= 0 {
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

fn serve(
    which: Listener,
    mut listener: OwnedFd,
    reports: Sender<Report>,
    shared: &Shared,
    io_timeout: Duration,
) {
    let mut generation = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = shared.generation.load(Ordering::SeqCst);
        if now != generation {
            generation = now;
            // The port is free again once the old listener is closed.
            drop(listener);
            listener = match listen(which) {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("toa-lab: {}: listening again: {e}", which.name());
                    return;
                }
            };
            shared.relistened.fetch_add(1, Ordering::SeqCst);
        }
        let report = match accept_one(&listener) {
            Accepted::Nothing => continue,
            Accepted::Failed(e) => Report {
                listener: which,
                accept: Err(e),
                peername: Err("not called: accept failed".into()),
                request: Vec::new(),
                io_error: None,
                held: None,
            },
            Accepted::Connection(fd, accepted) => {
                shared.busy.fetch_add(1, Ordering::SeqCst);
                let peername = getpeername(fd.as_fd());
                let mut stream = TcpStream::from(fd);
                let mut request = Vec::new();
                let io_error = exchange(&mut stream, &mut request, io_timeout).err();
                let held = shared
                    .hold
                    .load(Ordering::SeqCst)
                    .then(|| OwnedFd::from(stream));
                // Without holding, `stream` was dropped above: the socket is
                // closed before the report goes out, so the reader knows
                // the origin's FIN is on its way.
                Report {
                    listener: which,
                    accept: Ok(accepted),
                    peername,
                    request,
                    io_error,
                    held,
                }
            }
        };
        let was_busy = report.accept.is_ok();
        let sent = reports.send(report);
        if was_busy {
            shared.busy.fetch_sub(1, Ordering::SeqCst);
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Reads one request line and writes the reply.
fn exchange(
    stream: &mut TcpStream,
    request: &mut Vec<u8>,
    timeout: Duration,
) -> std::result::Result<(), String> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("setting socket timeouts: {e}"))?;
    let mut buf = [0u8; 512];
    while !request.contains(&b'\n') {
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("peer closed after {} request bytes", request.len())),
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    stream
        .write_all(REPLY)
        .map_err(|e| format!("writing the reply: {e}"))
}
