//! What an operator configures, with toa.ko's parameter syntax:
//! `trusted_proxies` (CIDRs), `formats` (bitmask) and `ports` (ports and ranges).

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use anyhow::{bail, Context, Result};

/// toa.ko's `formats` bits: 0x1 254/8, 0x2 254/20, 0x4 253/20, 0x8 200/8.
pub const ALL_FORMATS: u32 = 0xf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .with_context(|| format!("{text:?} is not an IPv4 or IPv6 CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .with_context(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix }.unmapped())
    }
}

impl Cidr {
    /// An IPv4-mapped network (`::ffff:10.0.0.0/104`, inside `::ffff:0:0/96`)
    /// as the IPv4 network it stands for (`10.0.0.0/8`): a v4 proxy that
    /// reaches a dual-stack listener has a mapped source, and the programs
    /// look mapped sources up among the IPv4 networks, as toa.ko compares
    /// them. Wider IPv6 networks (`::/0`) stay IPv6 and, as with toa.ko, do
    /// not take in IPv4 sources.
    fn unmapped(self) -> Cidr {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The settings of a load. Empty lists mean "any", as with toa.ko.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Sources allowed to set a client address; empty: every source.
    pub trusted_proxies: Vec<Cidr>,
    /// Enabled TOA formats (toa.ko's bitmask).
    pub formats: u32,
    /// Local listener ports that honour TOA; empty: every port.
    pub ports: Vec<RangeInclusive<u16>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trusted_proxies: Vec::new(),
            formats: ALL_FORMATS,
            ports: Vec::new(),
        }
    }
}

impl Settings {
    /// Parses the module parameters' syntax: `10.0.0.0/8,fd00::/64`, a mask,
    /// `80,443,8000-8099`.
    pub fn parse(trusted_proxies: &str, formats: u32, ports: &str) -> Result<Settings> {
        if formats & !ALL_FORMATS != 0 {
            bail!("formats {formats:#x} has bits outside {ALL_FORMATS:#x}");
        }
        let trusted_proxies = list(trusted_proxies)
            .map(str::parse)
            .collect::<Result<Vec<Cidr>>>()
            .context("trusted proxies")?;
        let ports = list(ports)
            .map(port_range)
            .collect::<Result<Vec<_>>>()
            .context("ports")?;
        Ok(Settings {
            trusted_proxies,
            formats,
            ports,
        })
    }

    /// The ports list in the syntax `parse` reads.
    pub fn ports_text(&self) -> String {
        let items: Vec<String> = self
            .ports
            .iter()
            .map(|r| match r.start() == r.end() {
                true => r.start().to_string(),
                false => format!("{}-{}", r.start(), r.end()),
            })
            .collect();
        items.join(",")
    }

    /// The trusted list in the syntax `parse` reads.
    pub fn trusted_text(&self) -> String {
        let items: Vec<String> = self.trusted_proxies.iter().map(Cidr::to_string).collect();
        items.join(",")
    }
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn port_range(text: &str) -> Result<RangeInclusive<u16>> {
    let port = |p: &str| -> Result<u16> {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("{text:?}: a port is 1..=65535"))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        bail!("{text:?}: the range runs backwards");
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_module_syntax() {
        let s = Settings::parse("10.0.0.0/8, fd00::/64,192.0.2.1", 0x3, "80,8000-8099").unwrap();
        assert_eq!(s.trusted_text(), "10.0.0.0/8,fd00::/64,192.0.2.1/32");
        assert_eq!(s.formats, 0x3);
        assert_eq!(s.ports, vec![80..=80, 8000..=8099]);
        assert_eq!(s.ports_text(), "80,8000-8099");
    }

    #[test]
    fn test_ipv4_mapped_entries_are_ipv4_networks() {
        let s = Settings::parse(
            "::ffff:10.0.0.1/128, ::ffff:10.0.0.0/104, ::ffff:192.0.2.1, ::ffff:0:0/96",
            0xf,
            "",
        )
        .unwrap();
        assert_eq!(
            s.trusted_text(),
            "10.0.0.1/32,10.0.0.0/8,192.0.2.1/32,0.0.0.0/0"
        );
        // Not mapped, or wider than the mapped range: IPv6.
        let s = Settings::parse("::/0,::ffff:0:0/95,fd00::ffff:a00:1", 0xf, "").unwrap();
        assert!(s.trusted_proxies.iter().all(|c| c.addr.is_ipv6()), "{s:?}");
    }

    #[test]
    fn test_empty_means_any() {
        assert_eq!(Settings::parse("", 0xf, "").unwrap(), Settings::default());
    }

    #[test]
    fn test_mistakes_are_errors() {
        assert!(Settings::parse("10.0.0.0/33", 0xf, "").is_err());
        assert!(Settings::parse("fd00::/129", 0xf, "").is_err());
        assert!(Settings::parse("proxy", 0xf, "").is_err());
        assert!(Settings::parse("", 0x10, "").is_err());
        assert!(Settings::parse("", 0xf, "0").is_err());
        assert!(Settings::parse("", 0xf, "90-80").is_err());
        assert!(Settings::parse("", 0xf, "70000").is_err());
    }
}
