//! toa-lab: proves toa.ko from inside a test VM.
//!
//! It plays both ends of a proxied connection: an L4 proxy that speaks TCP in
//! user space over a TUN device (so it controls the TOA option byte for
//! byte), and the origin application that asks the kernel who its peer is.

mod bench;
mod cgroup_noop;
mod chaos;
mod cli;
mod error;
mod kmsg;
mod lab;
mod malformed;
mod oracle;
mod origin;
mod output;
mod request;
mod rng;
mod scenarios;
mod serve;
mod stats;
mod stress;

// The simulator itself lives in the toa-sim library (shared with `toa
// selftest`); its modules keep their names here.
use toa_sim::{packet, sockaddr, socket, system, tcp_client, toa_option, trust, tun};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::main(&args));
}
