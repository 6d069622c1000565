//! ktls: kernel TLS builds its socket function table, once per address
//! family, from the first socket that takes `TCP_ULP "tls"`, and gives that
//! table to every later one. With a plain socket first, a TOA socket taking
//! the ULP afterwards lost the module's getname (it showed the proxy: fail
//! open). With a TOA socket first, kTLS kept the module's getname for good,
//! and after rmmod every kTLS socket's getpeername jumped into freed module
//! text. Now: both orders show the client on TOA sockets and the loopback
//! peer on plain ones, and once one of its sockets took a ULP the module
//! stays loaded (rmmod fails, the kernel log says "toa: pinned").
//!
//! The module cannot be unloaded afterwards, so this scenario runs alone,
//! in a lab run of its own after everything that unloads it (`--only ktls`).
//!
//! A kernel with kTLS built in (no tls.ko) builds its tables once per boot:
//! only the order that used to crash, TOA socket first, is checked there.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::loopback::{self, Pair};
use super::{open_kept, quiet_kernel, Kept, MODULE_NAME};
use crate::error::{lab_err, Context, Result};
use crate::kmsg::Cursor;
use crate::lab::{expected_peer, ConnSpec, Lab, ProxyFamily};
use crate::oracle::Verdict;
use crate::origin::Listener;
use crate::sockaddr::PeerName;
use crate::system;
use crate::toa_option::{Toa, KIND_TOA};

pub const NAME: &str = "ktls";
/// Where the guest image keeps the booted kernel's tls.ko (not preloaded).
const TLS_KO: &str = "/lib/modules/tls.ko";
const TLS: &str = "tls";
/// The ULPs the kernel offers, loaded or built in.
const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";
/// A kTLS socket holds tls.ko until it is destroyed, which may trail close().
const UNLOAD_WAIT: Duration = Duration::from_secs(5);
const PINNED: &str = "toa: pinned";

/// One address family: kTLS keeps a table for each.
struct Family {
    name: &'static str,
    proxy: ProxyFamily,
    listener: Listener,
    loopback: std::net::IpAddr,
}

const FAMILIES: [Family; 2] = [
    Family {
        name: "AF_INET",
        proxy: ProxyFamily::V4,
        listener: Listener::V4,
        loopback: loopback::V4,
    },
    Family {
        name: "AF_INET6",
        proxy: ProxyFamily::V6,
        listener: Listener::V6,
        loopback: loopback::V6,
    },
];

impl Family {
    fn toa(&self, n: u16) -> ConnSpec {
        let client = match self.proxy {
            ProxyFamily::V4 => format!("198.51.100.60:{}", 40600 + n),
            ProxyFamily::V6 => format!("[2001:db8::60]:{}", 40600 + n),
        };
        ConnSpec::new(
            self.proxy,
            self.listener,
            Some(Toa::new(KIND_TOA, client.parse().expect("valid address"))),
        )
    }
}

/// How the kernel offers kTLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// tls.ko, loaded and unloaded here: fresh tables each time.
    Module,
    BuiltIn,
}

/// How this kernel offers kTLS; None: not at all (built without CONFIG_TLS).
fn tls_offered() -> Option<Tls> {
    if Path::new(TLS_KO).exists() {
        return Some(Tls::Module);
    }
    let ulps = std::fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
    ulps.split_whitespace()
        .any(|u| u == TLS)
        .then_some(Tls::BuiltIn)
}

/// Why the scenario cannot run here: a kernel without kTLS (built without
/// CONFIG_TLS, as Debian 11's, or older than 4.13 without a backport, as
/// CentOS 7's 3.10) has no ULP that could copy toa's tables.
pub fn not_offered() -> Option<String> {
    if tls_offered().is_some() {
        return None;
    }
    let ulps = std::fs::read_to_string(AVAILABLE_ULP);
    let ulps = match &ulps {
        Ok(text) => format!("{AVAILABLE_ULP}: {:?}", text.trim()),
        // TCP ULPs came with 4.13.
        Err(_) => format!("no {AVAILABLE_ULP}: no TCP ULPs at all"),
    };
    Some(format!(
        "kTLS: no tls.ko and none built in ({ulps}): no ULP here can copy toa's tables"
    ))
}

