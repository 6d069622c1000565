//! The test bench: the TUN device, the origin server, and one function that
//! drives a whole proxied connection through both and checks what the
//! application saw.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::error::{lab_err, Context, Result};
use crate::oracle::{self, Verdict};
use crate::origin::{self, Listener, Origin, Report};
use crate::sockaddr::PeerName;
use crate::stats::Ledger;
use crate::tcp_client::{OptionPlan, TcpClient};
use crate::toa_option::Toa;
use crate::trust::Trusted;
use crate::tun::{Addressing, Tun};

pub const TUN_NAME: &str = "toa0";
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PROXY_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A client reaching the origin directly, not through the proxy: the kernel
/// routes its replies into toa0 like the proxy's (same subnet).
pub const DIRECT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const PROXY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const DIRECT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
pub const REQUEST: &[u8] = b"hello\n";

/// What accept()/getpeername() are supposed to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// toa.ko is loaded: TOA connections show the client in the option.
    Module,
    /// No module: every connection shows the proxy, TOA or not.
    Kernel,
    /// The eBPF mode is attached: as the module, except that an IPv6 client
    /// behind an AF_INET listener keeps the proxy (a getpeername program
    /// cannot change the answer's family).
    Bpf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFamily {
    V4,
    V6,
}

/// Who sends the packets: the L4 proxy, or a client that reaches the origin
/// directly (and forges a TOA, when it sends one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Proxy,
    Direct,
}

/// One connection: from which address family and sender, to which
/// listener, with which option bytes on which packet.
#[derive(Clone, Debug)]
pub struct ConnSpec {
    pub proxy: ProxyFamily,
    pub source: Source,
    pub listener: Listener,
    pub plan: OptionPlan,
}

impl ConnSpec {
    /// From the proxy, with `toa` (if any) on the handshake ACK.
    pub fn new(proxy: ProxyFamily, listener: Listener, toa: Option<Toa>) -> Self {
        ConnSpec {
            proxy,
            source: Source::Proxy,
            listener,
            plan: OptionPlan::toa(toa.as_ref()),
        }
    }

    /// The same connection sent by `source`.
    pub fn from(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    pub fn source_ip(&self) -> IpAddr {
        match (self.proxy, self.source) {
            (ProxyFamily::V4, Source::Proxy) => PROXY_V4.into(),
            (ProxyFamily::V4, Source::Direct) => DIRECT_V4.into(),
            (ProxyFamily::V6, Source::Proxy) => PROXY_V6.into(),
            (ProxyFamily::V6, Source::Direct) => DIRECT_V6.into(),
        }
    }
}

/// The address an application must see (DESIGN "What the application
/// sees"): the TOA client when the module honours one, otherwise the
/// packet's source; then shaped by the listener's family. An IPv4-mapped
/// IPv6 client is an IPv4 client.
pub fn expected_peer(listener: Listener, verdict: Verdict, source: SocketAddr) -> PeerName {
    let shown = match verdict {
        Verdict::Client { client, .. } => client,
        Verdict::Kernel(_) => source,
    };
    let shown = match shown.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), shown.port()),
            None => shown,
        },
        IpAddr::V4(_) => shown,
    };
    match (listener, shown.ip()) {
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
/// one so no 4-tuple meets a TIME_WAIT entry of a recent connection.
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
    /// What the module was expected to decide at the handshake.
    pub verdict: Verdict,
}

