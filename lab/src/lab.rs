//! The test bench: the TUN device, the origin server, and one function that
//! drives a whole proxied connection through both and checks what the
//! application saw.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::error::{lab_err, Context, Result};
use crate::origin::{self, Listener, Origin, Report};
use crate::sockaddr::PeerName;
use crate::stats::Ledger;
use crate::tcp_client::TcpClient;
use crate::toa_option::Toa;
use crate::tun::{Addressing, Tun};

pub const TUN_NAME: &str = "toa0";
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PROXY_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const PROXY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const REQUEST: &[u8] = b"hello\n";

/// What accept()/getpeername() are supposed to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// toa.ko is loaded: TOA connections show the client in the option.
    Module,
    /// No module: every connection shows the proxy, TOA or not.
    Kernel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFamily {
    V4,
    V6,
}

/// One proxied connection: from which proxy address, to which listener,
/// carrying which TOA (if any) in the handshake-completing ACK.
#[derive(Clone, Copy, Debug)]
pub struct ConnSpec {
    pub proxy: ProxyFamily,
    pub listener: Listener,
    pub toa: Option<Toa>,
}

impl ConnSpec {
    pub fn new(proxy: ProxyFamily, listener: Listener, toa: Option<Toa>) -> Self {
        ConnSpec {
            proxy,
            listener,
            toa,
        }
    }
}

/// The address an application must see (DESIGN "What the application
/// sees"): the TOA client when the module is active and an option was sent,
/// otherwise the proxy; then shaped by the listener's family.
pub fn expected_peer(spec: &ConnSpec, proxy_src: SocketAddr, expect: Expect) -> PeerName {
    let shown = match (expect, spec.toa) {
        (Expect::Module, Some(toa)) => toa.client,
        _ => proxy_src,
    };
    match (spec.listener, shown.ip()) {
        (Listener::V4, IpAddr::V4(_)) => PeerName::v4(shown),
        // An AF_INET listener handed an IPv6 client gets a sockaddr_in6.
        (Listener::V4, IpAddr::V6(_)) => PeerName::v6(shown),
        (Listener::V6, IpAddr::V4(ip)) => PeerName::v6(SocketAddr::new(
            IpAddr::V6(ip.to_ipv6_mapped()),
            shown.port(),
        )),
        (Listener::V6, IpAddr::V6(_)) => PeerName::v6(shown),
    }
}

/// Ephemeral source ports for the simulated proxy. Each connection gets a new
/// one so no 4-tuple meets a TIME_WAIT entry of an earlier connection.
struct Ports {
    next: Cell<u16>,
}

impl Ports {
    const FIRST: u16 = 20000;
    const LAST: u16 = 59999;

    fn new() -> Self {
        // Vary the start between runs on a reused network namespace.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_micros())
            .unwrap_or(0)
            ^ std::process::id();
        let span = u32::from(Self::LAST - Self::FIRST);
        Ports {
            next: Cell::new(Self::FIRST + (seed % span) as u16),
        }
    }

    fn take(&self) -> u16 {
        let port = self.next.get();
        self.next.set(if port >= Self::LAST {
            Self::FIRST
        } else {
            port + 1
        });
        port
    }
}

/// A connection whose origin side stayed open (see `Origin::set_hold`).
pub struct Held<'t> {
    pub client: TcpClient<'t>,
    pub report: Report,
}

pub struct Lab {
    pub tun: Tun,
    pub origin: Origin,
    pub expect: Expect,
    pub step_timeout: Duration,
    ports: Ports,
    ledger: Cell<Ledger>,
}

impl Lab {
    pub fn setup(expect: Expect, step_timeout: Duration, trace: bool) -> Result<Lab> {
        let tun = Tun::create(TUN_NAME, trace).context("creating the TUN device")?;
        tun.configure(&Addressing {
            v4_cidr: "10.0.0.1/24",
            v6_cidr: "fd00::1/64",
        })
        .context(format!("configuring {}", tun.name()))?;
        let origin = Origin::start(step_timeout).context("starting the origin server")?;
        Ok(Lab {
            tun,
            origin,
            expect,
            step_timeout,
            ports: Ports::new(),
            ledger: Cell::new(Ledger::default()),
        })
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.get()
    }

