//! The origin server: the application whose view of its peers toa.ko changes.
//!
//! One thread per listening socket. Per connection it calls accept() with an
//! address buffer and getpeername() exactly once each (the module counts
//! both), reads one request line, answers, and closes, unless told to hold
//! the socket for the module-reload check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{lab_err, Result};
use crate::sockaddr::PeerName;
use crate::socket::{self, Accepted, ListenerFamily};

/// Callers ask the origin module for it, where it used to live.
pub use crate::socket::getpeername;

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

/// The listener of `which`, on its fixed port.
fn listen(which: Listener) -> Result<OwnedFd> {
    let family = match which {
        Listener::V4 => ListenerFamily::V4,
        Listener::V6 => ListenerFamily::DualStack,
    };
    socket::listen(family, which.port(), which.name())
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
        let report = match socket::accept(&listener, ACCEPT_POLL) {
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
                let peername = socket::getpeername(fd.as_fd());
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
