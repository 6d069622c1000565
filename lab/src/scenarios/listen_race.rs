//! listen-connect-race: connect() and listen() on one AF_INET6 socket at
//! once, connect() to an IPv4 listener through `::ffff:127.0.0.1` (the
//! mapped path switches the socket's address-family operations mid-call).
//! Whatever the module does at listen() must not leave a socket half
//! listener, half client: exactly one call wins, the loser fails with the
//! kernel's usual error, and the winner's socket works.
//!
//! TCG rarely lands in the window that matters, so the race is also made
//! wide with the test-only hooks module: connect() is held with the socket
//! locked, in tcp_v6_connect() before it installs anything and in
//! tcp_v4_connect() with `ipv6_mapped` installed, while listen() is called
//! on the same socket. Arming at listen() before the lock and the state
//! check (a probe on inet_listen) armed the connecting socket in the first
//! case and could overwrite the mapped operations in the second; listen()
//! must wait for the lock and lose, and arm nothing (`listen_armed`).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::lab_hooks::Hooks;
use super::loopback;
use crate::error::{lab_err, Context, Result};
use crate::lab::Lab;
use crate::sockaddr::PeerName;

const ITERATIONS: u32 = 2000;
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// listen() on a socket that is connecting or connected.
const LISTEN_LOST: i32 = libc::EINVAL;
/// connect() on a listening socket.
const CONNECT_LOST: i32 = libc::EISCONN;
/// Not yet written by the thread.
const PENDING: i32 = -1;

/// What the two threads share for one round.
struct Round {
    fd: AtomicI32,
    /// 0 or the errno of connect() and of listen().
    connect: AtomicI32,
    listen: AtomicI32,
    start: Barrier,
    end: Barrier,
    stop: AtomicBool,
}

