//! The maps' names and layouts as the loader reads them, and the encoding of
//! [`Settings`] into them. bpf/toa.bpf.c is their source: the build checks
//! everything here that it defines (struct fields, flags, map names, key and
//! value sizes) against the object's BTF and fails naming what differs: the
//! assertions build/layout_checks.rs writes, evaluated in src/layout_checks.rs.

use std::net::IpAddr;

use crate::settings::{Cidr, Settings};

pub const SETTINGS: &str = "toa_settings";
pub const TRUSTED_V4: &str = "toa_trusted_v4";
pub const TRUSTED_V6: &str = "toa_trusted_v6";
pub const COUNTERS: &str = "toa_counters";
pub const CLIENTS: &str = "toa_clients";
pub const ALL: [&str; 5] = [SETTINGS, TRUSTED_V4, TRUSTED_V6, COUNTERS, CLIENTS];

/// `enum settings_flag`: the bits of `struct settings`' flags.
pub const TRUST_ANY: u32 = 0x1;
pub const PORTS_ANY: u32 = 0x2;

/// The data of the trusted-proxy tries' keys (`struct trusted_v4` and
/// `trusted_v6` after the prefix length): the address in network order.
pub type TrustedV4 = [u8; 4];
pub type TrustedV6 = [u8; 16];

/// `struct settings`: formats, flags and a bitmap of honoured ports.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SettingsValue {
    pub formats: u32,
    pub flags: u32,
    pub ports: [u64; 1024],
}

// SAFETY: plain integers, no padding (4 + 4 + 8 * 1024 bytes).
unsafe impl aya::Pod for SettingsValue {}

impl SettingsValue {
    pub fn encode(s: &Settings) -> SettingsValue {
        let mut v = SettingsValue {
            formats: s.formats,
            flags: 0,
            ports: [0; 1024],
        };
        if s.trusted_proxies.is_empty() {
            v.flags |= TRUST_ANY;
        }
        if s.ports.is_empty() {
            v.flags |= PORTS_ANY;
        }
        for port in s.ports.iter().flat_map(|r| r.clone()) {
            v.ports[usize::from(port >> 6)] |= 1 << (port & 63);
        }
        v
    }

    /// The settings this value encodes (trusted list left empty: it lives in
    /// the tries).
    pub fn decode(&self) -> Settings {
        let mut ports = Vec::new();
        if self.flags & PORTS_ANY == 0 {
            let on = |p: u32| self.ports[(p >> 6) as usize] >> (p & 63) & 1 == 1;
            let mut p = 1u32;
            while p <= 65535 {
                if on(p) {
                    let start = p;
                    while p < 65535 && on(p + 1) {
                        p += 1;
                    }
                    ports.push(start as u16..=p as u16);
                }
                p += 1;
            }
        }
        Settings {
            trusted_proxies: Vec::new(),
            formats: self.formats,
            ports,
        }
    }
}

/// LPM trie key data: the network-order address bytes, masked to the prefix.
pub fn v4_key(c: &Cidr) -> Option<aya::maps::lpm_trie::Key<TrustedV4>> {
    let IpAddr::V4(a) = c.addr else { return None };
    let masked = u32::from(a) & mask32(c.prefix);
    Some(aya::maps::lpm_trie::Key::new(
        c.prefix.into(),
        masked.to_be_bytes(),
    ))
}

pub fn v6_key(c: &Cidr) -> Option<aya::maps::lpm_trie::Key<TrustedV6>> {
    let IpAddr::V6(a) = c.addr else { return None };
    let mask = if c.prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(c.prefix))
    };
    let masked = u128::from(a) & mask;
    Some(aya::maps::lpm_trie::Key::new(
        c.prefix.into(),
        masked.to_be_bytes(),
    ))
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_settings_round_trip() {
        let s = Settings::parse("", 0x5, "80,443,8000-8099,65535").unwrap();
        let v = SettingsValue::encode(&s);
        assert_eq!(v.flags, TRUST_ANY);
        assert_eq!(v.decode(), s);
        let any = SettingsValue::encode(&Settings::default());
        assert_eq!(any.flags, TRUST_ANY | PORTS_ANY);
        assert!(any.decode().ports.is_empty());
    }

    /// Mapped peers (a v4 proxy on a dual-stack listener) are looked up in
    /// the v4 trie (proxy_trusted in bpf/toa.bpf.c): mapped entries go there.
    #[test]
    fn test_ipv4_mapped_entries_go_to_the_v4_trie() {
        let s = Settings::parse("::ffff:10.0.0.1/128,::ffff:10.0.0.0/104", 0xf, "").unwrap();
        let v4: Vec<(u32, [u8; 4])> = s
            .trusted_proxies
            .iter()
            .filter_map(v4_key)
            .map(|k| (k.prefix_len(), k.data()))
            .collect();
        assert_eq!(v4, vec![(32, [10, 0, 0, 1]), (8, [10, 0, 0, 0])]);
        assert_eq!(s.trusted_proxies.iter().filter_map(v6_key).count(), 0);
    }

    #[test]
    fn test_keys_are_masked_network_order() {
        let k = v4_key(&"10.1.2.3/8".parse().unwrap()).unwrap();
        assert_eq!((k.prefix_len(), k.data()), (8, [10, 0, 0, 0]));
        let k = v6_key(&"fd00::1/64".parse().unwrap()).unwrap();
        assert_eq!(k.prefix_len(), 64);
        assert_eq!(k.data()[..2], [0xfd, 0]);
        assert_eq!(k.data()[15], 0);
        assert!(v4_key(&"fd00::/8".parse().unwrap()).is_none());
    }
}
