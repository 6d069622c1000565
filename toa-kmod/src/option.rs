//! Walking a TCP header's option area and recognising TOA.
//!
//! The option area is what follows the 20 fixed bytes of the TCP header, up to
//! `data offset * 4`. Layout of the TOA options (all multi-byte fields big endian):
//!
//! | kind | len | payload                   | sender                         |
//! |------|-----|---------------------------|--------------------------------|
//! | 254  | 8   | port (2), IPv4 (4)        | LVS FULLNAT, dpvs, Huawei, ... |
//! | 254  | 20  | port (2), IPv6 (16)       | dpvs IPv6 / NAT64              |
//! | 253  | 20  | port (2), IPv6 (16)       | Alibaba LVS IPv6, NAT64        |
//! | 200  | 8   | port (2), IPv4 (4)        | Tencent CLB                    |
//!
//! Kind 254 is also RFC 6994's shared experimental kind (TCP Fast Open's
//! experimental cookie uses it with other lengths), so kind alone never decides:
//! only the exact (kind, len) pairs above are TOA.

/// Byte offsets inside one option.
mod field {
    use core::ops::Range;
    pub const KIND: usize = 0;
    pub const LEN: usize = 1;
    pub const PORT: Range<usize> = 2..4;
    pub const ADDR: usize = 4;
}

pub const KIND_EOL: u8 = 0;
pub const KIND_NOP: u8 = 1;

/// The most option bytes a TCP header can carry (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// One TOA wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 254/8: port + IPv4.
    Lvs4,
    /// 254/20: port + IPv6.
    Lvs6,
    /// 253/20: port + IPv6.
    Ali6,
    /// 200/8: port + IPv4.
    Tencent4,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Lvs4, Format::Lvs6, Format::Ali6, Format::Tencent4];

    pub const fn kind(self) -> u8 {
        match self {
            Format::Lvs4 | Format::Lvs6 => 254,
            Format::Ali6 => 253,
            Format::Tencent4 => 200,
        }
    }

    /// The option's length byte on the wire. Not a container's length, so
    /// there is no `is_empty` to pair it with.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> u8 {
        match self {
            Format::Lvs4 | Format::Tencent4 => 8,
            Format::Lvs6 | Format::Ali6 => 20,
        }
    }

    /// Bit in the module parameter `formats` that enables this format.
    pub const fn bit(self) -> u32 {
        match self {
            Format::Lvs4 => 1 << 0,
            Format::Lvs6 => 1 << 1,
            Format::Ali6 => 1 << 2,
            Format::Tencent4 => 1 << 3,
        }
    }

    pub fn from_wire(kind: u8, len: u8) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.kind() == kind && f.len() == len)
    }
}

/// A set of enabled formats (bitmask of [`Format::bit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats(pub u32);

impl Formats {
    pub const ALL: Formats = Formats(0b1111);

    pub fn contains(self, f: Format) -> bool {
        self.0 & f.bit() != 0
    }
}

/// The client address a proxy put in the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// A recognised TOA option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toa {
    pub format: Format,
    /// Client port in host order.
    pub port: u16,
    pub addr: ClientAddr,
}

/// Why an option area cannot be walked. The connection still proceeds (the kernel
/// accepts it); only the TOA lookup gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A kind byte at the very end with no length byte after it.
    MissingLength,
    /// Length 0 or 1: cannot even cover kind and length; walking on would loop.
    ImpossibleLength,
    /// The length runs past the end of the option area.
    Truncated,
    /// More option bytes than a TCP header can hold.
    Oversized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Found(Toa),
    NotFound,
    Malformed(Malformed),
}

/// One step of the walk: the option at the front of `area` and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt<'a> {
    End,
    Nop,
    Other { kind: u8, body: &'a [u8] },
}

fn next_option(area: &[u8]) -> Result<(&[u8], Opt<'_>), Malformed> {
    let Some(&kind) = area.get(field::KIND) else {
        return Ok((area, Opt::End));
    };
    match kind {
        KIND_EOL => Ok((&[], Opt::End)),
        KIND_NOP => Ok((area.get(1..).unwrap_or_default(), Opt::Nop)),
        _ => {
            let len = *area.get(field::LEN).ok_or(Malformed::MissingLength)? as usize;
            if len < 2 {
                return Err(Malformed::ImpossibleLength);
            }
            let body = area.get(..len).ok_or(Malformed::Truncated)?;
            let rest = area.get(len..).unwrap_or_default();
            Ok((rest, Opt::Other { kind, body }))
        }
    }
}

fn decode(format: Format, body: &[u8]) -> Option<Toa> {
    let port = body.get(field::PORT)?;
    let port = u16::from_be_bytes([*port.first()?, *port.get(1)?]);
    let addr = body.get(field::ADDR..)?;
    let addr = match format {
        Format::Lvs4 | Format::Tencent4 => ClientAddr::V4(addr.try_into().ok()?),
        Format::Lvs6 | Format::Ali6 => ClientAddr::V6(addr.try_into().ok()?),
    };
    Some(Toa { format, port, addr })
}

