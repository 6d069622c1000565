//! Which way toa is active on this machine: toa.ko, the eBPF mode, or
//! nothing. `status`, `stats` and `selftest` ask this module and nothing
//! else which mode is active.

use anyhow::Result;

use crate::bpf::{self, Active};
use crate::host::Host;
use crate::kmod::{self, Loaded};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// toa.ko is loaded.
    Kmod(Loaded),
    /// The eBPF programs are attached (pinned under /sys/fs/bpf/toa).
    Bpf(Active),
    /// Nothing rewrites addresses: applications see the proxy.
    None,
}

impl Mode {
    /// toa.ko first: `toa bpf load` refuses while it is loaded, so the two
    /// are together only when toa.ko was loaded afterwards, and then its
    /// answers are the ones applications get first.
    pub fn detect(host: &Host) -> Result<Mode> {
        if let Some(loaded) = kmod::loaded(host)? {
            return Ok(Mode::Kmod(loaded));
        }
        if let Some(active) = bpf::detect(host)? {
            return Ok(Mode::Bpf(active));
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
            Mode::Bpf(a) => format!(
                "eBPF (toa {}, programs attached at {}, pinned under {})",
                env!("CARGO_PKG_VERSION"),
                match &a.scoped_to {
                    Some(c) => format!("the cgroup {} only", c.display()),
                    None => "the cgroup v2 root".into(),
                },
                toa_bpf::PIN_DIR
            ),
            Mode::None => "none: neither toa.ko nor the eBPF mode is active, applications see the \
                 proxy's address"
                .into(),
        }
    }
}
