//! What accept()/getpeername() handed back, kept exactly as the kernel
//! returned it: family, length and address. The module's job is visible only
//! at this level (an AF_INET listener may legitimately get a 28-byte
//! sockaddr_in6 back), so std's `SocketAddr` alone would hide failures.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const SOCKADDR_IN_LEN: u32 = 16;
pub const SOCKADDR_IN6_LEN: u32 = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerName {
    pub family: i32,
    pub len: u32,
    /// `None` for a family we do not decode.
    pub addr: Option<SocketAddr>,
}

impl PeerName {
    pub fn v4(addr: SocketAddr) -> Self {
        PeerName {
            family: libc::AF_INET,
            len: SOCKADDR_IN_LEN,
            addr: Some(addr),
        }
    }

    pub fn v6(addr: SocketAddr) -> Self {
        PeerName {
            family: libc::AF_INET6,
            len: SOCKADDR_IN6_LEN,
            addr: Some(addr),
        }
    }

    /// Decodes what the kernel wrote into a `sockaddr_storage`.
    pub fn from_storage(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Self {
        let family = i32::from(ss.ss_family);
        let addr = match family {
            libc::AF_INET if len >= SOCKADDR_IN_LEN => {
                // SAFETY: sockaddr_storage is large and aligned enough for
                // any sockaddr; the family says which one the kernel wrote.
                let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 if len >= SOCKADDR_IN6_LEN => {
                // SAFETY: as above.
                let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(
                    IpAddr::V6(ip),
                    u16::from_be(sin6.sin6_port),
                ))
            }
            _ => None,
        };
        PeerName { family, len, addr }
    }
}

fn family_name(family: i32) -> String {
    match family {
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        other => format!("family{other}"),
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr.map_or_else(|| "?".to_string(), |a| a.to_string());
        write!(f, "{} {} len={}", family_name(self.family), addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_display() {
        let v4 = PeerName::v4("198.51.100.7:40001".parse().unwrap());
        assert_eq!(v4.to_string(), "AF_INET 198.51.100.7:40001 len=16");
        let mapped = PeerName::v6("[::ffff:198.51.100.7]:40003".parse().unwrap());
        assert_eq!(
            mapped.to_string(),
            "AF_INET6 [::ffff:198.51.100.7]:40003 len=28"
        );
    }

    #[test]
    fn test_from_storage_roundtrip() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        {
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = 40002u16.to_be();
            sin6.sin6_addr.s6_addr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        }
        let got = PeerName::from_storage(&ss, 28);
        assert_eq!(got, PeerName::v6("[2001:db8::7]:40002".parse().unwrap()));

        let truncated = PeerName::from_storage(&ss, 16);
        assert_eq!(truncated.addr, None, "a short length must not be decoded");
    }
}
