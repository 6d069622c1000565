//! What one fuzz input must satisfy, shared by the libFuzzer target and the
//! regression test in `toa-kmod/tests/fuzz_regressions.rs`.
//!
//! The first byte picks the entry point of the C ABI (`kbuild/toa_core.h`),
//! the rest is its input, reached only through the raw-pointer calls the
//! kernel glue makes. A panic, an out-of-bounds access (caught by the
//! sanitizer-coverage build's debug assertions and by guard bytes around
//! every buffer), or an answer the independent rules below disagree with is
//! a finding: libFuzzer keeps the input, and it becomes a regression file.

use toa_kmod::ffi::{
    toa_rewrite_peer, toa_scan_options, toa_trusted_match, toa_trusted_parse, ToaEndpoint,
    TOA_MISMATCH, TOA_SCAN_FOUND, TOA_SCAN_MALFORMED, TOA_SCAN_NONE,
};
use toa_kmod::trust::Cidr;

/// Bytes around every buffer handed to the ABI; they must survive the call.
const GUARD: u8 = 0xa5;
const GUARD_LEN: usize = 32;

pub fn one(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => scan(rest),
        1 => rewrite(rest),
        _ => trusted(rest),
    }
}

/// `rest` = formats byte, then the option area.
fn scan(rest: &[u8]) {
    let Some((&formats, area)) = rest.split_first() else {
        return;
    };
    let formats = u32::from(formats & 0x1f);
    let mut out = ToaEndpoint::default();
    // SAFETY: area is readable for its length; out is a valid ToaEndpoint.
    let got = unsafe { toa_scan_options(area.as_ptr(), area.len(), formats, &mut out) };
    match reference_scan(area, formats) {
        Reference::Toa { kind, payload } => {
            assert_eq!(
                got, TOA_SCAN_FOUND,
                "reference found kind {kind} in {area:?}"
            );
            assert_eq!(out.kind, kind);
            assert_eq!(out.port, [payload[0], payload[1]]);
            let addr = &payload[2..];
            assert_eq!(usize::from(out.family), if addr.len() == 4 { 4 } else { 6 });
            assert_eq!(&out.addr[..addr.len()], addr);
        }
        Reference::Nothing => assert_eq!(got, TOA_SCAN_NONE, "{area:?}"),
        Reference::Malformed => assert!(
            (TOA_SCAN_MALFORMED..TOA_SCAN_MALFORMED + 4).contains(&got),
            "malformed {area:?} answered {got}"
        ),
    }
}

pub enum Reference<'a> {
    Toa { kind: u8, payload: &'a [u8] },
    Nothing,
    Malformed,
}

/// DESIGN's wire rules, walked by index: the first enabled TOA wins, EOL
/// stops, a length of 0/1, an option past the end or more than 40 bytes make
/// the whole area malformed.
pub fn reference_scan(area: &[u8], formats: u32) -> Reference<'_> {
    if area.len() > 40 {
        return Reference::Malformed;
    }
    let mut found = None;
    let mut i = 0;
    while i < area.len() {
        match area[i] {
            0 => break,
            1 => i += 1,
            kind => {
                if i + 1 >= area.len() {
                    return Reference::Malformed;
                }
                let len = usize::from(area[i + 1]);
                if len < 2 || i + len > area.len() {
                    return Reference::Malformed;
                }
                let bit = match (kind, len) {
                    (254, 8) => 1,
                    (254, 20) => 2,
                    (253, 20) => 4,
                    (200, 8) => 8,
                    _ => 0,
                };
                if formats & bit != 0 && found.is_none() {
                    found = Some(Reference::Toa {
                        kind,
                        payload: &area[i + 2..i + len],
                    });
                }
                i += len;
            }
        }
    }
    found.unwrap_or(Reference::Nothing)
}

