//! relisten-accepted: an accepted TOA socket disconnected with
//! `connect(AF_UNSPEC)` and made to listen again hands whatever the module
//! put in it to the children it accepts. Measured with per-socket tables on
//! 6.1: closing such a child WARNed from the module's destructor, and
//! closing one after `rmmod` panicked the kernel in freed module text. Now:
//! the children show their own peers, rmmod succeeds with one of them open,
//! closing it afterwards is quiet, and the module works when loaded again.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::loopback;
use super::{attack_then_restore, rmmod, Shared};
use crate::error::{lab_err, Context, Result};
use crate::lab::{expected_peer, ConnSpec, Lab, ProxyFamily};
use crate::oracle::Verdict;
use crate::origin::Listener;
use crate::toa_option::{Toa, KIND_TOA};

/// The scenario's own listener (kernel-socket uses 8090).
const PORT: u16 = 8093;
/// Socket destruction runs from softirq after close(); what it logs must be
/// in the kernel log before the scenario reads it.
const DESTROY_SETTLE: Duration = Duration::from_millis(300);

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let (detail, _) = attack_then_restore(lab, ctx, attack)?;
    let fresh = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.41:40401"));
    let shown = lab
        .exercise(&fresh)
        .context("a new TOA connection after insmod")?;
    Ok(format!(
        "{detail}; insmod again: new TOA connection {shown}; no WARN/BUG in the kernel log"
    ))
}

fn attack(lab: &Lab) -> Result<String> {
    let wait = lab.step_timeout;
    // listen() on the disconnected socket binds it again: to the port it
    // still holds, where the origin's listener (same wildcard address, no
    // SO_REUSEPORT) would make it fail with EADDRINUSE, or, where the
    // disconnect gave the port back (6.1 does), to a fresh ephemeral one. A
    // listener of the scenario's own, closed before the second listen(),
    // works either way: nothing else holds its port.
    let own = loopback::wildcard_v4(PORT, "the scenario's listener :8093")?;
    let spec = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.40:40400"));
    let verdict = lab.verdict_at(&spec, PORT);
    if !matches!(verdict, Verdict::Client { .. }) {
        return Err(lab_err!(
            "the module would not honour a TOA to :{PORT} ({verdict:?}): nothing to attack"
        ));
    }
    // The proxy's side is reset by the disconnect below and never closed.
    let proxied = lab
        .connect_to(&spec, PORT)
        .context(format!("TOA connection to :{PORT}"))?;
    let want = expected_peer(Listener::V4, verdict, proxied.local());
    let (fd, accepted) =
        loopback::accept(&own, wait).context(format!("accepting the TOA connection on :{PORT}"))?;
    if accepted != want {
        return Err(lab_err!(
            "accept() on the TOA connection showed [{accepted}], expected [{want}]"
        ));
    }
    loopback::peer_is(fd.as_fd(), want, 2, "the accepted TOA connection")?;
    drop(own);

    loopback::disconnect(fd.as_fd())?;
    loopback::listen(fd.as_fd(), 8).map_err(|e| {
        lab_err!("listen() on the disconnected TOA socket (its listener closed): {e}")
    })?;
    let bound = loopback::sockname(fd.as_fd())?;
    let port = bound
        .addr
        .map(|a| a.port())
        .ok_or_else(|| lab_err!("the re-listened socket is bound to [{bound}]"))?;
    let to = std::net::SocketAddr::new(loopback::V4, port);
    let child = |n: u8| -> Result<(std::net::TcpStream, OwnedFd)> {
        let client = std::net::TcpStream::connect_timeout(&to, wait)
            .map_err(|e| lab_err!("loopback connection {n} to the re-listened {to}: {e}"))?;
        let (server, accepted) = loopback::accept(&fd, wait)
            .context(format!("accepting loopback connection {n} on {to}"))?;
        let end = loopback::end_of(&client)?;
        if accepted != end {
            return Err(lab_err!(
                "child {n} of the re-listened TOA socket: accept() showed [{accepted}], expected its own peer [{end}]"
            ));
        }
        loopback::peer_is(server.as_fd(), end, 2, &format!("child {n}"))?;
        Ok((client, server))
    };
    let (client1, c1) = child(1)?;
    let (client2, c2) = child(2)?;

    loopback::abort(c1)?;
    drop(client1);
    std::thread::sleep(DESTROY_SETTLE);
    rmmod(lab).context("rmmod with a child of the re-listened TOA socket open")?;
    loopback::abort(c2)?;
    drop(client2);
    std::thread::sleep(DESTROY_SETTLE);
    drop(fd);
    Ok(format!(
        "accepted TOA socket showed [{want}], disconnected and listening again on :{port}; both loopback children showed their own peers; closed one, rmmod with the other open, closed it"
    ))
}
