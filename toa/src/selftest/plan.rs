//! What the self-test will try, decided from the module's settings before
//! anything is created: addresses its trusted_proxies allow, a port its
//! `ports` allows, TOA layouts its `formats` accept, and what accept() and
//! getpeername() must return for each connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use toa_sim::sockaddr::PeerName;
use toa_sim::socket::ListenerFamily;
use toa_sim::toa_option::{Toa, KIND_TOA, KIND_TOA_TENCENT, KIND_TOA_V6_ALIBABA};
use toa_sim::trust::Trusted;

use crate::mode::Mode;

/// Benchmarking ranges (RFC 2544, RFC 5180): never routed, so they cannot
/// be mistaken for a real peer.
const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PROXY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SPARE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const PROXY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
const SPARE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 3);
/// The clients the TOA names: documentation addresses, distinct from the proxy.
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
/// The origin's port when every port honours TOA.
const DEFAULT_PORT: u16 = 8080;
/// The proxy's first source port; each check takes the next.
const FIRST_PROXY_PORT: u16 = 40001;

/// The settings the active mode runs with (toa.ko's defaults when none is
/// active: the self-test then shows that nothing rewrites).
pub struct Settings {
    pub trusted: Trusted,
    pub ports: String,
    pub formats: u32,
}

impl Settings {
    pub fn of(mode: &Mode) -> Result<Settings> {
        let (trusted, ports, formats) = match mode {
            Mode::None => {
                return Ok(Settings {
                    trusted: Trusted::everyone(),
                    ports: String::new(),
                    formats: 0xf,
                })
            }
            Mode::Kmod(l) => (
                l.trusted_proxies.clone().unwrap_or_default(),
                l.ports.clone().unwrap_or_default(),
                l.formats_mask(),
            ),
            Mode::Bpf(a) => (a.trusted_proxies.clone(), a.ports.clone(), a.formats),
        };
        let parsed = Trusted::parse(&trusted)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading trusted_proxies {trusted:?}"))?;
        Ok(Settings {
            trusted: parsed,
            ports,
            formats,
        })
    }
}

/// Which family the simulated proxy speaks to the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFamily {
    V4,
    V6,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub proxy: SocketAddr,
    pub origin: SocketAddr,
    pub listener: ListenerFamily,
    pub toa: Option<Toa>,
    /// What accept() and getpeername() must both return.
    pub expect: PeerName,
}

impl Check {
    /// What is being tried, for the report line.
    pub fn describe(&self) -> String {
        let listener = match self.listener {
            ListenerFamily::V4 => "AF_INET listener",
            ListenerFamily::DualStack => "dual-stack AF_INET6 listener",
        };
        let sent = self
            .toa
            .map_or_else(|| "no TOA".to_string(), |t| t.to_string());
        format!(
            "{listener} :{}, proxy {} sends {sent}",
            self.origin.port(),
            self.proxy.ip()
        )
    }
}

/// A check that cannot run under these settings, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: &'static str,
    pub why: String,
}

pub struct Plan {
    pub origin_v4: Ipv4Addr,
    pub origin_v6: Ipv6Addr,
    pub proxy_v4: Option<IpAddr>,
    pub proxy_v6: Option<IpAddr>,
    pub checks: Vec<Check>,
    pub skipped: Vec<Skipped>,
}

/// The first port `ports` ("80,443,8000-8099"; empty: all) allows.
fn first_port(ports: &str) -> Result<u16> {
    let Some(first) = ports.split(',').map(str::trim).find(|e| !e.is_empty()) else {
        return Ok(DEFAULT_PORT);
    };
    let low = first.split('-').next().unwrap_or(first);
    low.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("ports {ports:?} does not start with a port number"))
}