fn endpoint(bytes: &[u8]) -> ToaEndpoint {
    let mut e = ToaEndpoint::default();
    let mut it = bytes.iter().copied();
    // Mostly the two real families; sometimes anything.
    e.family = match it.next().unwrap_or(0) % 5 {
        0 | 1 => 4,
        2 | 3 => 6,
        _ => bytes.get(1).copied().unwrap_or(0),
    };
    e.kind = it.next().unwrap_or(0);
    e.port = [it.next().unwrap_or(0), it.next().unwrap_or(0)];
    for (d, s) in e.addr.iter_mut().zip(it) {
        *d = s;
    }
    e
}

/// `rest` = family selector, len, cap, 20 bytes client, 20 bytes proxy, buffer.
fn rewrite(rest: &[u8]) {
    if rest.len() < 43 {
        return;
    }
    let family: u16 = match rest[0] % 3 {
        0 => 2,
        1 => 10,
        _ => u16::from(rest[0]),
    };
    let len = i32::from(rest[1] as i8);
    let cap = usize::from(rest[2] % 64);
    let client = endpoint(&rest[3..23]);
    let mut proxy = endpoint(&rest[23..43]);
    let mut buf: Vec<u8> = rest[43..]
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(cap)
        .collect();
    // Make the answer name the proxy often, so rewrites happen, not only refusals.
    if rest[2] & 0x80 != 0 && proxy.family == 4 && cap >= 16 {
        proxy.addr[4..].fill(0);
        buf[..2].copy_from_slice(&2u16.to_ne_bytes());
        buf[2..4].copy_from_slice(&proxy.port);
        buf[4..8].copy_from_slice(&proxy.addr[..4]);
    }
    let mut guarded = vec![GUARD; GUARD_LEN];
    guarded.extend_from_slice(&buf);
    guarded.extend(std::iter::repeat_n(GUARD, GUARD_LEN));
    let before = guarded.clone();
    // SAFETY: the buffer is writable for cap bytes; both endpoints are valid.
    let got = unsafe {
        toa_rewrite_peer(
            family,
            guarded[GUARD_LEN..].as_mut_ptr(),
            len,
            cap,
            &client,
            &proxy,
        )
    };
    assert!(
        guarded[..GUARD_LEN].iter().all(|&b| b == GUARD),
        "wrote before the buffer"
    );
    assert!(
        guarded[GUARD_LEN + cap..].iter().all(|&b| b == GUARD),
        "wrote past cap {cap}"
    );
    if got == TOA_MISMATCH {
        assert_eq!(guarded, before, "a refused rewrite changed the buffer");
    } else {
        assert!(got == 16 || got == 28, "answer length {got}");
        let n = got as usize;
        assert!(n <= cap, "answer of {n} bytes in a buffer of {cap}");
        assert!(len >= 0, "rewrote an answer of negative length {len}");
        assert_eq!(guarded[GUARD_LEN + n..], before[GUARD_LEN + n..]);
    }
}

/// `rest` = cap, 20 bytes of a source endpoint, then the list text.
fn trusted(rest: &[u8]) {
    if rest.len() < 21 {
        return;
    }
    let cap = usize::from(rest[0] % 9);
    let source = endpoint(&rest[1..21]);
    let text = &rest[21..];
    let sentinel = Cidr::default();
    let mut out = vec![sentinel; cap + 2];
    let mut err_offset = usize::MAX;
    // SAFETY: text readable, out writable for cap entries (two spare after).
    let n = unsafe {
        toa_trusted_parse(
            text.as_ptr(),
            text.len(),
            out[1..].as_mut_ptr(),
            cap,
            &mut err_offset,
        )
    };
    assert_eq!(out[0], sentinel, "wrote before the list");
    assert_eq!(out[cap + 1], sentinel, "wrote past cap {cap}");
    if n < 0 {
        assert!(
            err_offset <= text.len(),
            "error offset {err_offset} past {}",
            text.len()
        );
        return;
    }
    let n = n as usize;
    assert!(n <= cap, "{n} networks in room for {cap}");
    // SAFETY: the first n entries were written by the parser; source is valid.
    let matched = unsafe { toa_trusted_match(out[1..].as_ptr(), n as i32, &source) };
    if n == 0 {
        assert!(!matched, "an empty list matched");
    }
}
