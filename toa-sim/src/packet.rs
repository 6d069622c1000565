//! Building and parsing the IPv4/IPv6 + TCP packets that cross the TUN device.
//!
//! Headers and checksums are etherparse's; this module keeps what the
//! simulator decides: raw TCP option bytes (so any TOA, valid or not, can be
//! sent), IPv4 identification and DF, and which packets it ignores. Only
//! what the proxy simulator needs: no IP options, no extension headers, no
//! fragments. Incoming packets the kernel sends (MLD, router solicitations,
//! ...) parse to a [`Skip`] and are ignored by the caller.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{
    IpNumber, Ipv4Header, Ipv4HeaderSlice, Ipv6Header, Ipv6HeaderSlice, TcpHeader, TcpHeaderSlice,
};

pub const IPPROTO_TCP: u8 = 6;

const TTL: u8 = 64;

/// TCP header flag bits (byte 13).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
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

/// The TCP header of `seg`, options set, checksum not yet computed.
fn tcp_header(seg: &Segment<'_>) -> TcpHeader {
    let mut tcp = TcpHeader::new(seg.src.port(), seg.dst.port(), seg.seq, seg.window);
    tcp.acknowledgment_number = seg.ack;
    tcp.fin = seg.flags & flags::FIN != 0;
    tcp.syn = seg.flags & flags::SYN != 0;
    tcp.rst = seg.flags & flags::RST != 0;
    tcp.psh = seg.flags & flags::PSH != 0;
    tcp.ack = seg.flags & flags::ACK != 0;
    tcp.set_options_raw(&pad_options(seg.options))
        .expect("TCP options longer than 40 bytes");
    tcp
}

/// Builds a full IP packet. `ip_id` only matters for IPv4.
///
/// Panics if `src` and `dst` differ in family or the options exceed the 40
/// bytes a TCP header can hold: both are programming errors of the caller.
pub fn build(seg: &Segment<'_>, ip_id: u16) -> Vec<u8> {
    let mut tcp = tcp_header(seg);
    let tcp_len = tcp.header_len() + seg.payload.len();
    // A segment on a 1500-byte TUN: every length below fits its field.
    let too_big = "a TCP segment larger than an IP packet";
    let mut packet = Vec::with_capacity(40 + tcp_len);
    match (seg.src.ip(), seg.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip =
                Ipv4Header::new(tcp_len as u16, TTL, IpNumber::TCP, s.octets(), d.octets())
                    .expect(too_big);
            ip.identification = ip_id;
            // DF: the kernel would otherwise be free to expect fragments.
            ip.dont_fragment = true;
            ip.header_checksum = ip.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&ip, seg.payload).expect(too_big);
            packet.extend_from_slice(&ip.to_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Header {
                payload_length: tcp_len as u16,
                next_header: IpNumber::TCP,
                hop_limit: TTL,
                source: s.octets(),
                destination: d.octets(),
                ..Ipv6Header::default()
            };
            tcp.checksum = tcp.calc_checksum_ipv6(&ip, seg.payload).expect(too_big);
            packet.extend_from_slice(&ip.to_bytes());
        }
        _ => panic!("segment {} -> {} mixes address families", seg.src, seg.dst),
    }
    packet.extend_from_slice(&tcp.to_bytes());
    packet.extend_from_slice(seg.payload);
    packet
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
    let (src, dst, segment) = match version {
        4 => parse_ipv4(packet)?,
        6 => parse_ipv6(packet)?,
        _ => return Err(Skip::NotTcp),
    };
    // Too short for a header, or a data offset below 5 or past the end.
    let tcp = TcpHeaderSlice::from_slice(segment).map_err(|_| Skip::Truncated)?;
    let payload = &segment[tcp.slice().len()..];
    let checksum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            tcp.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            tcp.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload)
        }
        _ => unreachable!("one IP header has one family"),
    };
    if !same_checksum(checksum.map_err(|_| Skip::Truncated)?, tcp.checksum()) {
        return Err(Skip::BadChecksum);
    }
    let flag_bits = [
        (tcp.fin(), flags::FIN),
        (tcp.syn(), flags::SYN),
        (tcp.rst(), flags::RST),
        (tcp.psh(), flags::PSH),
        (tcp.ack(), flags::ACK),
        (tcp.urg(), 0x20),
        (tcp.ece(), 0x40),
        (tcp.cwr(), 0x80),
    ];
    Ok(Received {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: flag_bits
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |f, (_, bit)| f | bit),
        window: tcp.window_size(),
        options: tcp.options().to_vec(),
        payload: payload.to_vec(),
    })
}

