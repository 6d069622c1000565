//! The TCP option a proxy uses to tell the origin who the real client is.
//!
//! Layout (DESIGN "Wire formats"): kind, len, port (be16), then the address:
//! 4 bytes for IPv4 (len 8) or 16 bytes for IPv6 (len 20).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{sim_err, Result};

/// LVS/FULLNAT, dpvs, Huawei; used for both the IPv4 and IPv6 layouts.
pub const KIND_TOA: u8 = 254;
/// Alibaba LVS IPv6 / NAT64.
pub const KIND_TOA_V6_ALIBABA: u8 = 253;
/// Tencent CLB hybrid cloud.
pub const KIND_TOA_TENCENT: u8 = 200;

pub const LEN_V4: u8 = 8;
pub const LEN_V6: u8 = 20;

/// A TOA option as a proxy would send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toa {
    pub kind: u8,
    pub client: SocketAddr,
}

impl Toa {
    pub fn new(kind: u8, client: SocketAddr) -> Self {
        Toa { kind, client }
    }

    /// Length byte implied by the client address family (an option is
    /// never empty, so there is no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        match self.client.ip() {
            IpAddr::V4(_) => LEN_V4,
            IpAddr::V6(_) => LEN_V6,
        }
    }

    #[cfg(test)]
    pub fn carries_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// The option bytes, unpadded (padding belongs to the whole options area).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::from(self.len()));
        out.push(self.kind);
        out.push(self.len());
        out.extend_from_slice(&self.client.port().to_be_bytes());
        match self.client.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out
    }
}

impl fmt::Display for Toa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TOA kind {} len {} {}",
            self.kind,
            self.len(),
            self.client
        )
    }
}

/// Parses a `--kind` value for the `craft` helper; any byte is allowed so
/// unusual kinds can be produced on purpose.
pub fn parse_kind(text: &str) -> Result<u8> {
    text.parse::<u8>()
        .map_err(|_| sim_err!("option kind {text:?} is not a number 0-255"))
}

/// Lower-case hex, space separated, as fixtures in other tests are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_encode_v4_254() {
        let toa = Toa::new(KIND_TOA, "198.51.100.7:40001".parse().unwrap());
        assert_eq!(
            toa.encode(),
            [254, 8, 0x9c, 0x41, 198, 51, 100, 7],
            "port 40001 is 0x9c41"
        );
        assert!(!toa.carries_ipv6());
    }

    #[test]
    fn test_encode_v6_253() {
        let toa = Toa::new(KIND_TOA_V6_ALIBABA, "[2001:db8::7]:40002".parse().unwrap());
        let bytes = toa.encode();
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..4], &[253, 20, 0x9c, 0x42]);
        assert_eq!(&bytes[4..8], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&bytes[8..19], &[0; 11]);
        assert_eq!(bytes[19], 7);
        assert!(toa.carries_ipv6());
    }

    #[test]
    fn test_encode_tencent() {
        let toa = Toa::new(KIND_TOA_TENCENT, "203.0.113.5:40005".parse().unwrap());
        assert_eq!(toa.encode(), [200, 8, 0x9c, 0x45, 203, 0, 113, 5]);
    }

    #[test]
    fn test_len_follows_family() {
        let v4 = Toa::new(KIND_TOA, "1.2.3.4:1".parse().unwrap());
        let v6 = Toa::new(KIND_TOA, "[::1]:1".parse().unwrap());
        assert_eq!(v4.len() as usize, v4.encode().len());
        assert_eq!(v6.len() as usize, v6.encode().len());
    }

    #[test]
    fn test_parse_kind() {
        assert_eq!(parse_kind("254").unwrap(), 254);
        assert!(parse_kind("256").is_err());
        assert!(parse_kind("x").is_err());
    }

    #[test]
    fn test_hex() {
        assert_eq!(hex(&[254, 8, 0]), "fe 08 00");
    }
}
