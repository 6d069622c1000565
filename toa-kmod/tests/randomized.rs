//! Randomized tests over arbitrary bytes: the option walker and the address
//! policy must never panic, must agree with an independent reference walker,
//! and must never write outside what they report.

use proptest::prelude::*;
use toa_kmod::option::{scan, ClientAddr, Format, Formats, Scan};
use toa_kmod::peer::{rewrite, Endpoint, Verdict, AF_INET, AF_INET6};

#[path = "../fuzz/src/check.rs"]
#[allow(dead_code)]
mod check;

/// The fuzz target's index-first walker, to cross-check `scan`.
fn reference(area: &[u8], formats: u32) -> Option<(u8, u8, Vec<u8>)> {
    match check::reference_scan(area, formats) {
        check::Reference::Toa { kind, payload } => {
            Some((kind, payload.len() as u8 + 2, payload.to_vec()))
        }
        _ => None,
    }
}

fn option_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Bias towards the interesting kinds so TOA shapes appear often.
    let byte = prop_oneof![
        Just(0u8),
        Just(1u8),
        Just(2u8),
        Just(8u8),
        Just(20u8),
        Just(200u8),
        Just(253u8),
        Just(254u8),
        any::<u8>()
    ];
    prop::collection::vec(byte, 0..48)
}

