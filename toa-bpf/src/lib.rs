//! toa's module-free mode: BPF programs that do toa.ko's job on kernels >= 5.10,
//! and the loader that attaches them (the capture path, see [`Capture`], and
//! the getpeername programs at the cgroup v2 root or one cgroup, see
//! [`CgroupChoice`]) and pins them under
//! `/sys/fs/bpf/toa/` so that they outlive the process that loaded them.
//!
//! ```no_run
//! let settings = toa_bpf::Settings::parse("10.0.0.0/8", 0xf, "80,443").unwrap();
//! let everywhere = toa_bpf::CgroupChoice::Root; // or one cgroup: CgroupChoice::parse("system.slice/nginx.service")
//! toa_bpf::load(&settings, toa_bpf::CaptureChoice::Auto, &everywhere).unwrap(); // again with other settings: updated in place
//! let status = toa_bpf::status().unwrap();
//! toa_bpf::unload().unwrap();
//! ```

mod capture;
mod counters;
mod identity;
mod layout_checks;
mod link;
mod loader;
mod lock;
mod maps;
mod scope;
mod settings;
mod system;
#[cfg(test)]
mod testing;

pub use capture::{Capture, CaptureChoice};
pub use counters::COUNTERS;
pub use identity::Identity;
pub use loader::{embedded, load, pinned, status, unload, Loaded, Status, PIN_DIR};
pub use scope::CgroupChoice;
pub use settings::{Cidr, Settings, ALL_FORMATS};
pub use system::{is_private_cgroup2, use_cgroup2_root};

/// The compiled BPF object (built from bpf/toa.bpf.c by build.rs).
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/toa.bpf.o"));
