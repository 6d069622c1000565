//! What toa.ko must make of a handshake, worked out from the documented
//! rules alone (README "The module", DESIGN "Wire formats"), without the
//! module's own parser: the lab's expectations must not share its bugs.
//!
//! The rules, for the option area of the packet that completes the handshake:
//! * TOA formats are exactly 254/8, 254/20, 253/20 and 200/8 (kind 254 with
//!   other lengths is TCP Fast Open's experimental option, not TOA); the
//!   `formats` parameter may switch some off.
//! * The first enabled TOA wins; EOL ends the walk (nothing after it is seen).
//! * The whole area is checked even after a TOA was found: a length of 0 or
//!   1, an option running past the end of the area, a kind byte with no length
//!   byte, or more than 40 bytes make the area malformed, and a malformed area
//!   yields no TOA.
//! * A TOA from a source outside `trusted_proxies` is ignored.
//!
//! Counters per handshake: a honoured TOA counts `syn_recv_sock_toa` (and
//! `ip6_address_alloc`/`_free` for a 20-byte format); anything else counts
//! `syn_recv_sock_no_toa`, plus `options_malformed` for a malformed area or
//! `syn_recv_sock_untrusted` for an ignored TOA (a malformed area never gets
//! as far as the trust check).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// All four formats (the `formats` default, 0xf).
pub const ALL_FORMATS: u32 = 0xf;
pub const MAX_AREA: usize = 40;

/// (kind, length, `formats` bit) of each TOA format.
const FORMATS: [(u8, u8, u32); 4] = [(254, 8, 0x1), (254, 20, 0x2), (253, 20, 0x4), (200, 8, 0x8)];

/// Why an area cannot be walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    Oversized,
    MissingLength,
    ImpossibleLength,
    PastTheEnd,
}

/// What the walk of one option area finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Toa { kind: u8, client: SocketAddr },
    Nothing,
    Malformed(Broken),
}

/// Walks `area` by index, as a reader of the rules above would.
pub fn walk(area: &[u8], formats: u32) -> Found {
    if area.len() > MAX_AREA {
        return Found::Malformed(Broken::Oversized);
    }
    let mut first: Option<Found> = None;
    let mut at = 0usize;
    while at < area.len() {
        let kind = area[at];
        if kind == 0 {
            break;
        }
        if kind == 1 {
            at += 1;
            continue;
        }
        if at + 1 == area.len() {
            return Found::Malformed(Broken::MissingLength);
        }
        let len = usize::from(area[at + 1]);
        if len < 2 {
            return Found::Malformed(Broken::ImpossibleLength);
        }
        if at + len > area.len() {
            return Found::Malformed(Broken::PastTheEnd);
        }
        let enabled = FORMATS
            .iter()
            .any(|&(k, l, bit)| k == kind && usize::from(l) == len && formats & bit != 0);
        if enabled && first.is_none() {
            first = Some(Found::Toa {
                kind,
                client: client_of(&area[at + 2..at + len]),
            });
        }
        at += len;
    }
    first.unwrap_or(Found::Nothing)
}

/// Port and address of a TOA payload (6 or 18 bytes).
fn client_of(payload: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([payload[0], payload[1]]);
    let ip: IpAddr = if payload.len() == 6 {
        Ipv4Addr::new(payload[2], payload[3], payload[4], payload[5]).into()
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&payload[2..18]);
        Ipv6Addr::from(a).into()
    };
    SocketAddr::new(ip, port)
}

/// Why the kernel's own answer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    NoToa,
    Malformed,
    Untrusted,
    /// A TOA to a listener whose port is outside the `ports` parameter.
    OtherPort,
}

/// The module's decision for one handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// accept()/getpeername() show this client; `ipv6` records count in
    /// ip6_address_alloc/free.
    Client { client: SocketAddr, ipv6: bool },
    /// The kernel's answer (the packet's source) stands.
    Kernel(Kept),
}

/// Decision for a handshake whose completing packet carried `area`, to a
/// listener whose port `ports` does (`honoured`) or does not list, from a
/// source the trusted list does (`trusted`) or does not cover. The module
/// asks in this order: option area, port, source.
pub fn verdict(area: &[u8], formats: u32, honoured: bool, trusted: bool) -> Verdict {
    match walk(area, formats) {
        Found::Malformed(_) => Verdict::Kernel(Kept::Malformed),
        Found::Nothing => Verdict::Kernel(Kept::NoToa),
        Found::Toa { .. } if !honoured => Verdict::Kernel(Kept::OtherPort),
        Found::Toa { .. } if !trusted => Verdict::Kernel(Kept::Untrusted),
        Found::Toa { client, .. } => Verdict::Client {
            client,
            ipv6: client.is_ipv6(),
        },
    }
}

/// How the kernel screens every segment's options before TCP reads them.
/// Since 6.7 (TCP-AO) each segment is walked for MD5/AO signatures
/// (`tcp_do_parse_auth_options`), and a walk that meets a length of 0 or 1,
/// an option running past the end, a misshapen signature option or two of
/// them drops the segment, with or without toa.ko. The walk stops once fewer
/// than `minlen` bytes remain: 5 with CONFIG_TCP_AO, 18 with MD5 alone.
/// Older kernels only look for MD5 and never drop for the shape of an area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthWalk {
    Off,
    Md5,
    Ao,
}