/// Valid option areas: a shuffle of ordinary options with one TOA somewhere.
fn valid_area() -> impl Strategy<Value = (Vec<u8>, Format, u16, Vec<u8>)> {
    let toa = (
        prop::sample::select(Format::ALL.to_vec()),
        any::<u16>(),
        any::<[u8; 16]>(),
    );
    let filler = prop::collection::vec(
        prop_oneof![
            Just(vec![1u8]),
            Just(vec![2, 4, 5, 0xb4]),
            Just(vec![4, 2]),
            Just(vec![3, 3, 7]),
            Just(vec![254, 4, 0xf9, 0x89]),
        ],
        0..4,
    );
    (toa, filler, any::<prop::sample::Index>()).prop_filter_map(
        "fits in 40 bytes",
        |((format, port, addr), filler, at)| {
            let mut toa = vec![format.kind(), format.len()];
            toa.extend_from_slice(&port.to_be_bytes());
            toa.extend_from_slice(&addr[..format.len() as usize - 4]);
            let payload = toa[2..].to_vec();
            let at = at.index(filler.len() + 1);
            let mut area = Vec::new();
            for (i, f) in filler.iter().enumerate() {
                if i == at {
                    area.extend_from_slice(&toa);
                }
                area.extend_from_slice(f);
            }
            if at == filler.len() {
                area.extend_from_slice(&toa);
            }
            (area.len() <= 40).then_some((area, format, port, payload))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn scan_agrees_with_reference(area in option_bytes(), formats in 0u32..16) {
        let got = scan(&area, Formats(formats));
        match reference(&area, formats) {
            Some((kind, len, payload)) => {
                let Scan::Found(toa) = got else { panic!("reference found {kind}/{len}, scan said {got:?}") };
                prop_assert_eq!(toa.format.kind(), kind);
                prop_assert_eq!(toa.format.len(), len);
                prop_assert_eq!(toa.port.to_be_bytes(), [payload[0], payload[1]]);
                match toa.addr {
                    ClientAddr::V4(a) => prop_assert_eq!(&a[..], &payload[2..]),
                    ClientAddr::V6(a) => prop_assert_eq!(&a[..], &payload[2..]),
                }
            }
            None => prop_assert!(!matches!(got, Scan::Found(_)), "scan found {:?} where the reference found nothing", got),
        }
    }

    #[test]
    fn scan_finds_the_toa_among_valid_options((area, format, port, payload) in valid_area()) {
        let Scan::Found(toa) = scan(&area, Formats::ALL) else { panic!("no TOA in {area:?}") };
        prop_assert_eq!(toa.format, format);
        prop_assert_eq!(toa.port, port);
        let addr: &[u8] = match &toa.addr { ClientAddr::V4(a) => a, ClientAddr::V6(a) => a };
        prop_assert_eq!(addr, &payload[2..]);
    }

    #[test]
    fn rewrite_never_writes_past_its_answer(
        buf in prop::collection::vec(any::<u8>(), 0..64),
        len in 0usize..70,
        family in prop_oneof![Just(AF_INET), Just(AF_INET6), any::<u16>()],
        client_v6 in any::<bool>(),
        client in any::<[u8; 16]>(),
        port in any::<u16>(),
        answer_family in prop_oneof![Just(Some(AF_INET)), Just(Some(AF_INET6)), Just(None)],
    ) {
        // Half the buffers start like a real answer so rewrites happen, not only refusals.
        let mut buf = buf;
        if let (Some(f), Some(head)) = (answer_family, buf.get_mut(..2)) {
            head.copy_from_slice(&f.to_ne_bytes());
        }
        let mut work = buf.clone();
        let proxy = Endpoint::from_sockaddr(buf.get(..len).unwrap_or(&[]))
            .unwrap_or(Endpoint::new(1, ClientAddr::V4([10, 0, 0, 2])));
        let client = if client_v6 {
            Endpoint::new(port, ClientAddr::V6(client))
        } else {
            Endpoint::new(port, ClientAddr::V4([client[0], client[1], client[2], client[3]]))
        };
        match rewrite(family, &mut work, len, &proxy, &client) {
            Verdict::Mismatch => prop_assert_eq!(&work, &buf),
            Verdict::Rewritten(n) => {
                prop_assert!(n == 16 || n == 28);
                prop_assert!(n <= buf.len());
                prop_assert_eq!(&work[n..], &buf[n..]);
            }
        }
    }
}

mod trusted {
    use proptest::prelude::*;
    use toa_kmod::option::ClientAddr;
    use toa_kmod::peer::Endpoint;
    use toa_kmod::trust::{contains, parse_list, Cidr};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parse_never_panics(text in "[0-9a-fA-F:./, \\n]{0,80}") {
            let mut out = [Cidr::default(); 4];
            if let Ok(n) = parse_list(text.as_bytes(), &mut out) {
                prop_assert!(n <= 4);
            }
        }

        #[test]
        fn v4_networks_round_trip(addr in any::<[u8; 4]>(), prefix in 0u8..=32, probe in any::<[u8; 4]>()) {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let net = u32::from_be_bytes(addr) & mask;
            let text = format!("{}/{prefix}", std::net::Ipv4Addr::from(net));
            let mut out = [Cidr::default(); 1];
            prop_assert_eq!(parse_list(text.as_bytes(), &mut out), Ok(1));
            let inside = u32::from_be_bytes(probe) & mask == net;
            prop_assert_eq!(contains(&out, &Endpoint::new(1, ClientAddr::V4(probe))), inside);
        }

        #[test]
        fn v6_networks_round_trip(addr in any::<[u8; 16]>(), prefix in 0u8..=128, probe in any::<[u8; 16]>()) {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            let net = u128::from_be_bytes(addr) & mask;
            let text = format!("{}/{prefix}", std::net::Ipv6Addr::from(net));
            let mut out = [Cidr::default(); 1];
            // std may print an IPv4-embedded tail (::ffff:1.2.3.4), which the list refuses on purpose.
            prop_assume!(!text.contains('.'));
            prop_assert_eq!(parse_list(text.as_bytes(), &mut out), Ok(1));
            let inside = u128::from_be_bytes(probe) & mask == net;
            let probe_ep = Endpoint::new(1, ClientAddr::V6(probe));
            // Mapped IPv4 probes are folded to IPv4 by Endpoint and never match a v6 network.
            prop_assume!(matches!(probe_ep.addr, ClientAddr::V6(_)));
            prop_assert_eq!(contains(&out, &probe_ep), inside);
        }
    }
}
