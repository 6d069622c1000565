//! Which way toa is active on this machine.
//!
//! Today that is toa.ko or nothing. The eBPF mode adds its own variant and
//! detector here (its pinned links under /sys/fs/bpf); `status`, `stats`
//! and `selftest` ask this module and nothing else which mode is active.

use anyhow::Result;

use crate::host::Host;
use crate::kmod::{self, Loaded};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// toa.ko is loaded.
    Kmod(Loaded),
    /// Nothing rewrites addresses: applications see the proxy.
    None,
}

impl Mode {
    pub fn detect(host: &Host) -> Result<Mode> {
        if let Some(loaded) = kmod::loaded(host)? {
            return Ok(Mode::Kmod(loaded));
        }
        Ok(Mode::None)
    }

    /// One line: what is active.
    pub fn describe(&self) -> String {
        match self {
            Mode::Kmod(l) => format!(
                "toa.ko {} (kernel module, srcversion {})",
                l.version.as_deref().unwrap_or("(no version)"),
                l.srcversion.as_deref().unwrap_or("?")
            ),
            Mode::None => "none: toa.ko is not loaded, applications see the proxy's address".into(),
        }
    }
}