    fn book(&self, update: impl FnOnce(&mut Ledger)) {
        let mut l = self.ledger.get();
        update(&mut l);
        self.ledger.set(l);
    }

    fn endpoints(&self, spec: &ConnSpec) -> (SocketAddr, SocketAddr) {
        let (proxy, origin): (IpAddr, IpAddr) = match spec.proxy {
            ProxyFamily::V4 => (PROXY_V4.into(), ORIGIN_V4.into()),
            ProxyFamily::V6 => (PROXY_V6.into(), ORIGIN_V6.into()),
        };
        (
            SocketAddr::new(proxy, self.ports.take()),
            SocketAddr::new(origin, spec.listener.port()),
        )
    }

    /// Handshake, request and reply; returns with both sides still open when
    /// the origin holds connections, otherwise with the origin side closed.
    pub fn open(&self, spec: &ConnSpec) -> Result<Held<'_>> {
        let stale = self.origin.drain();
        if stale > 0 {
            eprintln!("toa-lab: discarded {stale} stale origin report(s)");
        }
        let (local, remote) = self.endpoints(spec);
        let mut client = TcpClient::connect(
            &self.tun,
            local,
            remote,
            spec.toa.as_ref(),
            self.step_timeout,
        )
        .context("handshake")?;
        let toa = spec.toa.is_some();
        self.book(|l| {
            if toa {
                l.handshakes_toa += 1;
            } else {
                l.handshakes_no_toa += 1;
            }
            if spec.toa.is_some_and(|t| t.carries_ipv6()) {
                l.ipv6_toa += 1;
            }
        });
        client.send(REQUEST).context("sending the request")?;
        let reply = client.read_line().context("reading the reply")?;
        if reply != origin::REPLY {
            return Err(lab_err!(
                "reply: expected {:?}, got {:?}",
                String::from_utf8_lossy(origin::REPLY),
                String::from_utf8_lossy(&reply)
            ));
        }
        let report = self.origin.next_report(self.step_timeout).context(format!(
            "waiting for the origin to accept {local} -> {remote}"
        ))?;
        let calls = u64::from(report.accept.is_ok()) + u64::from(report.peername.is_ok());
        self.book(|l| {
            if toa {
                l.getname_on_toa += calls;
            } else {
                l.getname_on_no_toa += calls;
            }
        });
        Ok(Held { client, report })
    }

    /// A complete connection, closed on both sides; returns a description of
    /// what the application saw, or what differed from the expectation.
    pub fn exercise(&self, spec: &ConnSpec) -> Result<String> {
        let Held { client, report } = self.open(spec)?;
        let local = client.local();
        client.close().context("closing")?;
        self.verify(spec, local, &report)
    }

    /// Checks one origin report against what `spec` implies.
    pub fn verify(
        &self,
        spec: &ConnSpec,
        proxy_src: SocketAddr,
        report: &Report,
    ) -> Result<String> {
        if report.listener != spec.listener {
            return Err(lab_err!(
                "connection arrived on the {}, expected the {}",
                report.listener.name(),
                spec.listener.name()
            ));
        }
        if let Some(e) = &report.io_error {
            return Err(lab_err!("origin: {e}"));
        }
        if report.request != REQUEST {
            return Err(lab_err!(
                "origin read {:?}, expected {:?}",
                String::from_utf8_lossy(&report.request),
                String::from_utf8_lossy(REQUEST)
            ));
        }
        let want = expected_peer(spec, proxy_src, self.expect);
        let accept = report.accept.clone().map_err(|e| lab_err!("origin: {e}"))?;
        let peer = report
            .peername
            .clone()
            .map_err(|e| lab_err!("origin: {e}"))?;
        if accept != want || peer != want {
            return Err(lab_err!(
                "expected accept=getpeername=[{want}], saw accept=[{accept}] getpeername=[{peer}] (proxy {proxy_src})"
            ));
        }
        Ok(format!("accept=getpeername=[{want}]"))
    }
}

