//! listen-before-load: operators install with their services up. toa.ko arms
//! the listeners that already exist when it loads, so new connections on
//! them show the client without a restart; connections accepted or queued
//! before the load keep the kernel's answer, whole (no call shows the client
//! on a socket that never had a record). A connection with a record still in
//! the accept queue survives rmmod and is then the kernel's again.

use std::os::fd::AsFd;

use super::loopback;
use super::{load_again, open_kept, quiet_kernel, rmmod, Kept, Shared};
use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::stats;
use crate::toa_option::{Toa, KIND_TOA};

/// The scenario's listener, which only accepts when told: connections wait
/// in its queue across insmod and rmmod.
const QUEUE_PORT: u16 = 8094;
/// The origin's two listeners and the scenario's own.
const LISTENERS_AT_LOAD: u64 = 3;
const ARMED_AT_LOAD: &str = "listen_armed_at_load";

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let mut log = Cursor::at_end()?;
    let outcome = steps(lab, ctx);
    // Whatever went wrong, the guest goes on with the module loaded as the
    // run began and the origin listening; listening anew also covers a
    // module that did not take over the listeners it found.
    let restored = load_again(lab, ctx)
        .and_then(|()| lab.origin.relisten(lab.step_timeout))
        .context("loading the module again");
    let said = log.read_new()?;
    let detail = quiet_kernel(&said, outcome)?;
    restored?;
    Ok(detail)
}

fn steps(lab: &Lab, ctx: &Shared) -> Result<String> {
    use Listener as L;
    use ProxyFamily as P;
    let wait = lab.step_timeout;
    rmmod(lab)?;
    lab.origin
        .relisten(wait)
        .context("the origin listening anew without the module")?;
    let queue = loopback::wildcard_v4(QUEUE_PORT, "the scenario's listener :8094")?;

    let accepted_before = ConnSpec::new(P::V4, L::V4, toa("198.51.100.50:40500"));
    let Kept {
        client: kept_client,
        fd: kept,
        proxy_src,
    } = open_kept(lab, &accepted_before, "insmod")?;
    let kept_proxy = PeerName::v4(proxy_src);

    let queued_spec = ConnSpec::new(P::V4, L::V4, toa("198.51.100.51:40501"));
    let queued_before = lab
        .connect_to(&queued_spec, QUEUE_PORT)
        .context(format!("TOA connection left queued on :{QUEUE_PORT}"))?;
    let queued_proxy = PeerName::v4(queued_before.local());
    loopback::readable(queue.as_fd(), wait).context(format!(
        "the connection queued on :{QUEUE_PORT} before insmod"
    ))?;

    load_again(lab, ctx)?;
    let snapshot = stats::read()?;
    let armed = stats::single(&snapshot, ARMED_AT_LOAD).map_err(|e| lab_err!("{e}"))?;
    if armed < LISTENERS_AT_LOAD {
        return Err(lab_err!(
            "{ARMED_AT_LOAD}: {armed}, but {LISTENERS_AT_LOAD} listeners were open at insmod (the origin's two and :{QUEUE_PORT})"
        ));
    }

    let mut shown = Vec::new();
    for (what, spec) in [
        (
            "IPv4 TOA on the AF_INET listener",
            ConnSpec::new(P::V4, L::V4, toa("198.51.100.52:40502")),
        ),
        (
            "IPv6 TOA on the AF_INET6 listener",
            ConnSpec::new(P::V6, L::V6, toa("[2001:db8::52]:40503")),
        ),
        (
            "IPv4 TOA on the dual-stack AF_INET6 listener",
            ConnSpec::new(P::V4, L::V6, toa("198.51.100.53:40504")),
        ),
    ] {
        let seen = lab
            .exercise(&spec)
            .context(format!("{what}, listening since before insmod"))?;
        shown.push(seen);
    }

    loopback::peer_is(
        kept.as_fd(),
        kept_proxy,
        2,
        "the TOA connection accepted before insmod",
    )?;
    let (fd, accepted) = loopback::accept(&queue, wait)
        .context(format!("accepting the connection queued on :{QUEUE_PORT}"))?;
    if accepted != queued_proxy {
        return Err(lab_err!(
            "the TOA connection queued before insmod: accept() showed [{accepted}], expected the kernel's [{queued_proxy}]"
        ));
    }
    loopback::peer_is(
        fd.as_fd(),
        queued_proxy,
        2,
        "the TOA connection queued before insmod",
    )?;
    drop(fd);
    queued_before
        .close()
        .context("closing the connection queued before insmod")?;
    drop(kept);
    kept_client
        .close()
        .context("closing the connection accepted before insmod")?;

    let queued_after = queued_across_rmmod(lab, &queue)?;

    load_again(lab, ctx)?;
    let again = lab
        .exercise(&ConnSpec::new(P::V4, L::V4, toa("198.51.100.55:40506")))
        .context("a TOA connection after the second insmod, listeners not reopened")?;
    Ok(format!(
        "{ARMED_AT_LOAD}: {armed}; on listeners opened before insmod: {}; accepted before insmod: [{kept_proxy}] twice; queued before insmod, accepted after: [{queued_proxy}] from accept and twice from getpeername; {queued_after}; loaded again: {again}",
        shown.join(", ")
    ))
}

/// A TOA connection the module took (a record) waits in the queue while
/// the module is unloaded; accepted afterwards it is the kernel's.
fn queued_across_rmmod(lab: &Lab, queue: &std::os::fd::OwnedFd) -> Result<String> {
    let wait = lab.step_timeout;
    let spec = ConnSpec::new(ProxyFamily::V4, Listener::V4, toa("198.51.100.54:40505"));
    let verdict = lab.verdict_at(&spec, QUEUE_PORT);
    if !matches!(verdict, crate::oracle::Verdict::Client { .. }) {
        return Err(lab_err!(
            "the module would not honour a TOA to :{QUEUE_PORT} ({verdict:?}): no record to keep across rmmod"
        ));
    }
    let before = stats::read()?;
    let conn = lab.connect_to(&spec, QUEUE_PORT).context(format!(
        "TOA connection queued on :{QUEUE_PORT} before rmmod"
    ))?;
    let proxy = PeerName::v4(conn.local());
    loopback::readable(queue.as_fd(), wait).context(format!(
        "the connection queued on :{QUEUE_PORT} before rmmod"
    ))?;
    let took = |s: &stats::Snapshot| {
        s.get("syn_recv_sock_toa").unwrap_or(0) > before.get("syn_recv_sock_toa").unwrap_or(0)
    };
    if !took(&stats::read_until(wait, took)?) {
        return Err(lab_err!(
            "syn_recv_sock_toa did not move for the TOA connection queued on :{QUEUE_PORT}: the module did not take over a listener that was open when it loaded"
        ));
    }
    rmmod(lab).context("rmmod with a TOA connection in an accept queue")?;
    let (fd, accepted) = loopback::accept(queue, wait).context(format!(
        "accepting the connection queued on :{QUEUE_PORT} after rmmod"
    ))?;
    if accepted != proxy {
        return Err(lab_err!(
            "the TOA connection queued across rmmod: accept() showed [{accepted}], expected the kernel's [{proxy}]"
        ));
    }
    loopback::peer_is(
        fd.as_fd(),
        proxy,
        2,
        "the TOA connection queued across rmmod",
    )?;
    drop(fd);
    conn.close()
        .context("closing the connection queued across rmmod")?;
    Ok(format!(
        "queued with a record across rmmod (rmmod succeeded), accepted after: [{proxy}]"
    ))
}
