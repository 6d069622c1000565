//! Trusted proxies: the sources a TOA is believed from.
//!
//! TOA lets any packet claim any client address. With `trusted_proxies` set,
//! only handshakes whose packet comes from one of these networks may carry one;
//! the rest keep the kernel's own answer. The list is parsed here (no
//! allocation: the C side hands in an array) and matched per handshake.

use crate::option::ClientAddr;
use crate::peer::Endpoint;

/// One network, as the C side stores it (`struct toa_cidr`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cidr {
    /// 4 or 6.
    pub family: u8,
    /// Prefix length: 0..=32 or 0..=128.
    pub prefix: u8,
    /// Network address, host bits cleared; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

/// Why a list was refused, with the byte offset of the entry at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not an IPv4 or IPv6 address.
    BadAddress(usize),
    /// Prefix missing digits, too long for the family, or not a number.
    BadPrefix(usize),
    /// Host bits set below the prefix (e.g. 10.0.0.1/8): almost always a typo.
    HostBitsSet(usize),
    /// More entries than the caller's array holds.
    TooMany(usize),
    /// An empty entry between commas.
    Empty(usize),
}

impl ParseError {
    pub fn offset(self) -> usize {
        match self {
            ParseError::BadAddress(o)
            | ParseError::BadPrefix(o)
            | ParseError::HostBitsSet(o)
            | ParseError::TooMany(o)
            | ParseError::Empty(o) => o,
        }
    }
}

/// Parses `a.b.c.d[/n]` or an IPv6 address with an optional `/n`; a bare
/// address means that one host.
fn parse_one(entry: &[u8], at: usize) -> Result<Cidr, ParseError> {
    let (addr_part, prefix_part) = match entry.iter().position(|b| *b == b'/') {
        Some(slash) => (
            entry.get(..slash).unwrap_or_default(),
            Some(entry.get(slash + 1..).unwrap_or_default()),
        ),
        None => (entry, None),
    };
    let (family, addr, max) = if addr_part.contains(&b':') {
        (
            6u8,
            parse_v6(addr_part).ok_or(ParseError::BadAddress(at))?,
            128u8,
        )
    } else {
        let v4 = parse_v4(addr_part).ok_or(ParseError::BadAddress(at))?;
        let mut a = [0u8; 16];
        a[0] = v4[0];
        a[1] = v4[1];
        a[2] = v4[2];
        a[3] = v4[3];
        (4u8, a, 32u8)
    };
    let prefix = match prefix_part {
        None => max,
        Some(p) => parse_decimal(p, max as u32).ok_or(ParseError::BadPrefix(at))? as u8,
    };
    if masked(&addr, prefix) != addr {
        return Err(ParseError::HostBitsSet(at));
    }
    Ok(Cidr {
        family,
        prefix,
        addr,
    })
}

fn parse_decimal(digits: &[u8], max: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    let mut v: u32 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    (v <= max).then_some(v)
}

fn parse_v4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split(|b| *b == b'.');
    for slot in out.iter_mut() {
        let p = parts.next()?;
        // No leading zeros: "010" is octal to some parsers, decimal to others.
        if p.len() > 1 && p.first() == Some(&b'0') {
            return None;
        }
        *slot = parse_decimal(p, 255)? as u8;
    }
    parts.next().is_none().then_some(out)
}

fn parse_hex16(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    let mut v: u16 = 0;
    for c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u16::from(d);
    }
    Some(v)
}

/// RFC 4291 text form with `::`; an embedded IPv4 tail is not accepted (write
/// IPv4 proxies as IPv4: the kernel reports them so).
fn parse_v6(s: &[u8]) -> Option<[u8; 16]> {
    let mut groups = [0u16; 8];
    let (head, tail) = match find_double_colon(s) {
        Some(i) => (s.get(..i)?, Some(s.get(i + 2..)?)),
        None => (s, None),
    };
    let mut n_head = 0;
    if !head.is_empty() {
        for g in head.split(|b| *b == b':') {
            *groups.get_mut(n_head)? = parse_hex16(g)?;
            n_head += 1;
        }
    }
    match tail {
        None => {
            if n_head != 8 {
                return None;
            }
        }
        Some(tail) => {
            let mut rest = [0u16; 8];
            let mut n_tail = 0;
            if !tail.is_empty() {
                for g in tail.split(|b| *b == b':') {
                    *rest.get_mut(n_tail)? = parse_hex16(g)?;
                    n_tail += 1;
                }
            }
            // `::` stands for at least one group of zeros.
            if n_head + n_tail > 7 {
                return None;
            }
            for i in 0..n_tail {
                *groups.get_mut(8 - n_tail + i)? = *rest.get(i)?;
            }
        }
    }
    let mut out = [0u8; 16];
    for (i, g) in groups.iter().enumerate() {
        let [hi, lo] = g.to_be_bytes();
        *out.get_mut(2 * i)? = hi;
        *out.get_mut(2 * i + 1)? = lo;
    }
    Some(out)
}

fn find_double_colon(s: &[u8]) -> Option<usize> {
    let first = s.windows(2).position(|w| matches!(w, [b':', b':']))?;
    // A second `::` is ambiguous.
    let after = s.get(first + 2..)?;
    if after.windows(2).any(|w| matches!(w, [b':', b':'])) {
        return None;
    }
    Some(first)
}