/// getpeername() on a socket kept open by the origin.
pub fn peer_of(fd: &std::os::fd::OwnedFd) -> Result<PeerName> {
    use std::os::fd::AsFd;
    origin::getpeername(fd.as_fd()).map_err(|e| lab_err!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toa_option::{KIND_TOA, KIND_TOA_TENCENT};

    fn spec(proxy: ProxyFamily, listener: Listener, toa: Option<(&str, u8)>) -> ConnSpec {
        ConnSpec::new(
            proxy,
            listener,
            toa.map(|(a, k)| Toa::new(k, a.parse().unwrap())),
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_expected_peer_module_table() {
        let m = Expect::Module;
        let p4 = sa("10.0.0.2:30000");
        let p6 = sa("[fd00::2]:30000");
        let v4v4 = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("198.51.100.7:40001", KIND_TOA)),
        );
        assert_eq!(
            expected_peer(&v4v4, p4, m),
            PeerName::v4(sa("198.51.100.7:40001"))
        );
        let v6v6 = spec(
            ProxyFamily::V6,
            Listener::V6,
            Some(("[2001:db8::7]:40002", KIND_TOA)),
        );
        assert_eq!(
            expected_peer(&v6v6, p6, m),
            PeerName::v6(sa("[2001:db8::7]:40002"))
        );
        let v4v6 = spec(
            ProxyFamily::V4,
            Listener::V6,
            Some(("198.51.100.7:40003", KIND_TOA)),
        );
        assert_eq!(
            expected_peer(&v4v6, p4, m),
            PeerName::v6(sa("[::ffff:198.51.100.7]:40003"))
        );
        let v6v4 = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("[2001:db8::9]:40004", KIND_TOA)),
        );
        let got = expected_peer(&v6v4, p4, m);
        assert_eq!(got, PeerName::v6(sa("[2001:db8::9]:40004")));
        assert_eq!(got.len, 28);
        let tencent = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("203.0.113.5:40005", KIND_TOA_TENCENT)),
        );
        assert_eq!(
            expected_peer(&tencent, p4, m),
            PeerName::v4(sa("203.0.113.5:40005"))
        );
    }

    #[test]
    fn test_expected_peer_without_toa_or_module_is_proxy() {
        let p4 = sa("10.0.0.2:30000");
        let p6 = sa("[fd00::2]:30001");
        let none = spec(ProxyFamily::V4, Listener::V4, None);
        assert_eq!(expected_peer(&none, p4, Expect::Module), PeerName::v4(p4));
        let with = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("[2001:db8::9]:40004", KIND_TOA)),
        );
        assert_eq!(expected_peer(&with, p4, Expect::Kernel), PeerName::v4(p4));
        let mapped = spec(
            ProxyFamily::V4,
            Listener::V6,
            Some(("198.51.100.7:1", KIND_TOA)),
        );
        assert_eq!(
            expected_peer(&mapped, p4, Expect::Kernel),
            PeerName::v6(sa("[::ffff:10.0.0.2]:30000"))
        );
        let v6 = spec(ProxyFamily::V6, Listener::V6, None);
        assert_eq!(expected_peer(&v6, p6, Expect::Module), PeerName::v6(p6));
    }

    #[test]
    fn test_ports_are_unique_and_wrap() {
        let ports = Ports::new();
        let a = ports.take();
        let b = ports.take();
        assert_ne!(a, b);
        ports.next.set(Ports::LAST);
        assert_eq!(ports.take(), Ports::LAST);
        assert_eq!(ports.take(), Ports::FIRST);
    }
}