pub fn run(lab: &Lab) -> Result<String> {
    let Some(tls) = tls_offered() else {
        return Err(lab_err!(
            "{}",
            not_offered().unwrap_or_else(|| "kTLS went away".to_string())
        ));
    };
    let mut log = Cursor::at_end()?;
    let mut said = Vec::new();
    let a = match tls {
        Tls::Module => plain_first(lab)
            .context("part A, a plain socket took tls first")
            .map(Some),
        Tls::BuiltIn => Ok(None),
    };
    said.extend(log.read_new()?);
    // Part B also runs after a failed part A: each order is its own finding.
    let b = toa_first(lab, tls, &mut log, &mut said).context("part B, a TOA socket took tls first");
    said.extend(log.read_new()?);
    let outcome = match (a, b) {
        (Ok(Some(a)), Ok(b)) => Ok(format!("A: {a}; B: {b}")),
        (Ok(None), Ok(b)) => Ok(format!(
            "kTLS built in, its tables built by this boot's first kTLS socket: part B only: {b}"
        )),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(lab_err!("{a}; {b}")),
    };
    quiet_kernel(&said, outcome)
}

/// Whether toa_stats says the module is pinned (`pinned : 1`).
fn pinned_now() -> bool {
    crate::stats::read()
        .ok()
        .and_then(|s| s.get("pinned"))
        .is_some_and(|v| v == 1)
}

/// tls.ko loaded anew, so that its tables are built by the next socket.
fn fresh_tls(tls: Tls) -> Result<()> {
    if tls == Tls::BuiltIn {
        return Ok(());
    }
    if system::module_loaded(TLS) {
        unload_tls().context("tls.ko was loaded before the scenario")?;
    }
    system::insmod(Path::new(TLS_KO), &[])
}

