//! toa's module-free mode: BPF programs that do toa.ko's job on kernels >= 5.10,
//! and the loader that attaches them (the capture path, see [`Capture`], and
//! the getpeername programs at the cgroup v2 root) and pins them under
//! `/sys/fs/bpf/toa/` so that they outlive the process that loaded them.
//!
//! ```no_run
//! let settings = toa_bpf::Settings::parse("10.0.0.0/8", 0xf, "80,443").unwrap();
//! toa_bpf::load(&settings, toa_bpf::CaptureChoice::Auto).unwrap(); // again with other settings: updated in place
//! let status = toa_bpf::status().unwrap();
//! toa_bpf::unload().unwrap();
//! ```

mod capture;
mod counters;
mod link;
mod loader;
mod lock;
mod maps;
mod settings;
mod system;
#[cfg(test)]
mod testing;

pub use capture::{Capture, CaptureChoice};
pub use counters::COUNTERS;
pub use loader::{load, pinned, status, unload, Loaded, Status, PIN_DIR};
pub use settings::{Cidr, Settings, ALL_FORMATS};
pub use system::is_private_cgroup2;

/// The compiled BPF object (built from bpf/toa.bpf.c by build.rs).
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/toa.bpf.o"));