/// The TOA kind the module accepts for a client of this family, preferring
/// the common 254.
fn kind_for(formats: u32, ipv6: bool) -> Option<u8> {
    let choices: &[(u32, u8)] = if ipv6 {
        &[(0x2, KIND_TOA), (0x4, KIND_TOA_V6_ALIBABA)]
    } else {
        &[(0x1, KIND_TOA), (0x8, KIND_TOA_TENCENT)]
    };
    choices
        .iter()
        .find(|(bit, _)| formats & bit != 0)
        .map(|(_, k)| *k)
}

pub fn plan(s: &Settings) -> Result<Plan> {
    let port = first_port(&s.ports)?;
    let proxy_v4 = s.trusted.pick_source(PROXY_V4.into());
    let proxy_v6 = s.trusted.pick_source(PROXY_V6.into());
    // The origin must not hold the proxy's address.
    let origin_v4 = if proxy_v4 == Some(ORIGIN_V4.into()) {
        SPARE_V4
    } else {
        ORIGIN_V4
    };
    let origin_v6 = if proxy_v6 == Some(ORIGIN_V6.into()) {
        SPARE_V6
    } else {
        ORIGIN_V6
    };
    let mapped = |ip: Ipv4Addr| IpAddr::V6(ip.to_ipv6_mapped());

    let mut checks = Vec::new();
    let mut skipped = Vec::new();
    let mut source_port = FIRST_PROXY_PORT;
    let mut add = |name: &'static str,
                   fam: ProxyFamily,
                   listener,
                   client: Option<IpAddr>,
                   want_ip: Option<IpAddr>| {
        let (proxy_ip, origin_ip): (Option<IpAddr>, IpAddr) = match fam {
            ProxyFamily::V4 => (proxy_v4, origin_v4.into()),
            ProxyFamily::V6 => (proxy_v6, origin_v6.into()),
        };
        let Some(proxy_ip) = proxy_ip else {
            let family = if fam == ProxyFamily::V4 {
                "IPv4"
            } else {
                "IPv6"
            };
            skipped.push(Skipped {
                name,
                why: format!("trusted_proxies has no {family} network, so no {family} proxy may set a client address"),
            });
            return;
        };
        let toa = match client {
            None => None,
            Some(ip) => match kind_for(s.formats, ip.is_ipv6()) {
                Some(kind) => Some(Toa::new(kind, SocketAddr::new(ip, source_port + 1000))),
                None => {
                    skipped.push(Skipped {
                        name,
                        why: format!(
                            "formats {:#x} accepts no TOA with an {} client",
                            s.formats,
                            if ip.is_ipv6() { "IPv6" } else { "IPv4" }
                        ),
                    });
                    return;
                }
            },
        };
        let proxy = SocketAddr::new(proxy_ip, source_port);
        source_port += 1;
        // Without a TOA the kernel's own answer: the proxy.
        let shown = match (toa, want_ip) {
            (Some(t), Some(ip)) => SocketAddr::new(ip, t.client.port()),
            _ => SocketAddr::new(want_ip.unwrap_or(proxy_ip), proxy.port()),
        };
        let expect = match listener {
            ListenerFamily::V4 => PeerName::v4(shown),
            ListenerFamily::DualStack => PeerName::v6(shown),
        };
        checks.push(Check {
            name,
            proxy,
            origin: SocketAddr::new(origin_ip, port),
            listener,
            toa,
            expect,
        });
    };
    add(
        "v4-toa-on-inet",
        ProxyFamily::V4,
        ListenerFamily::V4,
        Some(CLIENT_V4.into()),
        Some(CLIENT_V4.into()),
    );
    add(
        "v6-toa-on-inet6",
        ProxyFamily::V6,
        ListenerFamily::DualStack,
        Some(CLIENT_V6.into()),
        Some(CLIENT_V6.into()),
    );
    add(
        "v4-toa-on-dual-stack",
        ProxyFamily::V4,
        ListenerFamily::DualStack,
        Some(CLIENT_V4.into()),
        Some(mapped(CLIENT_V4)),
    );
    add("no-toa-v4", ProxyFamily::V4, ListenerFamily::V4, None, None);
    add(
        "no-toa-v6",
        ProxyFamily::V6,
        ListenerFamily::DualStack,
        None,
        None,
    );
    // The kernel shows an IPv4 proxy on a dual-stack listener as mapped; the
    // no-TOA checks above use listeners of the proxy's own family.
    Ok(Plan {
        origin_v4,
        origin_v6,
        proxy_v4,
        proxy_v6,
        checks,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &str, ports: &str, formats: u32) -> Settings {
        Settings {
            trusted: Trusted::parse(trusted).unwrap(),
            ports: ports.into(),
            formats,
        }
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.checks.iter().map(|c| c.name).collect()
    }

    #[test]
    fn default_settings_run_every_check() {
        let p = plan(&settings("", "", 0xf)).unwrap();
        assert_eq!(
            names(&p),
            [
                "v4-toa-on-inet",
                "v6-toa-on-inet6",
                "v4-toa-on-dual-stack",
                "no-toa-v4",
                "no-toa-v6"
            ]
        );
        assert!(p.skipped.is_empty());
        let c = &p.checks[0];
        assert_eq!(
            c.toa.unwrap().encode(),
            [254, 8, 0xa0, 0x29, 198, 51, 100, 7],
            "port 41001 is 0xa029"
        );
        assert_eq!(c.expect.to_string(), "AF_INET 198.51.100.7:41001 len=16");
        assert_eq!(c.origin.to_string(), "198.18.0.1:8080");
        assert_eq!(
            p.checks[1].expect.to_string(),
            "AF_INET6 [2001:db8::7]:41002 len=28"
        );
        assert_eq!(p.checks[1].toa.unwrap().kind, 254);
        assert_eq!(
            p.checks[2].expect.to_string(),
            "AF_INET6 [::ffff:198.51.100.7]:41003 len=28"
        );
        assert_eq!(
            p.checks[3].expect.to_string(),
            "AF_INET 198.18.0.2:40004 len=16"
        );
        assert_eq!(
            p.checks[4].expect.to_string(),
            "AF_INET6 [2001:2::2]:40005 len=28"
        );
    }

    #[test]
    fn proxies_come_from_trusted_proxies_and_the_port_from_ports() {
        let p = plan(&settings("10.1.2.0/24,fd00:5::/64", "443,8000-8099", 0xf)).unwrap();
        assert_eq!(p.proxy_v4, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(p.proxy_v6, Some("fd00:5::1".parse().unwrap()));
        assert!(p.checks.iter().all(|c| c.origin.port() == 443));
        assert_eq!(p.checks[0].proxy.ip(), p.proxy_v4.unwrap());
    }

    #[test]
    fn the_origin_never_takes_the_proxy_address() {
        let p = plan(&settings("198.18.0.1", "", 0xf)).unwrap();
        assert_eq!(p.proxy_v4, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(p.origin_v4, SPARE_V4);
    }

    #[test]
    fn missing_family_or_format_skips_with_a_reason() {
        let p = plan(&settings("10.0.0.0/8", "", 0x8)).unwrap();
        assert_eq!(
            names(&p),
            ["v4-toa-on-inet", "v4-toa-on-dual-stack", "no-toa-v4"]
        );
        assert_eq!(
            p.checks[0].toa.unwrap().kind,
            200,
            "only Tencent's 200/8 is accepted"
        );
        let why: Vec<&str> = p.skipped.iter().map(|s| s.why.as_str()).collect();
        assert!(why[0].contains("no IPv6 network"), "{why:?}");
        let p = plan(&settings("", "", 0x1)).unwrap();
        assert!(p.skipped[0]
            .why
            .contains("formats 0x1 accepts no TOA with an IPv6 client"));
    }

    #[test]
    fn bad_ports_are_an_error() {
        assert_eq!(first_port("").unwrap(), DEFAULT_PORT);
        assert_eq!(first_port("8000-8099").unwrap(), 8000);
        assert!(first_port("x").is_err());
    }
}