fn unload_tls() -> Result<()> {
    let deadline = Instant::now() + UNLOAD_WAIT;
    loop {
        match system::run("rmmod", &[TLS]) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A TOA connection kept by the origin, and what its socket must show.
fn kept_toa<'l>(lab: &'l Lab, family: &Family, n: u16) -> Result<(Kept<'l>, PeerName)> {
    let spec = family.toa(n);
    let verdict = lab.verdict(&spec);
    if !matches!(verdict, Verdict::Client { .. }) {
        return Err(lab_err!(
            "the module would not honour the TOA on the {} ({verdict:?})",
            family.listener.name()
        ));
    }
    let kept = open_kept(lab, &spec, "TCP_ULP tls")?;
    let want = expected_peer(family.listener, verdict, kept.proxy_src);
    Ok((kept, want))
}

fn take_tls(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<()> {
    loopback::set_ulp(fd, TLS).map_err(|e| lab_err!("TCP_ULP \"tls\" on {what}: {e}"))
}

/// A plain loopback connection whose accepted socket took the ULP.
fn plain_tls(lab: &Lab, family: &Family) -> Result<(Pair, PeerName)> {
    let listener = loopback::listener(family.loopback)?;
    let pair = Pair::open(&listener, lab.step_timeout)?;
    take_tls(
        pair.server.as_fd(),
        &format!("a plain {} loopback socket", family.name),
    )?;
    let end = pair.client_end()?;
    if pair.accepted != end {
        return Err(lab_err!(
            "accept() on a plain {} loopback connection showed [{}], expected [{end}]",
            family.name,
            pair.accepted
        ));
    }
    Ok((pair, end))
}

fn close_kept(kept: Vec<Kept<'_>>) -> Result<()> {
    let mut first = Ok(());
    for Kept { client, fd, .. } in kept {
        drop(fd);
        let closed = client.close().context("closing a kTLS TOA connection");
        if first.is_ok() {
            first = closed;
        }
    }
    first
}

fn plain_first(lab: &Lab) -> Result<String> {
    fresh_tls(Tls::Module)?;
    let mut plain = Vec::new();
    let mut kept = Vec::new();
    let checked = (|| {
        for family in &FAMILIES {
            plain.push(plain_tls(lab, family)?);
        }
        let mut shown = Vec::new();
        for (n, family) in (0..).zip(&FAMILIES) {
            let (k, want) = kept_toa(lab, family, n)?;
            let what = format!("the {} TOA socket that took tls second", family.name);
            take_tls(k.fd.as_fd(), &what)?;
            kept.push(k);
            loopback::peer_is(kept[kept.len() - 1].fd.as_fd(), want, 2, &what)?;
            shown.push(format!("[{want}]"));
        }
        for (pair, end) in &plain {
            loopback::peer_is(pair.server.as_fd(), *end, 2, "a plain kTLS socket")?;
        }
        Ok(shown)
    })();
    let closed = close_kept(kept);
    drop(plain);
    let unloaded = unload_tls().context("rmmod tls after closing every kTLS socket");
    let shown = checked?;
    closed?;
    unloaded?;
    Ok(format!(
        "plain sockets took tls, then TOA sockets: they showed {} twice each; plain ones their loopback peers",
        shown.join(" and ")
    ))
}

fn toa_first(lab: &Lab, tls: Tls, log: &mut Cursor, said: &mut Vec<String>) -> Result<String> {
    // The chaos run before this one may have pinned the module already
    // (its kernel log line is then older than this scenario).
    let pinned_before = pinned_now();
    fresh_tls(tls)?;
    let mut plain = Vec::new();
    let mut kept = Vec::new();
    let checked = (|| {
        let mut shown = Vec::new();
        for (n, family) in (10..).zip(&FAMILIES) {
            let (k, want) = kept_toa(lab, family, n)?;
            let what = format!("the {} TOA socket that took tls first", family.name);
            take_tls(k.fd.as_fd(), &what)?;
            kept.push(k);
            loopback::peer_is(kept[kept.len() - 1].fd.as_fd(), want, 2, &what)?;
            shown.push(format!("[{want}]"));
        }
        for family in &FAMILIES {
            let (pair, end) = plain_tls(lab, family)?;
            loopback::peer_is(pair.server.as_fd(), end, 2, "a plain kTLS socket")?;
            plain.push((pair, end));
        }
        let refused = match system::run("rmmod", &[MODULE_NAME]) {
            Ok(()) => {
                lab.set_module_loaded(false);
                // A plain kTLS socket's getpeername would now run freed
                // module text: stop before the guest dies of it.
                return Err(lab_err!(
                    "rmmod toa succeeded while kTLS tables copied from a TOA socket exist; expected it to fail (the module pins itself)"
                ));
            }
            Err(e) if !system::module_loaded(MODULE_NAME) => {
                return Err(lab_err!("rmmod toa failed ({e}) yet the module is gone"));
            }
            Err(e) => e.to_string(),
        };
        said.extend(log.read_new()?);
        if !pinned_before && !said.iter().any(|l| l.starts_with(PINNED)) {
            return Err(lab_err!(
                "rmmod toa failed as it should, but the kernel log has no line starting with {PINNED:?}"
            ));
        }
        for family in &FAMILIES {
            let (pair, end) = plain_tls(lab, family)?;
            loopback::peer_is(
                pair.server.as_fd(),
                end,
                2,
                "a plain kTLS socket made after the refused rmmod",
            )?;
            plain.push((pair, end));
        }
        Ok((shown, refused))
    })();
    let closed = close_kept(kept);
    drop(plain);
    let unloaded = match tls {
        Tls::Module => unload_tls().map(|()| "; tls.ko unloaded after".to_string()),
        Tls::BuiltIn => Ok(String::new()),
    };
    let (shown, refused) = checked?;
    closed?;
    let tls = unloaded.unwrap_or_else(|e| format!("; tls.ko stays loaded ({e})"));
    Ok(format!(
        "TOA sockets took tls first and showed {}; plain ones their loopback peers; rmmod toa refused ({refused}) with {PINNED:?} logged; new plain kTLS sockets answered getpeername{tls}",
        shown.join(" and ")
    ))
}
