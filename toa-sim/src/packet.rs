//! Building and parsing the IPv4/IPv6 + TCP packets that cross the TUN device.
//!
//! Only what the proxy simulator needs: no IP options, no extension headers,
//! no fragments. Incoming packets the kernel sends (MLD, router
//! solicitations, ...) parse to `None` and are ignored by the caller.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const IPPROTO_TCP: u8 = 6;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const TTL: u8 = 64;

/// TCP header flag bits (byte 13).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Byte offsets inside the TCP header.
mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// Option kinds used when we build a SYN.
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;

/// Everything the simulator sets in an outgoing segment.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes; padded with NOPs to a multiple of 4 on build.
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

/// A TCP segment read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment occupies (SYN and FIN count as one each).
    pub fn seq_len(&self) -> u32 {
        // A segment on a 1500-byte TUN cannot exceed u32; the cast is exact.
        self.payload.len() as u32
            + u32::from(self.has(flags::SYN))
            + u32::from(self.has(flags::FIN))
    }
}

impl std::fmt::Display for Received {
    /// tcpdump-like one-liner for `--trace`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (flags::SYN, 'S'),
            (flags::FIN, 'F'),
            (flags::RST, 'R'),
            (flags::PSH, 'P'),
            (flags::ACK, '.'),
        ];
        let fl: String = names
            .iter()
            .filter(|(b, _)| self.has(*b))
            .map(|(_, c)| *c)
            .collect();
        write!(
            f,
            "{} > {} [{fl}] seq={} ack={} win={} len={}",
            self.src,
            self.dst,
            self.seq,
            self.ack,
            self.window,
            self.payload.len()
        )?;
        if !self.options.is_empty() {
            let hex: Vec<String> = self.options.iter().map(|b| format!("{b:02x}")).collect();
            write!(f, " opts={}", hex.join(""))?;
        }
        Ok(())
    }
}

/// One's-complement sum of 16-bit big-endian words, not yet folded.
fn sum_words(data: &[u8], mut acc: u32) -> u32 {
    let (pairs, last) = data.as_chunks::<2>();
    for pair in pairs {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes(*pair)));
    }
    if let [last] = last {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// RFC 1071 Internet checksum of `data` (the checksum field must be zero,
/// or included when verifying, in which case a valid packet gives 0).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum_words(&s.octets(), 0);
            let acc = sum_words(&d.octets(), acc);
            acc + u32::from(IPPROTO_TCP) + tcp_len as u32
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let acc = sum_words(&s.octets(), 0);
            let acc = sum_words(&d.octets(), acc);
            // Upper-layer length is 32 bits in the IPv6 pseudo header.
            let acc = sum_words(&(tcp_len as u32).to_be_bytes(), acc);
            acc + u32::from(IPPROTO_TCP)
        }
        _ => panic!("pseudo header for mixed address families"),
    }
}

/// Checksum of a TCP segment (header + payload) including the pseudo header.
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> u16 {
    !fold(sum_words(tcp, pseudo_header_sum(src, dst, tcp.len())))
}

/// Pads an options area with NOPs so the data offset stays a whole number of
/// 32-bit words.
pub fn pad_options(options: &[u8]) -> Vec<u8> {
    let mut out = options.to_vec();
    while !out.len().is_multiple_of(4) {
        out.push(OPT_NOP);
    }
    out
}

/// MSS option for a SYN: the only option the simulator offers, so the kernel
/// answers without timestamps, SACK or window scaling.
pub fn mss_option(mss: u16) -> [u8; 4] {
    let [hi, lo] = mss.to_be_bytes();
    [OPT_MSS, 4, hi, lo]
}

/// Builds a full IP packet. `ip_id` only matters for IPv4.
///
/// Panics if `src` and `dst` differ in family or the options exceed the 40
/// bytes a TCP header can hold: both are programming errors of the caller.
pub fn build(seg: &Segment<'_>, ip_id: u16) -> Vec<u8> {
    let options = pad_options(seg.options);
    assert!(options.len() <= 40, "TCP options longer than 40 bytes");
    let tcp_len = TCP_HEADER_LEN + options.len() + seg.payload.len();

    let mut tcp = vec![0u8; TCP_HEADER_LEN];
    tcp[field::SRC_PORT].copy_from_slice(&seg.src.port().to_be_bytes());
    tcp[field::DST_PORT].copy_from_slice(&seg.dst.port().to_be_bytes());
    tcp[field::SEQ].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[field::ACK].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[field::DATA_OFFSET] = (((TCP_HEADER_LEN + options.len()) / 4) as u8) << 4;
    tcp[field::FLAGS] = seg.flags;
    tcp[field::WINDOW].copy_from_slice(&seg.window.to_be_bytes());
    tcp.extend_from_slice(&options);
    tcp.extend_from_slice(seg.payload);
    let csum = tcp_checksum(seg.src.ip(), seg.dst.ip(), &tcp);
    tcp[field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());

    let mut packet = match (seg.src.ip(), seg.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(s, d, tcp_len, ip_id),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_header(s, d, tcp_len),
        _ => panic!("segment {} -> {} mixes address families", seg.src, seg.dst),
    };
    packet.extend_from_slice(&tcp);
    packet
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize, id: u16) -> Vec<u8> {
    let total = (IPV4_HEADER_LEN + payload_len) as u16;
    let mut h = vec![0u8; IPV4_HEADER_LEN];
    h[0] = 0x45; // version 4, IHL 5
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6] = 0x40; // DF: the kernel would otherwise be free to expect fragments
    h[8] = TTL;
    h[9] = IPPROTO_TCP;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let csum = internet_checksum(&h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; IPV6_HEADER_LEN];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = IPPROTO_TCP;
    h[7] = TTL;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// Why a packet read from the TUN was not handed to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP, or an IP layout we never send (fragments, IPv6 extension headers).
    NotTcp,
    /// Lengths inside the headers do not fit the packet.
    Truncated,
    BadChecksum,
}

