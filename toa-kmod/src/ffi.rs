//! The C ABI called by the kbuild glue. Mirrors `kbuild/toa_core.h`; keep them in step.
//!
//! Pointers come from the kernel glue and are trusted to be valid for the lengths
//! passed with them; everything behind them is checked here.

use crate::option::{self, ClientAddr, Formats, Scan};
use crate::peer::{self, Endpoint, Verdict};
use crate::trust::{self, Cidr, ParseError};

/// An address and port as the glue stores it per socket (`struct toa_endpoint`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToaEndpoint {
    /// 4 or 6.
    pub family: u8,
    /// Option kind the address came from (0 for the proxy's own endpoint).
    pub kind: u8,
    /// Port, network order.
    pub port: [u8; 2],
    /// IPv4 in the first four bytes, or IPv6.
    pub addr: [u8; 16],
}

pub const TOA_SCAN_FOUND: i32 = 0;
pub const TOA_SCAN_NONE: i32 = 1;
pub const TOA_SCAN_MALFORMED: i32 = 2;
pub const TOA_MISMATCH: i32 = -1;

impl ToaEndpoint {
    fn from_endpoint(e: &Endpoint, kind: u8) -> ToaEndpoint {
        let mut out = ToaEndpoint {
            family: 4,
            kind,
            port: e.port.to_be_bytes(),
            addr: [0; 16],
        };
        match e.addr {
            ClientAddr::V4(a) => {
                for (d, s) in out.addr.iter_mut().zip(a) {
                    *d = s;
                }
            }
            ClientAddr::V6(a) => {
                out.family = 6;
                out.addr = a;
            }
        }
        out
    }

    fn to_endpoint(self) -> Option<Endpoint> {
        let addr = match self.family {
            4 => ClientAddr::V4([self.addr[0], self.addr[1], self.addr[2], self.addr[3]]),
            6 => ClientAddr::V6(self.addr),
            _ => return None,
        };
        Some(Endpoint::new(u16::from_be_bytes(self.port), addr))
    }
}

/// Scans a TCP option area for an enabled TOA format.
///
/// Returns `TOA_SCAN_FOUND` (and fills `*out`), `TOA_SCAN_NONE`, or
/// `TOA_SCAN_MALFORMED` (+ a reason: 0 missing length, 1 impossible length,
/// 2 truncated, 3 oversized).
///
/// # Safety
/// `opts` must be readable for `len` bytes (or `len` 0); `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn toa_scan_options(
    opts: *const u8,
    len: usize,
    formats: u32,
    out: *mut ToaEndpoint,
) -> i32 {
    if out.is_null() || (opts.is_null() && len != 0) {
        return TOA_SCAN_NONE;
    }
    let area = if len == 0 {
        &[][..]
    } else {
        core::slice::from_raw_parts(opts, len)
    };
    match option::scan(area, Formats(formats)) {
        Scan::Found(toa) => {
            let e = Endpoint {
                port: toa.port,
                addr: toa.addr,
            };
            *out = ToaEndpoint::from_endpoint(&e, toa.format.kind());
            TOA_SCAN_FOUND
        }
        Scan::NotFound => TOA_SCAN_NONE,
        Scan::Malformed(why) => TOA_SCAN_MALFORMED + why as i32,
    }
}

/// Rewrites the kernel's getname answer (`len` bytes in a buffer of `cap` bytes)
/// into the client's address when it names the recorded `proxy`.
///
/// Returns the new length, or `TOA_MISMATCH` with the buffer untouched.
///
/// # Safety
/// `sa` must be writable for `cap` bytes; `client` and `proxy` readable.
#[no_mangle]
pub unsafe extern "C" fn toa_rewrite_peer(
    socket_family: u16,
    sa: *mut u8,
    len: i32,
    cap: usize,
    client: *const ToaEndpoint,
    proxy: *const ToaEndpoint,
) -> i32 {
    if sa.is_null() || client.is_null() || proxy.is_null() || len < 0 {
        return TOA_MISMATCH;
    }
    let (Some(client), Some(proxy)) = ((*client).to_endpoint(), (*proxy).to_endpoint()) else {
        return TOA_MISMATCH;
    };
    let buf = core::slice::from_raw_parts_mut(sa, cap);
    match peer::rewrite(socket_family, buf, len as usize, &proxy, &client) {
        Verdict::Rewritten(n) => n as i32,
        Verdict::Mismatch => TOA_MISMATCH,
    }
}

pub const TOA_TRUST_BAD_ADDRESS: i32 = -1;
pub const TOA_TRUST_BAD_PREFIX: i32 = -2;
pub const TOA_TRUST_HOST_BITS: i32 = -3;
pub const TOA_TRUST_TOO_MANY: i32 = -4;
pub const TOA_TRUST_EMPTY: i32 = -5;

/// Parses a `trusted_proxies` value into `out` (room for `cap` networks).
///
/// Returns how many networks were written (0: trust every source), or a
/// negative `TOA_TRUST_*` code with `*err_offset` at the entry in fault.
///
/// # Safety
/// `text` readable for `len` bytes; `out` writable for `cap` entries; `err_offset` writable.
#[no_mangle]
pub unsafe extern "C" fn toa_trusted_parse(
    text: *const u8,
    len: usize,
    out: *mut Cidr,
    cap: usize,
    err_offset: *mut usize,
) -> i32 {
    if (text.is_null() && len != 0) || out.is_null() || err_offset.is_null() {
        return TOA_TRUST_BAD_ADDRESS;
    }
    let text = if len == 0 {
        &[][..]
    } else {
        core::slice::from_raw_parts(text, len)
    };
    let out = core::slice::from_raw_parts_mut(out, cap);
    match trust::parse_list(text, out) {
        Ok(n) => i32::try_from(n).unwrap_or(TOA_TRUST_TOO_MANY),
        Err(e) => {
            *err_offset = e.offset();
            match e {
                ParseError::BadAddress(_) => TOA_TRUST_BAD_ADDRESS,
                ParseError::BadPrefix(_) => TOA_TRUST_BAD_PREFIX,
                ParseError::HostBitsSet(_) => TOA_TRUST_HOST_BITS,
                ParseError::TooMany(_) => TOA_TRUST_TOO_MANY,
                ParseError::Empty(_) => TOA_TRUST_EMPTY,
            }
        }
    }
}