fn masked(addr: &[u8; 16], prefix: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, (o, a)) in out.iter_mut().zip(addr.iter()).enumerate() {
        let bits_before = (i as u32) * 8;
        let keep = u32::from(prefix).saturating_sub(bits_before).min(8);
        let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *o = a & mask;
    }
    out
}

/// Parses a comma-separated list (spaces and a trailing newline allowed) into
/// `out`; returns how many entries were written. Empty input gives 0: trust all.
pub fn parse_list(text: &[u8], out: &mut [Cidr]) -> Result<usize, ParseError> {
    let text = trim(text);
    if text.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    let mut offset = 0;
    for raw in text.split(|b| *b == b',') {
        let lead = raw.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let entry = trim(raw);
        let at = offset + lead;
        if entry.is_empty() {
            return Err(ParseError::Empty(at));
        }
        let cidr = parse_one(entry, at)?;
        *out.get_mut(n).ok_or(ParseError::TooMany(at))? = cidr;
        n += 1;
        offset += raw.len() + 1;
    }
    Ok(n)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or_default()
}

/// Whether `source` (the handshake packet's source) lies in one of `cidrs`.
pub fn contains(cidrs: &[Cidr], source: &Endpoint) -> bool {
    let (family, addr) = match source.addr {
        ClientAddr::V4(a) => (
            4u8,
            [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        ClientAddr::V6(a) => (6u8, a),
    };
    cidrs
        .iter()
        .any(|c| c.family == family && masked(&addr, c.prefix) == c.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<std::vec::Vec<Cidr>, ParseError> {
        let mut out = [Cidr::default(); 8];
        let n = parse_list(s.as_bytes(), &mut out)?;
        Ok(out[..n].to_vec())
    }

    fn v4(a: [u8; 4]) -> Endpoint {
        Endpoint::new(1, ClientAddr::V4(a))
    }

    fn v6(s: &str) -> Endpoint {
        Endpoint::new(1, ClientAddr::V6(parse_v6(s.as_bytes()).unwrap()))
    }

    #[test]
    fn test_lists() {
        let list = parse(" 10.0.0.0/8, 192.168.1.5 ,fd00::/64,2001:db8::1\n").unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!((list[0].family, list[0].prefix), (4, 8));
        assert_eq!((list[1].family, list[1].prefix), (4, 32));
        assert_eq!((list[2].family, list[2].prefix), (6, 64));
        assert_eq!((list[3].family, list[3].prefix), (6, 128));
        assert!(contains(&list, &v4([10, 200, 3, 4])));
        assert!(contains(&list, &v4([192, 168, 1, 5])));
        assert!(!contains(&list, &v4([192, 168, 1, 6])));
        assert!(contains(&list, &v6("fd00::abcd")));
        assert!(!contains(&list, &v6("fd00:0:0:1::2")));
        assert!(contains(&list, &v6("2001:db8::1")));
        // Endpoint folds an IPv4-mapped source to IPv4, so a v4 network matches it.
        let mapped = Endpoint::new(
            1,
            ClientAddr::V6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 1, 1]),
        );
        assert!(contains(&list, &mapped));
        assert_eq!(parse("").unwrap().len(), 0);
        assert_eq!(parse(" \n").unwrap().len(), 0);
        assert!(contains(&parse("0.0.0.0/0").unwrap(), &v4([1, 2, 3, 4])));
        assert!(!contains(&parse("0.0.0.0/0").unwrap(), &v6("::1")));
    }

    #[test]
    fn test_v6_forms() {
        assert_eq!(parse_v6(b"::"), Some([0; 16]));
        assert_eq!(parse_v6(b"::1").unwrap()[15], 1);
        assert_eq!(parse_v6(b"1::").unwrap()[1], 1);
        assert_eq!(parse_v6(b"1:2:3:4:5:6:7:8").unwrap()[15], 8);
        for bad in [
            "1:2:3:4:5:6:7",
            "1::2::3",
            "1:2:3:4:5:6:7:8:9",
            "12345::",
            "g::",
            ":1",
            "1:2:3:4:5:6:7::8",
        ] {
            assert_eq!(parse_v6(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn test_errors_name_the_entry() {
        assert_eq!(
            parse("10.0.0.0/8,10.0.0.256"),
            Err(ParseError::BadAddress(11))
        );
        assert_eq!(parse("10.0.0.0/33"), Err(ParseError::BadPrefix(0)));
        assert_eq!(parse("10.0.0.0/"), Err(ParseError::BadPrefix(0)));
        assert_eq!(parse("10.0.0.1/8"), Err(ParseError::HostBitsSet(0)));
        assert_eq!(parse("fd00::1/64"), Err(ParseError::HostBitsSet(0)));
        assert_eq!(parse("10.0.0.0/8,,1.1.1.1"), Err(ParseError::Empty(11)));
        assert_eq!(parse("010.0.0.0/8"), Err(ParseError::BadAddress(0)));
        assert_eq!(parse("10.0.0/8"), Err(ParseError::BadAddress(0)));
        assert_eq!(
            parse("1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4,5.5.5.5,6.6.6.6,7.7.7.7,8.8.8.8,9.9.9.9"),
            Err(ParseError::TooMany(64))
        );
    }
}