/// Parses a packet read from the TUN. Checksums are verified: the kernel
/// computes them in full for a TUN without offloads, so a mismatch means the
/// packet was not one the kernel meant for us.
pub fn parse(packet: &[u8]) -> Result<Received, Skip> {
    let version = packet.first().ok_or(Skip::Truncated)? >> 4;
    let (src, dst, tcp) = match version {
        4 => parse_ipv4(packet)?,
        6 => parse_ipv6(packet)?,
        _ => return Err(Skip::NotTcp),
    };
    if tcp.len() < TCP_HEADER_LEN {
        return Err(Skip::Truncated);
    }
    let data_offset = usize::from(tcp[field::DATA_OFFSET] >> 4) * 4;
    if data_offset < TCP_HEADER_LEN || data_offset > tcp.len() {
        return Err(Skip::Truncated);
    }
    if tcp_checksum(src, dst, tcp) != 0 {
        return Err(Skip::BadChecksum);
    }
    let be16 = |r: std::ops::Range<usize>| u16::from_be_bytes([tcp[r.start], tcp[r.start + 1]]);
    let be32 = |r: std::ops::Range<usize>| {
        u32::from_be_bytes([
            tcp[r.start],
            tcp[r.start + 1],
            tcp[r.start + 2],
            tcp[r.start + 3],
        ])
    };
    Ok(Received {
        src: SocketAddr::new(src, be16(field::SRC_PORT)),
        dst: SocketAddr::new(dst, be16(field::DST_PORT)),
        seq: be32(field::SEQ),
        ack: be32(field::ACK),
        flags: tcp[field::FLAGS],
        window: be16(field::WINDOW),
        options: tcp[TCP_HEADER_LEN..data_offset].to_vec(),
        payload: tcp[data_offset..].to_vec(),
    })
}