/// Whether `source` (a handshake packet's source) is in the first `n` of `cidrs`.
///
/// # Safety
/// `cidrs` readable for `n` entries; `source` readable.
#[no_mangle]
pub unsafe extern "C" fn toa_trusted_match(
    cidrs: *const Cidr,
    n: i32,
    source: *const ToaEndpoint,
) -> bool {
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    if cidrs.is_null() || source.is_null() {
        return false;
    }
    let Some(source) = (*source).to_endpoint() else {
        return false;
    };
    trust::contains(core::slice::from_raw_parts(cidrs, n), &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_layout_matches_the_c_header() {
        // struct toa_endpoint in kbuild/toa_core.h; the C side checks 20 too.
        assert_eq!(core::mem::size_of::<ToaEndpoint>(), 20);
        assert_eq!(core::mem::align_of::<ToaEndpoint>(), 1);
    }

    #[test]
    fn test_trust_through_ffi() {
        assert_eq!(core::mem::size_of::<Cidr>(), 18);
        let mut cidrs = [Cidr::default(); 4];
        let mut off = 0usize;
        let text = b"10.0.0.0/8, fd00::2";
        let n = unsafe {
            toa_trusted_parse(text.as_ptr(), text.len(), cidrs.as_mut_ptr(), 4, &mut off)
        };
        assert_eq!(n, 2);
        let proxy = ToaEndpoint {
            family: 4,
            kind: 0,
            port: [0, 80],
            addr: [10, 9, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let direct = ToaEndpoint {
            addr: [11, 9, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..proxy
        };
        assert!(unsafe { toa_trusted_match(cidrs.as_ptr(), n, &proxy) });
        assert!(!unsafe { toa_trusted_match(cidrs.as_ptr(), n, &direct) });
        let bad = b"10.0.0.0/8,10.0.0.1/8";
        let n =
            unsafe { toa_trusted_parse(bad.as_ptr(), bad.len(), cidrs.as_mut_ptr(), 4, &mut off) };
        assert_eq!((n, off), (TOA_TRUST_HOST_BITS, 11));
    }

    #[test]
    fn test_scan_through_ffi() {
        let area = [1u8, 1, 200, 8, 0x9c, 0x45, 203, 0, 113, 5];
        let mut out = ToaEndpoint::default();
        let rc = unsafe { toa_scan_options(area.as_ptr(), area.len(), 0xf, &mut out) };
        assert_eq!(rc, TOA_SCAN_FOUND);
        assert_eq!(out.family, 4);
        assert_eq!(out.kind, 200);
        assert_eq!(out.port, 40005u16.to_be_bytes());
        assert_eq!(&out.addr[..4], &[203, 0, 113, 5]);
        let rc = unsafe { toa_scan_options(area.as_ptr(), 3, 0xf, &mut out) };
        assert_eq!(rc, TOA_SCAN_MALFORMED);
        let rc = unsafe { toa_scan_options(core::ptr::null(), 0, 0xf, &mut out) };
        assert_eq!(rc, TOA_SCAN_NONE);
    }

    #[test]
    fn test_rewrite_through_ffi() {
        let mut sa = [0u8; 128];
        sa[..2].copy_from_slice(&peer::AF_INET.to_ne_bytes());
        sa[2..4].copy_from_slice(&5000u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[10, 0, 0, 2]);
        let proxy = ToaEndpoint {
            family: 4,
            kind: 0,
            port: 5000u16.to_be_bytes(),
            addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut client = ToaEndpoint {
            family: 6,
            kind: 254,
            port: 40002u16.to_be_bytes(),
            addr: [0; 16],
        };
        client.addr[0] = 0x20;
        client.addr[15] = 7;
        let n = unsafe {
            toa_rewrite_peer(
                peer::AF_INET,
                sa.as_mut_ptr(),
                16,
                sa.len(),
                &client,
                &proxy,
            )
        };
        assert_eq!(n, 28);
        assert_eq!(u16::from_ne_bytes([sa[0], sa[1]]), peer::AF_INET6);
        // Not enough room for a sockaddr_in6: refused, untouched.
        let mut small = [0u8; 16];
        small[..2].copy_from_slice(&peer::AF_INET.to_ne_bytes());
        small[2..4].copy_from_slice(&5000u16.to_be_bytes());
        small[4..8].copy_from_slice(&[10, 0, 0, 2]);
        let n =
            unsafe { toa_rewrite_peer(peer::AF_INET, small.as_mut_ptr(), 16, 16, &client, &proxy) };
        assert_eq!(n, TOA_MISMATCH);
        let bad = ToaEndpoint {
            family: 9,
            ..client
        };
        let n = unsafe { toa_rewrite_peer(peer::AF_INET, sa.as_mut_ptr(), 16, 128, &bad, &proxy) };
        assert_eq!(n, TOA_MISMATCH);
    }
}
