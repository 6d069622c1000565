//! accept-waiting-at-load: an accept() already asleep on a listener when
//! toa.ko loads (and arms that listener) took the listener's table for its
//! new socket before it slept. The one connection it returns keeps the
//! kernel's answer for its whole life, from accept() and from every
//! getpeername(), never a mix (the limit toa_listeners.c states). A second
//! listen() on the live listener changes nothing, and the next accept()
//! gets the client.

use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::loopback;
use super::{load_again, quiet_kernel, rmmod, Shared};
use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "accept-waiting-at-load";
/// The scenario's own listener (others use 8090-8094).
const PORT: u16 = 8096;

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let mut log = Cursor::at_end()?;
    let outcome = attack(lab, ctx);
    let restored = load_again(lab, ctx).context("loading the module again");
    std::thread::sleep(Duration::from_millis(300));
    let detail = quiet_kernel(&log.read_new()?, outcome)?;
    restored?;
    Ok(detail)
}

/// A blocking accept() with an address buffer, as a simple server makes.
fn blocking_accept(fd: i32) -> std::result::Result<(OwnedFd, PeerName), String> {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let n = unsafe {
        libc::accept(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: accept returned a new descriptor nothing else owns.
    Ok((
        unsafe { OwnedFd::from_raw_fd(n) },
        PeerName::from_storage(&ss, len),
    ))
}

fn attack(lab: &Lab, ctx: &Shared) -> Result<String> {
    let wait = lab.step_timeout;
    rmmod(lab).context("rmmod before opening the listener")?;
    let l = loopback::wildcard_v4(PORT, "the scenario's listener :8096")?;
    let raw = l.as_raw_fd();
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    let waiter = std::thread::spawn(move || blocking_accept(raw));
    // Let it fall asleep in inet_csk_accept() before the module arrives.
    std::thread::sleep(Duration::from_millis(300));
    load_again(lab, ctx).context("insmod with an accept() waiting")?;

    let first = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.70:40700"));
    let c1 = lab
        .connect_to(&first, PORT)
        .context("the TOA connection for the waiting accept()")?;
    let proxy = PeerName::v4(c1.local());
    let (fd1, shown) = waiter
        .join()
        .map_err(|_| lab_err!("the accept() thread panicked"))?
        .map_err(|e| lab_err!("the waiting accept(): {e}"))?;
    if shown != proxy {
        return Err(lab_err!(
            "the accept() that waited across insmod showed [{shown}]: expected the kernel's [{proxy}] (its socket took the listener's table before the module armed it)"
        ));
    }
    loopback::peer_is(
        fd1.as_fd(),
        proxy,
        2,
        "the connection the waiting accept() returned",
    )?;

    // listen() again on the live listener: no second arming, no change.
    loopback::listen(l.as_fd(), 8).map_err(|e| lab_err!("listen() again: {e}"))?;
    let second = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.71:40701"));
    let want = PeerName::v4("198.51.100.71:40701".parse().expect("valid"));
    let c2 = lab
        .connect_to(&second, PORT)
        .context("a TOA connection after the waiting accept()")?;
    let (fd2, shown2) = loopback::accept(&l, wait).context("accept() after insmod")?;
    if shown2 != want {
        return Err(lab_err!(
            "an accept() made after insmod showed [{shown2}], expected the client [{want}]"
        ));
    }
    loopback::peer_is(fd2.as_fd(), want, 2, "the connection accepted after insmod")?;
    drop(fd1);
    drop(fd2);
    c1.close().context("closing the first connection")?;
    c2.close().context("closing the second connection")?;
    Ok(format!(
        "the accept() asleep across insmod returned [{proxy}] from accept and twice from getpeername (the kernel's, never a mix); listen() again on the live listener; the next accept() showed [{want}] and getpeername twice"
    ))
}