fn errno(r: std::io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn name(errno: i32) -> String {
    match errno {
        0 => "success".into(),
        PENDING => "no answer".into(),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

/// One thread's part: wait for the round, make its call, report.
fn racer(round: &Round, call: impl Fn(BorrowedFd<'_>) -> std::io::Result<()>, out: &AtomicI32) {
    loop {
        round.start.wait();
        if round.stop.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the main thread keeps the descriptor open until `end`.
        let fd = unsafe { BorrowedFd::borrow_raw(round.fd.load(Ordering::SeqCst)) };
        out.store(errno(call(fd)), Ordering::SeqCst);
        round.end.wait();
    }
}

/// Where connect() is held in the widened rounds (one round each), and how long.
const HELD_IN: [&str; 2] = ["tcp_v6_connect", "tcp_v4_connect"];
const HOLD_MS: u32 = 1000;

pub fn run(lab: &Lab) -> Result<String> {
    let raced = race(lab)?;
    let held = held(lab)?;
    Ok(format!("{raced}; {held}"))
}

fn race(lab: &Lab) -> Result<String> {
    let target = loopback::listener(loopback::V4)?;
    let to = loopback::local_addr(&target)?;
    let round = Arc::new(Round {
        fd: AtomicI32::new(-1),
        connect: AtomicI32::new(PENDING),
        listen: AtomicI32::new(PENDING),
        start: Barrier::new(3),
        end: Barrier::new(3),
        stop: AtomicBool::new(false),
    });
    let threads = [true, false].map(|connects| {
        let round = round.clone();
        std::thread::spawn(move || {
            if connects {
                racer(&round, |fd| loopback::connect6(fd, to), &round.connect);
            } else {
                racer(&round, |fd| loopback::listen(fd, 8), &round.listen);
            }
        })
    });
    let outcome = rounds(lab, &round, &target, to);
    round.stop.store(true, Ordering::SeqCst);
    round.start.wait();
    for t in threads {
        t.join().map_err(|_| lab_err!("a racing thread panicked"))?;
    }
    outcome
}

fn rounds(
    lab: &Lab,
    round: &Round,
    target: &std::net::TcpListener,
    to: SocketAddr,
) -> Result<String> {
    let wait = lab.step_timeout;
    let target = std::os::fd::OwnedFd::from(
        target
            .try_clone()
            .map_err(|e| lab_err!("duplicating the target listener: {e}"))?,
    );
    let mapped = mapped(to);
    let want_peer = PeerName::v6(mapped);
    let began = Instant::now();
    let (mut connected, mut listened, mut done) = (0u32, 0u32, 0u32);
    while done < ITERATIONS && began.elapsed() < TIME_LIMIT {
        done += 1;
        let sock = loopback::tcp_socket(libc::AF_INET6)?;
        round.fd.store(sock.as_raw_fd(), Ordering::SeqCst);
        round.connect.store(PENDING, Ordering::SeqCst);
        round.listen.store(PENDING, Ordering::SeqCst);
        round.start.wait();
        round.end.wait();
        let (c, l) = (
            round.connect.load(Ordering::SeqCst),
            round.listen.load(Ordering::SeqCst),
        );
        let at = format!("round {done}");
        match (c, l) {
            (0, LISTEN_LOST) => {
                connected += 1;
                let (server, _) = loopback::accept(&target, wait)
                    .context(format!("{at}: accepting the connection that won"))?;
                loopback::ping(&sock, &server, wait)
                    .context(format!("{at}: the connection that won"))?;
                loopback::peer_is(sock.as_fd(), want_peer, 1, &at)?;
                drop(server);
            }
            (CONNECT_LOST, 0) => {
                listened += 1;
                let bound = loopback::sockname(sock.as_fd())?;
                let port = bound
                    .addr
                    .map(|a| a.port())
                    .ok_or_else(|| lab_err!("{at}: the listener that won is bound to [{bound}]"))?;
                let dial = SocketAddr::new(loopback::V4, port);
                let client = TcpStream::connect_timeout(&dial, wait)
                    .map_err(|e| lab_err!("{at}: connecting to the listener that won: {e}"))?;
                let (_child, accepted) = loopback::accept(&sock, wait)
                    .context(format!("{at}: accepting on the listener that won"))?;
                let from = client
                    .local_addr()
                    .map_err(|e| lab_err!("{at}: getsockname: {e}"))?;
                let want = PeerName::v6(SocketAddr::new(
                    match from.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
                        IpAddr::V6(v6) => v6.into(),
                    },
                    from.port(),
                ));
                if accepted != want {
                    return Err(lab_err!(
                        "{at}: the listener that won accepted [{accepted}], expected [{want}]"
                    ));
                }
            }
            (0, 0) => {
                return Err(lab_err!(
                    "{at}: both connect() and listen() succeeded on one socket"
                ))
            }
            _ => {
                return Err(lab_err!(
                    "{at}: connect() to {mapped}: {}; listen(): {}; expected one to succeed and the other to fail with {} (connect) or {} (listen)",
                    name(c),
                    name(l),
                    name(CONNECT_LOST),
                    name(LISTEN_LOST)
                ))
            }
        }
    }
    Ok(format!(
        "{done} rounds in {:.1} s: connect() won {connected} (listen: {}), listen() won {listened} (connect: {}); every winner worked",
        began.elapsed().as_secs_f64(),
        name(LISTEN_LOST),
        name(CONNECT_LOST)
    ))
}

/// listen() while connect() is held with the socket locked, mapped
/// operations installed: listen() must wait for the lock and fail, and the
/// connection must work as an IPv4 one.
fn held(lab: &Lab) -> Result<String> {
    let hooks = Hooks::load()?;
    let target = loopback::listener(loopback::V4)?;
    let to = loopback::local_addr(&target)?;
    let target = std::os::fd::OwnedFd::from(
        target
            .try_clone()
            .map_err(|e| lab_err!("duplicating the target listener: {e}"))?,
    );
    let mapped = mapped(to);
    let mut waited = Vec::new();
    for held_in in HELD_IN {
        let at = format!("connect() held in {held_in}()");
        let armed_before = listen_armed()?;
        let sock = loopback::tcp_socket(libc::AF_INET6)?;
        let raw = sock.as_raw_fd();
        let (connected, listened, state) = std::thread::scope(|s| -> Result<_> {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
            let connecting = s.spawn(move || -> i32 {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
                if tid_tx.send(tid).is_err() || !go_rx.recv().unwrap_or(false) {
                    return PENDING;
                }
                // SAFETY: the descriptor stays open until the scope ends.
                let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                errno(loopback::connect6(fd, to))
            });
            // Armed before connect() starts: a window left from the round
            // before must not be taken for this one.
            let armed = tid_rx
                .recv()
                .map_err(|_| lab_err!("{at}: the connecting thread did not start"))
                .and_then(|tid| hooks.delay_task(held_in, tid, HOLD_MS));
            let _ = go_tx.send(armed.is_ok());
            let listened = armed.and_then(|()| {
                hooks.wait_for(
                    Duration::from_secs(10),
                    "connect() reaching the hold",
                    |st| st.window("task").0 != 0,
                )
            });
            let listened = listened.map(|_| errno(loopback::listen(sock.as_fd(), 8)));
            let state = hooks.state();
            let connected = connecting
                .join()
                .map_err(|_| lab_err!("{at}: the connecting thread panicked"))?;
            Ok((connected, listened?, state?))
        })?;
        let (begin, end) = state.window("task");
        if end == 0 || end < begin {
            return Err(lab_err!(
                "{at}: listen() returned while connect() was still held inside the socket lock ({}): it did not wait for the lock",
                name(listened)
            ));
        }
        if (connected, listened) != (0, LISTEN_LOST) {
            return Err(lab_err!(
                "{at} for {HOLD_MS} ms: connect() to {mapped}: {}; listen() meanwhile: {}; expected success and {}",
                name(connected),
                name(listened),
                name(LISTEN_LOST)
            ));
        }
        let (server, _) = loopback::accept(&target, lab.step_timeout)
            .context(format!("{at}: accepting the held connection"))?;
        loopback::ping(&sock, &server, lab.step_timeout)
            .context(format!("{at}: the held connection"))?;
        loopback::peer_is(sock.as_fd(), PeerName::v6(mapped), 1, &at)?;
        let armed = listen_armed()? - armed_before;
        if armed != 0 {
            return Err(lab_err!(
                "{at}: listen() failed with {} but listen_armed moved by {armed}: the connecting socket was armed",
                name(listened)
            ));
        }
        waited.push(format!("{held_in}() {} ms", (end - begin) / 1_000_000));
    }
    let _ = hooks.clear();
    Ok(format!(
        "connect() held in {}: listen() waited for the lock, failed with {} and armed nothing; every connection worked",
        waited.join(", "),
        name(LISTEN_LOST)
    ))
}

/// `to` as an AF_INET6 socket names it: IPv4 as `::ffff:a.b.c.d`.
fn mapped(to: SocketAddr) -> SocketAddr {
    match to.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), to.port()),
        IpAddr::V6(_) => to,
    }
}

fn listen_armed() -> Result<i128> {
    Ok(i128::from(
        crate::stats::read()?.get("listen_armed").unwrap_or(0),
    ))
}
