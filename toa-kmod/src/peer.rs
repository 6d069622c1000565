//! The address policy: what `accept()` / `getpeername()` return once a TOA is known.
//!
//! | socket   | TOA carries | answer                                        |
//! |----------|-------------|-----------------------------------------------|
//! | AF_INET  | IPv4        | sockaddr_in, client ip:port                   |
//! | AF_INET6 | IPv6        | sockaddr_in6, client ip:port                  |
//! | AF_INET6 | IPv4        | sockaddr_in6, `::ffff:a.b.c.d`, client port   |
//! | AF_INET  | IPv6        | sockaddr_in6 (28 bytes), client ip:port       |
//!
//! The kernel has already written its own answer (the proxy's address) when the
//! policy runs. That answer must be the proxy endpoint recorded with the TOA at
//! handshake time; if it is not, the record belongs to some other connection and
//! the kernel's answer is left alone (a "mismatch").

use crate::option::ClientAddr;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCKADDR_IN_LEN: usize = 16;
pub const SOCKADDR_IN6_LEN: usize = 28;

/// Byte offsets in `struct sockaddr_in` / `struct sockaddr_in6`.
mod field {
    use core::ops::Range;
    pub const FAMILY: Range<usize> = 0..2;
    pub const PORT: Range<usize> = 2..4;
    pub const IN_ADDR: Range<usize> = 4..8;
    pub const IN6_ADDR: Range<usize> = 8..24;
}

/// `::ffff:0:0/96` shifted right by the 32 bits of the embedded IPv4 address.
const V4_MAPPED_PREFIX: u128 = 0xffff;

/// An address and port, with IPv4-mapped IPv6 addresses folded to IPv4 so that
/// the same peer compares equal whichever socket family reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub port: u16,
    pub addr: ClientAddr,
}

impl Endpoint {
    pub fn new(port: u16, addr: ClientAddr) -> Endpoint {
        let addr = match addr {
            ClientAddr::V6(a) if u128::from_be_bytes(a) >> 32 == V4_MAPPED_PREFIX => {
                ClientAddr::V4([a[12], a[13], a[14], a[15]])
            }
            other => other,
        };
        Endpoint { port, addr }
    }

    /// Reads the kernel's own answer: a sockaddr_in or sockaddr_in6 of `len` bytes.
    pub fn from_sockaddr(sa: &[u8]) -> Option<Endpoint> {
        let family = u16::from_ne_bytes(sa.get(field::FAMILY)?.try_into().ok()?);
        let port = u16::from_be_bytes(sa.get(field::PORT)?.try_into().ok()?);
        let addr = match (family, sa.len()) {
            (AF_INET, n) if n >= SOCKADDR_IN_LEN => {
                ClientAddr::V4(sa.get(field::IN_ADDR)?.try_into().ok()?)
            }
            (AF_INET6, n) if n >= SOCKADDR_IN6_LEN => {
                ClientAddr::V6(sa.get(field::IN6_ADDR)?.try_into().ok()?)
            }
            _ => return None,
        };
        Some(Endpoint::new(port, addr))
    }
}

/// The sockaddr bytes an application on a `socket_family` socket gets for `client`.
/// Returns the bytes and how many of them are meaningful (16 or 28).
pub fn client_sockaddr(socket_family: u16, client: &Endpoint) -> ([u8; SOCKADDR_IN6_LEN], usize) {
    let mut sa = [0u8; SOCKADDR_IN6_LEN];
    let port = client.port.to_be_bytes();
    sa[2] = port[0];
    sa[3] = port[1];
    let (family, len, addr6) = match (socket_family, client.addr) {
        (AF_INET, ClientAddr::V4(a)) => {
            let [f0, f1] = AF_INET.to_ne_bytes();
            sa[0] = f0;
            sa[1] = f1;
            sa[4] = a[0];
            sa[5] = a[1];
            sa[6] = a[2];
            sa[7] = a[3];
            return (sa, SOCKADDR_IN_LEN);
        }
        (_, ClientAddr::V4(a)) => {
            let mut mapped = [0u8; 16];
            mapped[10] = 0xff;
            mapped[11] = 0xff;
            mapped[12] = a[0];
            mapped[13] = a[1];
            mapped[14] = a[2];
            mapped[15] = a[3];
            (AF_INET6, SOCKADDR_IN6_LEN, mapped)
        }
        (_, ClientAddr::V6(a)) => (AF_INET6, SOCKADDR_IN6_LEN, a),
    };
    let [f0, f1] = family.to_ne_bytes();
    sa[0] = f0;
    sa[1] = f1;
    for (dst, src) in sa.iter_mut().skip(field::IN6_ADDR.start).zip(addr6.iter()) {
        *dst = *src;
    }
    (sa, len)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The buffer now holds the client's address; this many bytes of it.
    Rewritten(usize),
    /// The kernel's answer is not the recorded proxy, or the buffer cannot hold the
    /// answer: left untouched.
    Mismatch,
}

