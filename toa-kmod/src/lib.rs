//! The logic of toa.ko, free of kernel headers so it runs in host unit tests.
//!
//! * [`option`]: finds the TOA option among a TCP header's options.
//! * [`peer`]: what `accept()`/`getpeername()` return for each listener/client family pair.
//! * [`trust`]: the `trusted_proxies` list: parsing and matching handshake sources.
//! * [`ffi`]: the C ABI the kbuild glue calls (see `kbuild/toa_core.h`).
//!
//! Built for the kernel as a `no_std` staticlib with `panic = "abort"`. Nothing here
//! may panic: bytes are reached through `get()`, arithmetic is checked, and the build
//! audit rejects an object that still references a panic routine.

#![cfg_attr(not(test), no_std)]
// The kernel object must not call out to memcpy/memcmp: the C side stays the only
// place that links against kernel symbols, so the object has no undefined symbols.
#![no_builtins]

pub mod ffi;
pub mod option;
pub mod peer;
pub mod trust;

/// The object must never reach this: the audit fails a build whose object still
/// names a panic routine. It exists because `no_std` staticlibs must provide one.
#[cfg(all(not(test), target_os = "none"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