fn parse_ipv4(p: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), Skip> {
    if p.len() < IPV4_HEADER_LEN {
        return Err(Skip::Truncated);
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < IPV4_HEADER_LEN || total < ihl || total > p.len() {
        return Err(Skip::Truncated);
    }
    let more_fragments = p[6] & 0x20 != 0;
    let frag_offset = u16::from_be_bytes([p[6] & 0x1f, p[7]]);
    if p[9] != IPPROTO_TCP || more_fragments || frag_offset != 0 {
        return Err(Skip::NotTcp);
    }
    if internet_checksum(&p[..ihl]) != 0 {
        return Err(Skip::BadChecksum);
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Ok((src.into(), dst.into(), &p[ihl..total]))
}

fn parse_ipv6(p: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), Skip> {
    if p.len() < IPV6_HEADER_LEN {
        return Err(Skip::Truncated);
    }
    let payload_len = usize::from(u16::from_be_bytes([p[4], p[5]]));
    if IPV6_HEADER_LEN + payload_len > p.len() {
        return Err(Skip::Truncated);
    }
    if p[6] != IPPROTO_TCP {
        return Err(Skip::NotTcp);
    }
    let octets = |at: usize| -> [u8; 16] { p[at..at + 16].try_into().expect("16-byte slice") };
    let src = Ipv6Addr::from(octets(8));
    let dst = Ipv6Addr::from(octets(24));
    Ok((
        src.into(),
        dst.into(),
        &p[IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg<'a>(src: &str, dst: &str, options: &'a [u8], payload: &'a [u8]) -> Segment<'a> {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 0x0102_0304,
            ack: 0xa0b0_c0d0,
            flags: flags::ACK | flags::PSH,
            window: 65535,
            options,
            payload,
        }
    }

    #[test]
    fn test_checksum_rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn test_checksum_odd_length() {
        // An odd trailing byte is padded with a zero on the right.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(internet_checksum(&[0x12, 0x00]), !0x1200);
    }

    #[test]
    fn test_ipv4_header_checksum_known_packet() {
        // A classic example header (Wikipedia "IPv4 header checksum").
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header), 0xb861);
    }

    #[test]
    fn test_tcp_checksum_known_segment() {
        // SYN 10.0.0.2:40000 -> 10.0.0.1:8080 seq 1, MSS 1460; checksum
        // computed independently (python: sum of pseudo header + segment).
        let mut tcp = [
            0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
            0x02, 0x04, 0x05, 0xb4,
        ];
        let src: IpAddr = "10.0.0.2".parse().unwrap();
        let dst: IpAddr = "10.0.0.1".parse().unwrap();
        let csum = tcp_checksum(src, dst, &tcp);
        assert_eq!(csum, 0xc852);
        tcp[16..18].copy_from_slice(&csum.to_be_bytes());
        assert_eq!(tcp_checksum(src, dst, &tcp), 0);
    }

    #[test]
    fn test_pad_options_with_nop() {
        assert_eq!(pad_options(&[]), Vec::<u8>::new());
        assert_eq!(pad_options(&[2, 4, 5, 0xb4]), [2, 4, 5, 0xb4]);
        assert_eq!(pad_options(&[9, 3, 0]), [9, 3, 0, OPT_NOP]);
        assert_eq!(pad_options(&[9, 2]), [9, 2, OPT_NOP, OPT_NOP]);
    }

    #[test]
    fn test_build_parse_roundtrip_v4() {
        let opts = [254, 8, 0x9c, 0x41, 198, 51, 100, 7];
        let s = seg("10.0.0.2:40000", "10.0.0.1:8080", &opts, b"hello\n");
        let packet = build(&s, 7);
        assert_eq!(packet.len(), 20 + 20 + 8 + 6);
        assert_eq!(packet[0], 0x45);
        assert_eq!(internet_checksum(&packet[..20]), 0, "IPv4 header checksum");
        assert_eq!(
            packet[20 + 12] >> 4,
            7,
            "data offset: 20 + 8 bytes = 7 words"
        );
        let r = parse(&packet).unwrap();
        assert_eq!(r.src, s.src);
        assert_eq!(r.dst, s.dst);
        assert_eq!(
            (r.seq, r.ack, r.flags, r.window),
            (s.seq, s.ack, s.flags, s.window)
        );
        assert_eq!(r.options, opts);
        assert_eq!(r.payload, b"hello\n");
    }

    #[test]
    fn test_build_parse_roundtrip_v6_with_padding() {
        let opts = [9, 3, 1]; // 3 bytes: one NOP is appended
        let s = seg("[fd00::2]:40000", "[fd00::1]:8081", &opts, b"");
        let packet = build(&s, 0);
        assert_eq!(packet.len(), 40 + 20 + 4);
        assert_eq!(packet[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 24);
        let r = parse(&packet).unwrap();
        assert_eq!(r.options, [9, 3, 1, OPT_NOP]);
        assert!(r.payload.is_empty());
        assert_eq!(r.seq_len(), 0);
    }

    #[test]
    fn test_seq_len_counts_syn_and_fin() {
        let mut s = seg("10.0.0.2:1", "10.0.0.1:2", &[], b"ok\n");
        s.flags = flags::FIN | flags::ACK;
        assert_eq!(parse(&build(&s, 0)).unwrap().seq_len(), 4);
        s.flags = flags::SYN;
        s.payload = b"";
        assert_eq!(parse(&build(&s, 0)).unwrap().seq_len(), 1);
    }

    #[test]
    fn test_corrupted_payload_is_bad_checksum() {
        let s = seg("10.0.0.2:1", "10.0.0.1:2", &[], b"hello\n");
        let mut packet = build(&s, 0);
        *packet.last_mut().unwrap() ^= 0xff;
        assert_eq!(parse(&packet), Err(Skip::BadChecksum));
    }

    #[test]
    fn test_truncated() {
        let s = seg("10.0.0.2:1", "10.0.0.1:2", &[], b"hello\n");
        let packet = build(&s, 0);
        assert_eq!(parse(&packet[..30]), Err(Skip::Truncated));
        assert_eq!(parse(&[]), Err(Skip::Truncated));
        assert_eq!(parse(&[0x45]), Err(Skip::Truncated));
    }

    #[test]
    fn test_impossible_data_offset() {
        let s = seg("10.0.0.2:1", "10.0.0.1:2", &[], b"");
        let mut packet = build(&s, 0);
        packet[20 + 12] = 0xf0; // 60-byte header in a 20-byte segment
        assert_eq!(parse(&packet), Err(Skip::Truncated));
        packet[20 + 12] = 0x40; // 16 bytes: shorter than a TCP header
        assert_eq!(parse(&packet), Err(Skip::Truncated));
    }

    #[test]
    fn test_non_tcp_is_skipped() {
        let s = seg("[fd00::2]:1", "[fd00::1]:2", &[], b"");
        let mut packet = build(&s, 0);
        packet[6] = 58; // ICMPv6
        assert_eq!(parse(&packet), Err(Skip::NotTcp));
        assert_eq!(parse(&[0x20; 40]), Err(Skip::NotTcp));
    }

    #[test]
    fn test_mss_option() {
        assert_eq!(mss_option(1460), [2, 4, 0x05, 0xb4]);
    }
}