/// Replaces the kernel's answer in `buf` (its first `len` bytes) with the client's
/// address, if the answer is the proxy the record was made for.
pub fn rewrite(
    socket_family: u16,
    buf: &mut [u8],
    len: usize,
    proxy: &Endpoint,
    client: &Endpoint,
) -> Verdict {
    let Some(kernel) = buf.get(..len).and_then(Endpoint::from_sockaddr) else {
        return Verdict::Mismatch;
    };
    if kernel != *proxy {
        return Verdict::Mismatch;
    }
    let (sa, n) = client_sockaddr(socket_family, client);
    let (Some(dst), Some(src)) = (buf.get_mut(..n), sa.get(..n)) else {
        return Verdict::Mismatch;
    };
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
    Verdict::Rewritten(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT4: [u8; 4] = [198, 51, 100, 7];
    const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const PROXY4: [u8; 4] = [10, 0, 0, 2];
    const PROXY6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn sockaddr_in(addr: [u8; 4], port: u16) -> std::vec::Vec<u8> {
        let mut v = AF_INET.to_ne_bytes().to_vec();
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&addr);
        v.extend_from_slice(&[0; 8]);
        v
    }

    fn sockaddr_in6(addr: [u8; 16], port: u16) -> std::vec::Vec<u8> {
        let mut v = AF_INET6.to_ne_bytes().to_vec();
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&addr);
        v.extend_from_slice(&[0; 4]);
        v
    }

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&a);
        m
    }

    /// (socket family, kernel's answer, recorded proxy, client, expected answer)
    #[test]
    fn test_four_family_pairs() {
        let p4 = Endpoint::new(5000, ClientAddr::V4(PROXY4));
        let p6 = Endpoint::new(5000, ClientAddr::V6(PROXY6));
        let c4 = Endpoint::new(40001, ClientAddr::V4(CLIENT4));
        let c6 = Endpoint::new(40002, ClientAddr::V6(CLIENT6));
        let cases = [
            (
                AF_INET,
                sockaddr_in(PROXY4, 5000),
                p4,
                c4,
                sockaddr_in(CLIENT4, 40001),
            ),
            (
                AF_INET6,
                sockaddr_in6(PROXY6, 5000),
                p6,
                c6,
                sockaddr_in6(CLIENT6, 40002),
            ),
            (
                AF_INET6,
                sockaddr_in6(mapped(PROXY4), 5000),
                p4,
                c4,
                sockaddr_in6(mapped(CLIENT4), 40001),
            ),
            (
                AF_INET,
                sockaddr_in(PROXY4, 5000),
                p4,
                c6,
                sockaddr_in6(CLIENT6, 40002),
            ),
        ];
        for (family, kernel, proxy, client, want) in cases {
            let mut buf = [0xaau8; 128];
            buf[..kernel.len()].copy_from_slice(&kernel);
            let verdict = rewrite(family, &mut buf, kernel.len(), &proxy, &client);
            assert_eq!(
                verdict,
                Verdict::Rewritten(want.len()),
                "{family} {client:?}"
            );
            assert_eq!(&buf[..want.len()], &want[..]);
            assert!(
                buf[want.len()..].iter().all(|b| *b == 0xaa),
                "wrote past the answer"
            );
        }
    }

    #[test]
    fn test_other_peer_is_mismatch() {
        let proxy = Endpoint::new(5000, ClientAddr::V4(PROXY4));
        let client = Endpoint::new(40001, ClientAddr::V4(CLIENT4));
        for kernel in [
            sockaddr_in(PROXY4, 5001),
            sockaddr_in([10, 0, 0, 3], 5000),
            sockaddr_in6(PROXY6, 5000),
        ] {
            let mut buf = kernel.clone();
            assert_eq!(
                rewrite(AF_INET, &mut buf, kernel.len(), &proxy, &client),
                Verdict::Mismatch
            );
            assert_eq!(buf, kernel, "a mismatch must leave the answer untouched");
        }
    }

    #[test]
    fn test_short_or_unknown_answer_is_mismatch() {
        let proxy = Endpoint::new(5000, ClientAddr::V4(PROXY4));
        let client = Endpoint::new(40001, ClientAddr::V6(CLIENT6));
        let kernel = sockaddr_in(PROXY4, 5000);
        let mut buf = kernel.clone();
        assert_eq!(
            rewrite(AF_INET, &mut buf, 8, &proxy, &client),
            Verdict::Mismatch
        );
        // A sockaddr_in6 answer does not fit a 16-byte buffer.
        assert_eq!(
            rewrite(AF_INET, &mut buf, 16, &proxy, &client),
            Verdict::Mismatch
        );
        assert_eq!(buf, kernel);
        let mut unix = [1u8, 0, b'/', b'x'];
        assert_eq!(
            rewrite(AF_INET, &mut unix, 4, &proxy, &client),
            Verdict::Mismatch
        );
    }

    #[test]
    fn test_mapped_proxy_equals_v4_proxy() {
        assert_eq!(
            Endpoint::new(1, ClientAddr::V6(mapped(PROXY4))),
            Endpoint::new(1, ClientAddr::V4(PROXY4))
        );
    }
}
