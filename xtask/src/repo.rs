//! Where kernels come from: distro repositories (apt and RPM metadata, the
//! SUSE Customer Center), verified downloads into the cache, `.deb` reading,
//! and the real-metadata fixtures tests read offline.

pub mod deb;
pub mod debian;
pub mod decompress;
pub mod download;
pub mod entry;
pub mod fixtures;
pub mod kernels;
pub mod lab_kernel;
pub mod rpm;
pub mod rpm_payload;
pub mod scc;
#[cfg(test)]
mod scc_discovery_tests;
