//! A model of `trusted_proxies`: which packet sources may carry a TOA.
//! Lists the lab writes and the lists a self-test reads back are parsed
//! here; what the module must refuse is tested against the module, not
//! modelled.

use std::net::IpAddr;

use crate::error::{sim_err, Result};

/// Sysfs file of the parameter.
pub const PARAM: &str = "/sys/module/toa/parameters/trusted_proxies";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// An empty list trusts every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trusted {
    nets: Vec<Net>,
}

impl Trusted {
    pub fn everyone() -> Trusted {
        Trusted::default()
    }

    /// `a.b.c.d[/n]` and IPv6 `addr[/n]`, comma separated.
    pub fn parse(text: &str) -> Result<Trusted> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (addr, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| sim_err!("{entry:?} is not an address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = if prefix.is_empty() {
                max
            } else {
                prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| sim_err!("{entry:?} has a bad prefix"))?
            };
            nets.push(Net { addr, prefix });
        }
        Ok(Trusted { nets })
    }

    pub fn is_everyone(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether a handshake from `source` may carry a TOA. IPv4 packets are
    /// IPv4 sources, whichever listener they reach.
    pub fn allows(&self, source: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|n| within(source, n))
    }
}

impl Trusted {
    /// A source address for a simulated proxy that this list lets set a
    /// client address: `preferred` when allowed (always, for an empty list),
    /// else a host inside the first network of the same family; `None` when
    /// the list has no network of that family.
    pub fn pick_source(&self, preferred: IpAddr) -> Option<IpAddr> {
        if self.allows(preferred) {
            return Some(preferred);
        }
        self.nets
            .iter()
            .find(|n| n.addr.is_ipv4() == preferred.is_ipv4())
            .map(host_in)
    }
}

/// The first host of `net` (the network address + 1), or the address itself
/// when the prefix leaves no room for a network and a host.
fn host_in(net: &Net) -> IpAddr {
    match net.addr {
        IpAddr::V4(a) if net.prefix < 31 => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask | 1).into())
        }
        IpAddr::V6(a) if net.prefix < 127 => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask | 1).into())
        }
        other => other,
    }
}

fn within(ip: IpAddr, net: &Net) -> bool {
    let (a, b, width) = match (ip, net.addr) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            32u32,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let prefix = u32::from(net.prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - prefix);
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_empty_trusts_everyone() {
        let t = Trusted::parse("").unwrap();
        assert!(t.is_everyone());
        assert!(t.allows(ip("192.0.2.1")));
        assert_eq!(Trusted::parse(" \n").unwrap(), Trusted::everyone());
    }

    #[test]
    fn test_hosts_and_networks() {
        let t = Trusted::parse("10.0.0.2,fd00::2").unwrap();
        assert!(t.allows(ip("10.0.0.2")));
        assert!(!t.allows(ip("10.0.0.3")));
        assert!(t.allows(ip("fd00::2")));
        assert!(!t.allows(ip("fd00::3")));
        let t = Trusted::parse("10.0.0.0/24, fd00::/64").unwrap();
        assert!(t.allows(ip("10.0.0.3")));
        assert!(!t.allows(ip("10.0.1.3")));
        assert!(t.allows(ip("fd00::3")));
        assert!(!t.allows(ip("fd01::3")));
        let all4 = Trusted::parse("0.0.0.0/0").unwrap();
        assert!(all4.allows(ip("203.0.113.9")));
        assert!(
            !all4.allows(ip("fd00::2")),
            "an IPv4 list does not cover IPv6"
        );
    }

    #[test]
    fn test_parse_errors() {
        assert!(Trusted::parse("300.1.1.1").is_err());
        assert!(Trusted::parse("10.0.0.0/33").is_err());
        assert!(Trusted::parse("fd00::/129").is_err());
    }

    #[test]
    fn test_pick_source_prefers_the_default() {
        let default = ip("10.0.0.2");
        assert_eq!(Trusted::everyone().pick_source(default), Some(default));
        let t = Trusted::parse("10.0.0.0/8").unwrap();
        assert_eq!(t.pick_source(default), Some(default));
    }

    #[test]
    fn test_pick_source_inside_the_first_network_of_the_family() {
        let t = Trusted::parse("fd00:1::/64,192.0.2.77/24,198.51.100.9").unwrap();
        assert_eq!(t.pick_source(ip("10.0.0.2")), Some(ip("192.0.2.1")));
        assert_eq!(t.pick_source(ip("fd00::2")), Some(ip("fd00:1::1")));
        let hosts = Trusted::parse("198.51.100.9,2001:db8::5/128").unwrap();
        assert_eq!(hosts.pick_source(ip("10.0.0.2")), Some(ip("198.51.100.9")));
        assert_eq!(hosts.pick_source(ip("fd00::2")), Some(ip("2001:db8::5")));
    }

    #[test]
    fn test_pick_source_without_a_network_of_the_family() {
        let v4_only = Trusted::parse("192.0.2.0/24").unwrap();
        assert_eq!(v4_only.pick_source(ip("fd00::2")), None);
    }
}