pub struct Lab {
    pub tun: Tun,
    pub origin: Origin,
    pub expect: Expect,
    pub step_timeout: Duration,
    /// The `formats` parameter the module was loaded with.
    pub formats: u32,
    ports: Ports,
    ledger: Cell<Ledger>,
    trusted: RefCell<Trusted>,
    /// Listener ports the module honours TOA on (`ports`); `None`: all.
    honoured: RefCell<Option<Vec<u16>>>,
    /// A scenario has unloaded the module for a while.
    unloaded: Cell<bool>,
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
            formats: oracle::ALL_FORMATS,
            ports: Ports::new(),
            ledger: Cell::new(Ledger::default()),
            trusted: RefCell::new(Trusted::everyone()),
            honoured: RefCell::new(None),
            unloaded: Cell::new(false),
        })
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.get()
    }

    /// The trusted list the module is believed to hold.
    pub fn trusted(&self) -> Trusted {
        self.trusted.borrow().clone()
    }

    /// Records that the module now holds `list` (after a successful write).
    pub fn set_trusted_model(&self, list: Trusted) {
        *self.trusted.borrow_mut() = list;
    }

    /// Records that the module now honours TOA on `ports` only (`None`: all).
    pub fn set_ports_model(&self, ports: Option<Vec<u16>>) {
        *self.honoured.borrow_mut() = ports;
    }

    /// Records whether toa.ko is loaded now (scenarios that rmmod it).
    pub fn set_module_loaded(&self, loaded: bool) {
        self.unloaded.set(!loaded);
    }

    /// Books `calls` more accept()/getpeername() calls on a connection that
    /// got `verdict` (for scenarios that call getpeername themselves).
    pub fn book_getnames(&self, verdict: Verdict, calls: u64) {
        self.book(|l| l.getnames(verdict, calls));
    }

    fn book(&self, update: impl FnOnce(&mut Ledger)) {
        let mut l = self.ledger.get();
        update(&mut l);
        self.ledger.set(l);
    }

    fn endpoints(&self, spec: &ConnSpec) -> (SocketAddr, SocketAddr) {
        let origin: IpAddr = match spec.proxy {
            ProxyFamily::V4 => ORIGIN_V4.into(),
            ProxyFamily::V6 => ORIGIN_V6.into(),
        };
        (
            SocketAddr::new(spec.source_ip(), self.ports.take()),
            SocketAddr::new(origin, spec.listener.port()),
        )
    }

    /// The handshake of `spec`, to `port` of the origin instead of its
    /// listener: for servers the origin does not run (the kernel's own).
    pub fn connect_to(&self, spec: &ConnSpec, port: u16) -> Result<TcpClient<'_>> {
        let (local, mut remote) = self.endpoints(spec);
        remote.set_port(port);
        TcpClient::connect(&self.tun, local, remote, &spec.plan, self.step_timeout)
            .context("handshake")
    }

    /// What the module decides for `spec` (the kernel's answer when no
    /// module is expected).
    pub fn verdict(&self, spec: &ConnSpec) -> Verdict {
        self.verdict_at(spec, spec.listener.port())
    }

    /// What the module decides for `spec` sent to `port` instead of its
    /// listener's (a listener the scenario opened itself).
    pub fn verdict_at(&self, spec: &ConnSpec, port: u16) -> Verdict {
        if self.expect == Expect::Kernel || self.unloaded.get() {
            return Verdict::Kernel(oracle::Kept::NoToa);
        }
        let trusted = self.trusted.borrow().allows(spec.source_ip());
        let honoured = self
            .honoured
            .borrow()
            .as_ref()
            .is_none_or(|ports| ports.contains(&port));
        let verdict = oracle::verdict(&spec.plan.ack, self.formats, honoured, trusted);
        match verdict {
            Verdict::Client { client, .. }
                if self.expect == Expect::Bpf
                    && spec.listener == Listener::V4
                    && matches!(client.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none()) =>
            {
                Verdict::Kernel(oracle::Kept::NoToa)
            }
            other => other,
        }
    }

    /// Handshake, request and reply; returns with both sides still open when
    /// the origin holds connections, otherwise with the origin side closed.
    pub fn open(&self, spec: &ConnSpec) -> Result<Held<'_>> {
        let stale = self.origin.drain();
        if stale > 0 {
            eprintln!("toa-lab: discarded {stale} stale origin report(s)");
        }
        let verdict = self.verdict(spec);
        let (local, remote) = self.endpoints(spec);
        let mut client =
            TcpClient::connect(&self.tun, local, remote, &spec.plan, self.step_timeout)
                .context("handshake")?;
        client.send(REQUEST).context("sending the request")?;
        self.book(|l| l.handshake(verdict));
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
        self.book(|l| l.getnames(verdict, calls));
        Ok(Held {
            client,
            report,
            verdict,
        })
    }

    /// A complete connection, closed on both sides; returns a description of
    /// what the application saw, or what differed from the expectation.
    pub fn exercise(&self, spec: &ConnSpec) -> Result<String> {
        let Held {
            client,
            report,
            verdict,
        } = self.open(spec)?;
        let local = client.local();
        client.close().context("closing")?;
        self.verify(spec, verdict, local, &report)
    }

    /// Checks one origin report against what `spec` and `verdict` imply.
    pub fn verify(
        &self,
        spec: &ConnSpec,
        verdict: Verdict,
        source: SocketAddr,
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
        let want = expected_peer(spec.listener, verdict, source);
        let accept = report.accept.clone().map_err(|e| lab_err!("origin: {e}"))?;
        let peer = report
            .peername
            .clone()
            .map_err(|e| lab_err!("origin: {e}"))?;
        if accept != want || peer != want {
            return Err(lab_err!(
                "expected accept=getpeername=[{want}], saw accept=[{accept}] getpeername=[{peer}] (sent from {source}, {verdict:?})"
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

    /// What the application sees for `spec` from `src`, all sources trusted.
    fn expected(spec: &ConnSpec, src: SocketAddr, expect: Expect) -> PeerName {
        let verdict = match expect {
            Expect::Kernel => Verdict::Kernel(oracle::Kept::NoToa),
            Expect::Module | Expect::Bpf => {
                oracle::verdict(&spec.plan.ack, oracle::ALL_FORMATS, true, true)
            }
        };
        expected_peer(spec.listener, verdict, src)
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
            expected(&v4v4, p4, m),
            PeerName::v4(sa("198.51.100.7:40001"))
        );
        let v6v6 = spec(
            ProxyFamily::V6,
            Listener::V6,
            Some(("[2001:db8::7]:40002", KIND_TOA)),
        );
        assert_eq!(
            expected(&v6v6, p6, m),
            PeerName::v6(sa("[2001:db8::7]:40002"))
        );
        let v4v6 = spec(
            ProxyFamily::V4,
            Listener::V6,
            Some(("198.51.100.7:40003", KIND_TOA)),
        );
        assert_eq!(
            expected(&v4v6, p4, m),
            PeerName::v6(sa("[::ffff:198.51.100.7]:40003"))
        );
        let v6v4 = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("[2001:db8::9]:40004", KIND_TOA)),
        );
        let got = expected(&v6v4, p4, m);
        assert_eq!(got, PeerName::v6(sa("[2001:db8::9]:40004")));
        assert_eq!(got.len, 28);
        let tencent = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("203.0.113.5:40005", KIND_TOA_TENCENT)),
        );
        assert_eq!(
            expected(&tencent, p4, m),
            PeerName::v4(sa("203.0.113.5:40005"))
        );
    }

    #[test]
    fn test_expected_peer_without_toa_or_module_is_proxy() {
        let p4 = sa("10.0.0.2:30000");
        let p6 = sa("[fd00::2]:30001");
        let none = spec(ProxyFamily::V4, Listener::V4, None);
        assert_eq!(expected(&none, p4, Expect::Module), PeerName::v4(p4));
        let with = spec(
            ProxyFamily::V4,
            Listener::V4,
            Some(("[2001:db8::9]:40004", KIND_TOA)),
        );
        assert_eq!(expected(&with, p4, Expect::Kernel), PeerName::v4(p4));
        let mapped = spec(
            ProxyFamily::V4,
            Listener::V6,
            Some(("198.51.100.7:1", KIND_TOA)),
        );
        assert_eq!(
            expected(&mapped, p4, Expect::Kernel),
            PeerName::v6(sa("[::ffff:10.0.0.2]:30000"))
        );
        let v6 = spec(ProxyFamily::V6, Listener::V6, None);
        assert_eq!(expected(&v6, p6, Expect::Module), PeerName::v6(p6));
    }

    #[test]
    fn test_mapped_client_is_an_ipv4_client() {
        let mapped = Verdict::Client {
            client: sa("[::ffff:198.51.100.7]:40003"),
            ipv6: true,
        };
        let p4 = sa("10.0.0.2:30000");
        assert_eq!(
            expected_peer(Listener::V4, mapped, p4),
            PeerName::v4(sa("198.51.100.7:40003"))
        );
        assert_eq!(
            expected_peer(Listener::V6, mapped, p4),
            PeerName::v6(sa("[::ffff:198.51.100.7]:40003"))
        );
    }

    #[test]
    fn test_untrusted_source_keeps_its_own_address() {
        let direct = spec(
            ProxyFamily::V6,
            Listener::V6,
            Some(("[2001:db8::7]:40002", KIND_TOA)),
        )
        .from(Source::Direct);
        assert_eq!(direct.source_ip(), IpAddr::from(DIRECT_V6));
        let trusted = Trusted::parse("fd00::2").unwrap();
        let verdict = oracle::verdict(
            &direct.plan.ack,
            oracle::ALL_FORMATS,
            true,
            trusted.allows(direct.source_ip()),
        );
        assert_eq!(verdict, Verdict::Kernel(oracle::Kept::Untrusted));
        let src = sa("[fd00::3]:30000");
        assert_eq!(
            expected_peer(direct.listener, verdict, src),
            PeerName::v6(src)
        );
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