/// Finds the first enabled TOA option in a TCP option area.
///
/// The whole area is validated even after a TOA is found: an area the kernel's own
/// parser would give up on is not trusted to carry a client address either.
pub fn scan(area: &[u8], formats: Formats) -> Scan {
    if area.len() > MAX_OPTIONS_LEN {
        return Scan::Malformed(Malformed::Oversized);
    }
    let mut found = None;
    let mut rest = area;
    loop {
        match next_option(rest) {
            Err(why) => return Scan::Malformed(why),
            Ok((_, Opt::End)) => break,
            Ok((tail, Opt::Nop)) => rest = tail,
            Ok((tail, Opt::Other { kind, body })) => {
                rest = tail;
                if found.is_some() {
                    continue;
                }
                let len = body.len() as u8;
                if let Some(format) = Format::from_wire(kind, len).filter(|f| formats.contains(*f))
                {
                    found = decode(format, body);
                }
            }
        }
    }
    match found {
        Some(toa) => Scan::Found(toa),
        None => Scan::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 8] = [254, 8, 0x9c, 0x41, 198, 51, 100, 7];
    const V6: [u8; 20] = [
        254, 20, 0x9c, 0x42, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
    ];

    fn v4(format: Format) -> Scan {
        Scan::Found(Toa {
            format,
            port: 40001,
            addr: ClientAddr::V4([198, 51, 100, 7]),
        })
    }

    fn v6(format: Format) -> Scan {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = 7;
        Scan::Found(Toa {
            format,
            port: 40002,
            addr: ClientAddr::V6(a),
        })
    }

    fn with_kind(bytes: &[u8], kind: u8) -> std::vec::Vec<u8> {
        let mut v = bytes.to_vec();
        v[0] = kind;
        v
    }

    #[test]
    fn test_each_format() {
        let cases: &[(std::vec::Vec<u8>, Scan)] = &[
            (V4.to_vec(), v4(Format::Lvs4)),
            (with_kind(&V4, 200), v4(Format::Tencent4)),
            (V6.to_vec(), v6(Format::Lvs6)),
            (with_kind(&V6, 253), v6(Format::Ali6)),
        ];
        for (bytes, want) in cases {
            assert_eq!(scan(bytes, Formats::ALL), *want, "{bytes:?}");
        }
    }

    #[test]
    fn test_after_other_options() {
        // MSS, NOP, NOP, SACK-permitted, then TOA, then EOL padding.
        let mut area = vec![2, 4, 0x05, 0xb4, 1, 1, 4, 2];
        area.extend_from_slice(&V4);
        area.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(scan(&area, Formats::ALL), v4(Format::Lvs4));
    }

    #[test]
    fn test_formats_mask_narrows() {
        assert_eq!(scan(&V4, Formats(Format::Lvs6.bit())), Scan::NotFound);
        assert_eq!(
            scan(&with_kind(&V4, 200), Formats(Format::Lvs4.bit())),
            Scan::NotFound
        );
        assert_eq!(scan(&V6, Formats(Format::Lvs6.bit())), v6(Format::Lvs6));
    }

    #[test]
    fn test_first_toa_wins() {
        let mut area = V4.to_vec();
        area.extend_from_slice(&with_kind(&V4, 200));
        assert_eq!(scan(&area, Formats::ALL), v4(Format::Lvs4));
    }

    #[test]
    fn test_empty_and_padding() {
        assert_eq!(scan(&[], Formats::ALL), Scan::NotFound);
        assert_eq!(scan(&[1, 1, 1, 1], Formats::ALL), Scan::NotFound);
        assert_eq!(scan(&[0, 254, 0, 0], Formats::ALL), Scan::NotFound);
    }

    #[test]
    fn test_eol_hides_what_follows() {
        let mut area = vec![0];
        area.extend_from_slice(&V4);
        assert_eq!(scan(&area, Formats::ALL), Scan::NotFound);
    }

    #[test]
    fn test_wrong_length_for_kind_is_not_toa() {
        // TFO experimental cookie request: kind 254, len 4, ExID 0xF989.
        assert_eq!(scan(&[254, 4, 0xf9, 0x89], Formats::ALL), Scan::NotFound);
        assert_eq!(
            scan(&[253, 8, 0, 1, 10, 0, 0, 1], Formats::ALL),
            Scan::NotFound
        );
        assert_eq!(
            scan(
                &[200, 20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Formats::ALL
            ),
            Scan::NotFound
        );
        // TFO cookie beside a TOA: the TOA is still found.
        let mut area = vec![254, 6, 0xf9, 0x89, 1, 2, 1, 1];
        area.extend_from_slice(&V4);
        assert_eq!(scan(&area, Formats::ALL), v4(Format::Lvs4));
    }

    #[test]
    fn test_impossible_len() {
        assert_eq!(
            scan(&[254, 0, 0, 0], Formats::ALL),
            Scan::Malformed(Malformed::ImpossibleLength)
        );
        assert_eq!(
            scan(&[254, 1, 0, 0], Formats::ALL),
            Scan::Malformed(Malformed::ImpossibleLength)
        );
    }

    #[test]
    fn test_truncated() {
        assert_eq!(
            scan(&V4[..7], Formats::ALL),
            Scan::Malformed(Malformed::Truncated)
        );
        assert_eq!(
            scan(&[2, 4, 5], Formats::ALL),
            Scan::Malformed(Malformed::Truncated)
        );
        assert_eq!(
            scan(&[1, 1, 254], Formats::ALL),
            Scan::Malformed(Malformed::MissingLength)
        );
    }

    #[test]
    fn test_malformed_after_toa_discards_it() {
        let mut area = V4.to_vec();
        area.extend_from_slice(&[8, 0]);
        assert_eq!(
            scan(&area, Formats::ALL),
            Scan::Malformed(Malformed::ImpossibleLength)
        );
    }

    #[test]
    fn test_oversized() {
        assert_eq!(
            scan(&[1; 41], Formats::ALL),
            Scan::Malformed(Malformed::Oversized)
        );
        assert_eq!(scan(&[1; 40], Formats::ALL), Scan::NotFound);
    }
}
