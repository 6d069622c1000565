//! The L4-proxy simulator, shared by the VM lab (`toa-lab`) and the
//! operator's `toa selftest`.
//!
//! A proxy is played in user space over a TUN device, so the option bytes on
//! the packet that completes each handshake are fully under control; the
//! origin's side is the running kernel, asked through ordinary sockets what
//! its peer is.

pub mod error;
pub mod packet;
pub mod sockaddr;
pub mod socket;
pub mod system;
pub mod tcp_client;
pub mod toa_option;
pub mod toa_stats;
pub mod trust;
pub mod tun;