/// One's complement has two zeros: the kernel's skb_checksum_help() writes a
/// computed 0 as 0xffff (CSUM_MANGLED_0), and both verify on the wire.
fn same_checksum(computed: u16, in_header: u16) -> bool {
    computed == in_header
        || (computed == 0 && in_header == 0xffff)
        || (computed == 0xffff && in_header == 0)
}

fn parse_ipv4(p: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), Skip> {
    let ip = Ipv4HeaderSlice::from_slice(p).map_err(|_| Skip::Truncated)?;
    let (header_len, total) = (ip.slice().len(), usize::from(ip.total_len()));
    if total < header_len || total > p.len() {
        return Err(Skip::Truncated);
    }
    let fragment = ip.more_fragments() || ip.fragments_offset().value() != 0;
    if ip.protocol() != IpNumber::TCP || fragment {
        return Err(Skip::NotTcp);
    }
    if ip.to_header().calc_header_checksum() != ip.header_checksum() {
        return Err(Skip::BadChecksum);
    }
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (ip.source_addr(), ip.destination_addr());
    Ok((src.into(), dst.into(), &p[header_len..total]))
}

fn parse_ipv6(p: &[u8]) -> Result<(IpAddr, IpAddr, &[u8]), Skip> {
    let ip = Ipv6HeaderSlice::from_slice(p).map_err(|_| Skip::Truncated)?;
    let end = Ipv6Header::LEN + usize::from(ip.payload_length());
    if end > p.len() {
        return Err(Skip::Truncated);
    }
    if ip.next_header() != IpNumber::TCP {
        return Err(Skip::NotTcp);
    }
    let (src, dst): (Ipv6Addr, Ipv6Addr) = (ip.source_addr(), ip.destination_addr());
    Ok((src.into(), dst.into(), &p[Ipv6Header::LEN..end]))
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
    fn test_ipv4_header_checksum_known_packet() {
        // A classic example header (Wikipedia "IPv4 header checksum"): the
        // checksum etherparse computes is the published one.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let ip = Ipv4HeaderSlice::from_slice(&header).unwrap();
        assert_eq!(ip.to_header().calc_header_checksum(), 0xb861);
    }

    #[test]
    fn test_tcp_checksum_known_segment() {
        // SYN 10.0.0.2:40000 -> 10.0.0.1:8080 seq 1, MSS 1460; checksum
        // computed independently (python: sum of pseudo header + segment).
        let mss = mss_option(1460);
        let mut s = seg("10.0.0.2:40000", "10.0.0.1:8080", &mss, b"");
        (s.seq, s.ack, s.flags, s.window) = (1, 0, flags::SYN, 65535);
        let packet = build(&s, 0);
        assert_eq!(&packet[20 + 16..20 + 18], &[0xc8, 0x52]);
        assert_eq!(
            &packet[20..],
            [
                0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0xc8, 0x52,
                0, 0, 0x02, 0x04, 0x05, 0xb4,
            ],
            "byte for byte the segment the hand-written builder produced"
        );
    }

    #[test]
    fn test_odd_length_payload_checksums_verify() {
        // An odd trailing byte is padded with a zero for the checksum.
        let s = seg("[fd00::2]:1", "[fd00::1]:2", &[], b"odd");
        assert_eq!(parse(&build(&s, 0)).unwrap().payload, b"odd");
        let s = seg("10.0.0.2:1", "10.0.0.1:2", &[], b"odd");
        assert_eq!(parse(&build(&s, 0)).unwrap().payload, b"odd");
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
        assert_eq!(&packet[4..8], &[0, 7, 0x40, 0], "id 7, DF");
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
    fn test_both_zeros_of_ones_complement_verify() {
        assert!(same_checksum(0, 0xffff));
        assert!(same_checksum(0xffff, 0));
        assert!(same_checksum(0x1234, 0x1234));
        assert!(!same_checksum(0x1234, 0x1235));
        assert!(!same_checksum(0, 1));
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