const TCPOPT_MD5SIG: u8 = 19;
const TCPOLEN_MD5SIG: usize = 18;
const TCPOPT_AO: u8 = 29;
/// sizeof(struct tcp_ao_hdr): kind, length, keyid, rnextkeyid.
const TCP_AO_HDR: usize = 4;

impl AuthWalk {
    pub fn name(self) -> &'static str {
        match self {
            AuthWalk::Off => "none (before 6.7)",
            AuthWalk::Md5 => "md5 (6.7+, walk stops under 18 bytes)",
            AuthWalk::Ao => "tcp-ao (6.7+, walk stops under 5 bytes)",
        }
    }

    /// Whether a segment whose whole option area is `area` is dropped.
    pub fn drops(self, area: &[u8]) -> bool {
        let minlen = match self {
            AuthWalk::Off => return false,
            AuthWalk::Md5 => TCPOLEN_MD5SIG,
            AuthWalk::Ao => TCP_AO_HDR + 1,
        };
        let mut length = area.len();
        let mut at = 0usize;
        let mut signed = false;
        while length >= minlen {
            let Some(&kind) = area.get(at) else {
                return false;
            };
            match kind {
                0 => return false,
                1 => {
                    at += 1;
                    length -= 1;
                }
                _ => {
                    let size = area.get(at + 1).map_or(0, |&l| usize::from(l));
                    if size < 2 || size > length {
                        return true;
                    }
                    let sign = kind == TCPOPT_MD5SIG || kind == TCPOPT_AO;
                    if (kind == TCPOPT_MD5SIG && size != TCPOLEN_MD5SIG)
                        || (kind == TCPOPT_AO && size <= TCP_AO_HDR)
                        || (sign && signed)
                    {
                        return true;
                    }
                    signed |= sign;
                    at += size;
                    length -= size;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 8] = [254, 8, 0x9c, 0x41, 198, 51, 100, 7];

    fn v6(kind: u8) -> Vec<u8> {
        let mut v = vec![kind, 20, 0x9c, 0x42, 0x20, 0x01, 0x0d, 0xb8];
        v.extend_from_slice(&[0; 11]);
        v.push(7);
        v
    }

    fn toa(kind: u8, client: &str) -> Found {
        Found::Toa {
            kind,
            client: client.parse().unwrap(),
        }
    }

    #[test]
    fn test_formats() {
        assert_eq!(walk(&V4, ALL_FORMATS), toa(254, "198.51.100.7:40001"));
        let mut tencent = V4;
        tencent[0] = 200;
        assert_eq!(walk(&tencent, ALL_FORMATS), toa(200, "198.51.100.7:40001"));
        assert_eq!(walk(&v6(254), ALL_FORMATS), toa(254, "[2001:db8::7]:40002"));
        assert_eq!(walk(&v6(253), ALL_FORMATS), toa(253, "[2001:db8::7]:40002"));
        assert_eq!(walk(&V4, 0x2 | 0x4 | 0x8), Found::Nothing, "254/8 off");
    }

    #[test]
    fn test_first_toa_wins_and_whole_area_checked() {
        let mut area = v6(253);
        area.extend_from_slice(&V4);
        assert_eq!(walk(&area, ALL_FORMATS), toa(253, "[2001:db8::7]:40002"));
        assert_eq!(walk(&area, 0x1), toa(254, "198.51.100.7:40001"));
        let mut broken = V4.to_vec();
        broken.extend_from_slice(&[1, 9, 1, 1]);
        assert_eq!(
            walk(&broken, ALL_FORMATS),
            Found::Malformed(Broken::ImpossibleLength)
        );
    }

    #[test]
    fn test_eol_and_padding() {
        let mut area = vec![0];
        area.extend_from_slice(&V4);
        assert_eq!(walk(&area, ALL_FORMATS), Found::Nothing);
        let mut area = V4.to_vec();
        area.extend_from_slice(&[0, 0, 9, 0]); // garbage after EOL is not read
        assert_eq!(walk(&area, ALL_FORMATS), toa(254, "198.51.100.7:40001"));
        assert_eq!(walk(&[1, 1, 1, 1], ALL_FORMATS), Found::Nothing);
        assert_eq!(walk(&[], ALL_FORMATS), Found::Nothing);
    }

    #[test]
    fn test_broken_areas() {
        assert_eq!(
            walk(&[1, 1, 1, 254], ALL_FORMATS),
            Found::Malformed(Broken::MissingLength)
        );
        assert_eq!(
            walk(&[254, 0, 1, 1], ALL_FORMATS),
            Found::Malformed(Broken::ImpossibleLength)
        );
        assert_eq!(
            walk(&V4[..7], ALL_FORMATS),
            Found::Malformed(Broken::PastTheEnd)
        );
        assert_eq!(
            walk(&[1; 41], ALL_FORMATS),
            Found::Malformed(Broken::Oversized)
        );
        assert_eq!(walk(&[1; 40], ALL_FORMATS), Found::Nothing);
    }

    #[test]
    fn test_wrong_lengths_and_tfo_are_not_toa() {
        assert_eq!(walk(&[254, 4, 0xf9, 0x89], ALL_FORMATS), Found::Nothing);
        assert_eq!(walk(&[254, 2, 1, 1], ALL_FORMATS), Found::Nothing);
        assert_eq!(
            walk(&[253, 8, 0, 1, 10, 0, 0, 1], ALL_FORMATS),
            Found::Nothing
        );
        let mut area = vec![254, 6, 0xf9, 0x89, 1, 2, 1, 1];
        area.extend_from_slice(&V4);
        assert_eq!(walk(&area, ALL_FORMATS), toa(254, "198.51.100.7:40001"));
    }

    /// The module's walker and this oracle, written apart, must agree on
    /// every area the generator makes and on random bytes.
    #[test]
    fn test_agrees_with_the_module_walker() {
        use toa_kmod::option::{scan, ClientAddr, Formats, Malformed, Scan};
        let module = |area: &[u8], formats: u32| match scan(area, Formats(formats)) {
            Scan::Found(t) => {
                let ip: IpAddr = match t.addr {
                    ClientAddr::V4(a) => Ipv4Addr::from(a).into(),
                    ClientAddr::V6(a) => Ipv6Addr::from(a).into(),
                };
                Found::Toa {
                    kind: t.format.kind(),
                    client: SocketAddr::new(ip, t.port),
                }
            }
            Scan::NotFound => Found::Nothing,
            Scan::Malformed(m) => Found::Malformed(match m {
                Malformed::MissingLength => Broken::MissingLength,
                Malformed::ImpossibleLength => Broken::ImpossibleLength,
                Malformed::Truncated => Broken::PastTheEnd,
                Malformed::Oversized => Broken::Oversized,
            }),
        };
        let mut rng = crate::rng::Rng::new(2024);
        for i in 0..50_000u64 {
            let case = crate::malformed::case(77, i, 0, AuthWalk::Off);
            let formats = if i % 5 == 0 {
                (i % 16) as u32
            } else {
                ALL_FORMATS
            };
            let area = case.area();
            assert_eq!(
                walk(area, formats),
                module(area, formats),
                "{case} formats {formats:#x}"
            );
            let n = rng.below(45);
            let bytes = rng.bytes(n);
            assert_eq!(walk(&bytes, formats), module(&bytes, formats), "{bytes:?}");
        }
    }

    #[test]
    fn test_verdicts() {
        let client = "198.51.100.7:40001".parse().unwrap();
        assert_eq!(
            verdict(&V4, ALL_FORMATS, true, true),
            Verdict::Client {
                client,
                ipv6: false
            }
        );
        assert_eq!(
            verdict(&V4, ALL_FORMATS, true, false),
            Verdict::Kernel(Kept::Untrusted)
        );
        assert_eq!(
            verdict(&[254, 0, 0, 0], ALL_FORMATS, true, false),
            Verdict::Kernel(Kept::Malformed)
        );
        assert_eq!(
            verdict(&[], ALL_FORMATS, true, true),
            Verdict::Kernel(Kept::NoToa)
        );
        assert!(matches!(
            verdict(&v6(254), ALL_FORMATS, true, true),
            Verdict::Client { ipv6: true, .. }
        ));
    }

    #[test]
    fn test_auth_walk_drops_like_the_kernel() {
        // A silly length with 20 bytes left: every 6.7+ kernel drops it.
        let mut early = vec![2, 4, 5, 0xb4, 99, 1];
        early.extend([1; 18]);
        assert!(!AuthWalk::Off.drops(&early));
        assert!(AuthWalk::Md5.drops(&early));
        assert!(AuthWalk::Ao.drops(&early));
        // With 8 bytes left only the TCP-AO walk (minimum 5) still looks.
        let mut late = vec![2, 4, 5, 0xb4];
        late.extend([1; 8]);
        late.extend([99, 1, 1, 1, 1, 1, 1, 1]);
        assert!(!AuthWalk::Md5.drops(&late));
        assert!(AuthWalk::Ao.drops(&late));
        // Past the end, EOL first, and 4 bytes left (no walk at all).
        assert!(AuthWalk::Ao.drops(&[1, 1, 254, 30, 0, 0, 0, 0]));
        assert!(!AuthWalk::Ao.drops(&[0, 1, 254, 30, 0, 0, 0, 0]));
        assert!(!AuthWalk::Ao.drops(&[1, 1, 1, 1, 254, 0, 0, 0]));
        // Signature options: MD5 must be 18 bytes, AO more than 4, one only.
        assert!(AuthWalk::Ao.drops(&[19, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]));
        assert!(AuthWalk::Ao.drops(&[29, 4, 0, 0, 1, 1, 1, 1]));
        assert!(AuthWalk::Ao.drops(&[29, 6, 0, 0, 0, 0, 29, 6, 0, 0, 0, 0]));
        assert!(!AuthWalk::Ao.drops(&V4));
        assert!(!AuthWalk::Ao.drops(&v6(253)));
    }
}
